"""Scanner artefacts (issue 9, section 2): Gibbs ringing, motion ghosts, wrap-around, parallel-imaging noise.

Each artefact is measured on a simple phantom through `acquire` (the same call the cohort uses), its neutral
setting must leave the pixels unchanged, and every draw is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from pipelines.synth import SynthParams, generate_cohort
from pipelines.synth.render import (
    NO_ARTEFACTS,
    Acquisition,
    Artefacts,
    _blur,
    acquire,
    blur_for_thickness,
    g_factor_map,
    sample_acquisition,
    sample_artefacts,
)

N = 128
SCALE = 1000.0  # stored value of signal 1.0


def _acq(art: Artefacts = NO_ARTEFACTS, sigma: float = 0.0, blur: float = 0.0) -> Acquisition:
    """A clean acquisition: no bias field, no blur, no noise unless asked, so only the artefact shows."""
    return Acquisition(blur=blur, bias=(0.0,) * 6, bias_strength=0.0, sigma=sigma, scale=SCALE, art=art)


def _run(img: np.ndarray, art: Artefacts, sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    return acquire(img, _acq(art, sigma), np.random.default_rng(seed)).astype(np.float64)


def _square(cy: int, cx: int, half: int, value: float = 1.0) -> np.ndarray:
    img = np.zeros((N, N), dtype=np.float32)
    img[cy - half : cy + half, cx - half : cx + half] = value
    return img


# --- neutral settings and determinism ---


def test_neutral_settings_leave_the_image_unchanged() -> None:
    """Neutral artefacts reproduce the pre-artefact acquisition (blur, bias, Rician noise) bit for bit."""
    rng = np.random.default_rng(3)
    img = rng.uniform(0.0, 1.0, (N, N)).astype(np.float32)
    acq = sample_acquisition(rng, blur=0.1, bias_strength=0.3, snr=20.0, voxel_mm3=1.7, scale=1500.0)
    explicit = Artefacts(phase_axis=1, kspace_fraction=1.0, ghost_amp=0.0, ghost_shift=17, wrap_px=0, g_max=1.4)
    got = acquire(img, replace(acq, art=explicit), np.random.default_rng(9))
    # The acquisition as it was before the artefacts existed.
    x = np.linspace(-1.0, 1.0, N, dtype=np.float32)[None, :]
    y = np.linspace(-1.0, 1.0, N, dtype=np.float32)[:, None]
    b = acq.bias
    log_b = (b[0] * x + b[1] * y + b[2] * x * y + b[3] * (x * x - 0.33) + b[4] * (y * y - 0.33)) + b[5] * (x - 1.0)
    sig = _blur(img, acq.blur) * np.exp(np.float32(acq.bias_strength) * log_b).astype(np.float32)
    noise = np.random.default_rng(9)
    n1 = noise.standard_normal(img.shape, dtype=np.float32) * np.float32(acq.sigma)
    n2 = noise.standard_normal(img.shape, dtype=np.float32) * np.float32(acq.sigma)
    ref = np.clip(np.rint(np.sqrt((sig + n1) ** 2 + n2 * n2) * np.float32(acq.scale)), 0, 4095).astype(np.uint16)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(acquire(img, acq, np.random.default_rng(9)), ref)


def test_neutral_scanner_settings_draw_no_artefacts() -> None:
    """The neutral value of each setting turns its artefact off even for a patient flagged to move or wrap."""
    art = sample_artefacts(
        np.random.default_rng(1),
        moves=True,
        wraps=True,
        phase_axis="col",
        gibbs=1.0,
        ghost_amplitude=0.0,
        wrap_mm=0.0,
        pi_factor=1.0,
        g_max=1.5,
        n_phase=N,
        ps=1.0,
    )
    assert (art.kspace_fraction, art.ghost_amp, art.ghost_shift, art.wrap_px) == (1.0, 0.0, 0, 0)
    assert g_factor_map((N, N), art) is None  # R = 1: no g-factor whatever the peak says
    img = np.random.default_rng(2).uniform(0.0, 1.0, (N, N)).astype(np.float32)
    np.testing.assert_array_equal(_run(img, art, 0.03, seed=6), _run(img, NO_ARTEFACTS, 0.03, seed=6))


def test_artefacts_deterministic_for_a_seed() -> None:
    kw = dict(phase_axis="row", gibbs=0.7, ghost_amplitude=0.08, wrap_mm=20.0, pi_factor=2.0, g_max=1.4, ps=0.9)
    a1 = sample_artefacts(np.random.default_rng(5), moves=True, wraps=True, n_phase=N, **kw)
    a2 = sample_artefacts(np.random.default_rng(5), moves=True, wraps=True, n_phase=N, **kw)
    assert a1 == a2 and a1.ghost_amp > 0 and a1.wrap_px > 0 and a1.phase_axis == 1
    img = _square(64, 64, 20, 0.8)
    np.testing.assert_array_equal(_run(img, a1, 0.02, seed=4), _run(img, a2, 0.02, seed=4))
    # Ghost spacing stays within 1/8-1/3 of the phase FOV, folded width within 0.4-1 x wrap_mm.
    for seed in range(20):
        a = sample_artefacts(np.random.default_rng(seed), moves=True, wraps=True, n_phase=N, **kw)
        assert N / 8 - 1 <= a.ghost_shift <= N / 3 + 1
        assert 0.4 * 20.0 / 0.9 - 1 <= a.wrap_px <= 20.0 / 0.9 + 1
        assert 0.04 <= a.ghost_amp <= 0.08


# --- Gibbs ringing ---


def _overshoot(img: np.ndarray, fraction: float) -> float:
    """Peak overshoot above the plateau next to a vertical step edge, as a fraction of the step."""
    out = _run(img, Artefacts(kspace_fraction=fraction))
    row = out[N // 2]
    return float(row[32:64].max() / SCALE - 1.0)  # the bright half starts at column 32; plateau is 1.0


def test_gibbs_ringing_grows_as_kspace_shrinks() -> None:
    img = np.zeros((N, N), dtype=np.float32)
    img[:, 32:96] = 1.0  # a sharp boundary like cord-CSF (vertical edges)
    shoots = [_overshoot(img, f) for f in (1.0, 0.9, 0.75, 0.6)]
    assert shoots[0] == 0.0
    assert shoots[0] < shoots[1] < shoots[2] <= shoots[3] + 0.01  # grows, then saturates near the Gibbs constant
    # Truncated sinc: ~9 % overshoot (the Gibbs constant) once the edge is sharp relative to the kept band.
    assert 0.03 < shoots[1] < 0.14 and 0.05 < shoots[3] < 0.14

    # Ringing reaches further from the edge as the kept fraction drops (the lobe spacing is 1/fraction px).
    def reach(f: float) -> int:
        row = _run(img, Artefacts(kspace_fraction=f))[N // 2, 32:64] / SCALE
        return int(np.flatnonzero(np.abs(row - 1.0) > 0.02).max())

    assert reach(0.6) > reach(0.9) > 0
    # The step itself stays where it was (no shift), and the image stays real (no ghost energy elsewhere).
    out = _run(img, Artefacts(kspace_fraction=0.7))
    assert abs(out[:, 40:88].mean() / SCALE - 1.0) < 0.02


# --- motion ghosts ---


@pytest.mark.parametrize("axis", [0, 1])
def test_motion_ghosts_appear_at_the_shift_along_the_phase_axis_only(axis: int) -> None:
    img = _square(64, 64, 6)
    shift, amp = 24, 0.1
    out = _run(img, Artefacts(phase_axis=axis, ghost_amp=amp, ghost_shift=shift, ghost_phase=0.4)) / SCALE
    centre = out[58:70, 58:70].mean()
    along = [np.roll(out, -s, axis=axis)[58:70, 58:70].mean() for s in (shift, -shift)]
    across = [np.roll(out, -s, axis=1 - axis)[58:70, 58:70].mean() for s in (shift, -shift)]
    assert centre > 0.95
    for g in along:
        assert g == pytest.approx(amp, rel=0.15)  # first-order ghost J1(2A) ~ A
    assert max(across) < 0.005
    # Second-order ghosts at 2x the shift are much weaker (J2).
    assert np.roll(out, -2 * shift, axis=axis)[58:70, 58:70].mean() < 0.2 * amp
    # Ghost energy grows with the amplitude setting.
    weak = _run(img, Artefacts(phase_axis=axis, ghost_amp=0.03, ghost_shift=shift)) / SCALE
    assert np.roll(weak, -shift, axis=axis)[58:70, 58:70].mean() < 0.5 * along[0]


# --- wrap-around ---


@pytest.mark.parametrize("axis", [0, 1])
def test_wrap_folds_an_edge_onto_the_opposite_edge(axis: int) -> None:
    img = np.zeros((N, N), dtype=np.float32)
    img[:5, 40:80] = 1.0  # tissue at the top edge
    img = img if axis == 0 else img.T.copy()
    out = _run(img, Artefacts(phase_axis=axis, wrap_px=12)) / SCALE
    base = _run(img, NO_ARTEFACTS) / SCALE
    o, b = (out, base) if axis == 0 else (out.T, base.T)
    # The mirrored strip lands on the last rows (coil taper: 1 at the edge), nothing on the rows between.
    assert o[N - 5 :, 40:80].mean() > 0.6 and b[N - 5 :, 40:80].max() == 0
    assert o[N - 1, 40:80].mean() == pytest.approx(1.0, abs=0.01)
    assert o[20 : N - 12].max() == 0
    assert np.array_equal(o[:5], b[:5])  # the source is not removed, only folded onto the other side
    # Along the other axis nothing wraps.
    other = _run(img, Artefacts(phase_axis=1 - axis, wrap_px=12)) / SCALE
    np.testing.assert_array_equal(other, base)


# --- parallel imaging g-factor noise ---


@pytest.mark.parametrize("axis", [0, 1])
def test_g_factor_noise_peaks_mid_fov_along_the_phase_axis(axis: int) -> None:
    n = 256
    img = np.full((n, n), 2.0, dtype=np.float32)  # high SNR: Rician ~ Gaussian
    sigma, g_max = 0.05, 1.4
    art = Artefacts(phase_axis=axis, pi_factor=2.0, g_max=g_max)
    out = acquire(img, _acq(art, sigma), np.random.default_rng(11)).astype(np.float64) / SCALE
    g = np.broadcast_to(g_factor_map((n, n), art), (n, n))
    prof_out = out.std(axis=1 - axis)  # noise SD per position along the phase axis
    prof_g = g.mean(axis=1 - axis) * sigma
    centre, edge = slice(n // 2 - 8, n // 2 + 8), np.r_[0:8, n - 8 : n]
    assert prof_out[centre].mean() / prof_out[edge].mean() == pytest.approx(g_max, rel=0.06)
    assert np.corrcoef(prof_out, prof_g)[0, 1] > 0.9
    # The readout axis sees no such structure.
    across = out.std(axis=axis)
    assert across[centre].mean() / across[edge].mean() == pytest.approx(1.0, abs=0.06)
    # Higher R widens the amplified lobe (more aliased partners).
    g3 = np.asarray(g_factor_map((n, n), replace(art, pi_factor=3.0))).ravel()
    assert g3.max() == pytest.approx(g_max, rel=1e-3) and g3.mean() > g.mean()


# --- slice thickness partial volume ---


def test_blur_scales_with_slice_thickness() -> None:
    assert blur_for_thickness(0.1, 3.0) == pytest.approx(0.1)
    assert blur_for_thickness(0.18, 3.5) == pytest.approx(0.21)
    assert blur_for_thickness(0.2, 6.0) == 0.25


# --- the cohort ---


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.dcm")}


def test_ci_cohort_generates_and_a_setting_changes_one_thing(tmp_path: Path) -> None:
    """Turning motion ghosts off changes only the movers' sagittal images: the other streams do not shift."""
    params = SynthParams()
    generate_cohort(params, "ci", tmp_path / "on")
    raw = params.model_dump()
    for site in raw["sites"].values():
        for sc in site["scanners"]:
            sc["motion_ghost_prob"] = 0.0
    generate_cohort(SynthParams.model_validate(raw), "ci", tmp_path / "off")
    on, off = _hashes(tmp_path / "on"), _hashes(tmp_path / "off")
    assert on.keys() == off.keys() and len(on) > 30
    changed = {k for k in on if on[k] != off[k]}
    assert changed, "no patient moved in the ci cohort with the shipped motion_ghost_prob"
    assert len(changed) < len(on) / 2
    assert not any("/SE004_" in k for k in changed)  # axial distractors carry no ghosts


def test_dicom_names_the_phase_axis_the_artefacts_ran_along(tmp_path: Path) -> None:
    """InPlanePhaseEncodingDirection (and AcquisitionMatrix) follow each scanner's `phase_axis`."""
    params = SynthParams()
    generate_cohort(params, "ci", tmp_path)
    axis_of = {sc.model: sc.phase_axis.upper() for site in params.sites.values() for sc in site.scanners}
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    sagittal = cohort[(cohort["is_distractor"] == 0) & (cohort["series_kind"] == "sag_t2")]
    seen = set()
    for row in sagittal.drop_duplicates("model").itertuples():
        ds = pydicom.dcmread(tmp_path / row.rel_path, stop_before_pixels=True)
        assert ds.InPlanePhaseEncodingDirection == axis_of[row.model]
        phase_count = ds.AcquisitionMatrix[3] if axis_of[row.model] == "ROW" else ds.AcquisitionMatrix[2]
        assert phase_count > 0
        seen.add(axis_of[row.model])
    assert seen  # the ci cohort holds at least one sagittal series
