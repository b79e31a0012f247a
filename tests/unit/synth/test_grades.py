"""Kang grades, look-alikes, anatomy variety and readers who disagree where people disagree (issue 9)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from pipelines.synth import SynthParams
from pipelines.synth.anatomy import Anatomy, protrusions, sample_anatomy
from pipelines.synth.calibration import disagreement_table, simulate_annotations
from pipelines.synth.cohort import iter_plans
from pipelines.synth.params import LOOKALIKE_NAMES
from pipelines.synth.render import SliceGeometry, canal_profile, level_boxes, render_sagittal, tissue_signal


@pytest.fixture(scope="module")
def params() -> SynthParams:
    return SynthParams()


@pytest.fixture(scope="module")
def demo_anatomy(params: SynthParams) -> list[Anatomy]:
    return [plan.anat for plan in iter_plans(params, "demo")]


def test_grade_and_lookalike_mix_follows_params(params: SynthParams, demo_anatomy: list[Anatomy]) -> None:
    a = params.anatomy
    grades = Counter(g for anat in demo_anatomy for g in anat.grades if g > 0)
    n = sum(grades.values())
    assert n > 150
    for grade, name in ((1, "mild"), (2, "moderate"), (3, "severe")):
        assert grades[grade] / n == pytest.approx(a.severity_probs[name], abs=0.08), grades
    normal = [(anat, k) for anat in demo_anatomy for k, g in enumerate(anat.grades) if g == 0]
    kinds = Counter(anat.lookalike[k] for anat, k in normal)
    for kind in LOOKALIKE_NAMES:
        assert kinds[kind] > 0, kind
        if kind != "wide_canal_bulge":
            assert kinds[kind] / len(normal) == pytest.approx(a.lookalike_probs[kind], abs=0.04), kinds
    # Look-alikes only where there is no compression; a big bulge without compression only in a wide canal.
    for anat in demo_anatomy:
        for k, look in enumerate(anat.lookalike):
            assert look == "none" or anat.grades[k] == 0
            assert look != "wide_canal_bulge" or anat.canal_class == "wide"
    assert {anat.canal_class for anat in demo_anatomy} == {"narrow", "normal", "wide"}
    assert {anat.curvature for anat in demo_anatomy} == {"lordosis", "straight", "kyphosis"}
    kyphotic = [anat.lordosis for anat in demo_anatomy if anat.curvature == "kyphosis"]
    assert np.mean(kyphotic) < 0


def test_older_patients_have_more_degenerated_discs(params: SynthParams) -> None:
    young = [sample_anatomy(np.random.default_rng([5, i]), params.anatomy, 0.0, 32) for i in range(60)]
    old = [sample_anatomy(np.random.default_rng([5, i]), params.anatomy, 0.0, 80) for i in range(60)]
    assert np.mean([a.degeneration.mean() for a in old]) > np.mean([a.degeneration.mean() for a in young]) + 0.1
    assert np.mean([a.body_bot[3] - a.body_top[3] for a in old]) < np.mean(
        [a.body_bot[3] - a.body_top[3] for a in young]
    )


def _anterior_csf_pixels(anat: Anatomy, level: int, x_lat: float = 0.0) -> int:
    """Bright CSF pixels in the level's box, in front of the canal centre line (where a disc narrows it)."""
    values = tissue_signal(3500.0, 100.0, 3.0)
    g = SliceGeometry(rows=256, cols=256, ps=0.5, theta=0.0, shift_a=0.0, shift_s=0.0, x_lat=x_lat)
    img = render_sagittal(anat, g, values)
    x0, y0, x1, y1 = level_boxes(anat, g)[level]
    x_mid = (x0 + x1) / 2.0
    crop = img[int(y0) : int(y1), int(x0) : int(x_mid)]
    return int((crop > 0.85 * values["csf"]).sum())


def _with_level(anat: Anatomy, k: int, severity: str, lookalike: str, amount: float) -> Anatomy:
    return dataclasses.replace(
        anat,
        severity=tuple(severity if j == k else "none" for j in range(6)),
        mechanism=tuple(("disc" if severity != "none" else "none") if j == k else "none" for j in range(6)),
        lookalike=tuple(lookalike if j == k else "none" for j in range(6)),
        amount=np.where(np.arange(6) == k, amount, 0.0),
        edema_len=np.zeros(6),
        vein=np.zeros(6),
        flow_void=np.zeros(6),
    )


def test_touching_bulge_narrows_less_than_grade_1_and_more_than_normal(params: SynthParams) -> None:
    """Anterior CSF at one level: plain normal > touching bulge > grade 1 (CSF over the cord effaced)."""
    base = sample_anatomy(np.random.default_rng(11), params.anatomy, 0.0, 50)
    base = dataclasses.replace(base, canal_r=7.0, cord_r=3.8, cord_c=0.0, lat_w=np.full(8, 6.0))
    k = 3
    touching_amount = 0.5  # the middle of the touching bulge's band (LOOKALIKE_BULGE)
    normal = _anterior_csf_pixels(_with_level(base, k, "none", "none", 0.0), k)
    touching = _anterior_csf_pixels(_with_level(base, k, "none", "touching_bulge", touching_amount), k)
    grade1 = _anterior_csf_pixels(_with_level(base, k, "mild", "none", 0.8), k)
    assert normal > touching > grade1, (normal, touching, grade1)


def test_protrusion_is_partial_volumed_off_the_midline(params: SynthParams) -> None:
    anat = sample_anatomy(np.random.default_rng(3), params.anatomy, 1.0, 60)
    mid = canal_profile(anat, anat.disc_t, 0.0)
    on_mid = protrusions(anat, *mid, 0.0)[0]
    off_mid = protrusions(anat, *mid, 4.0)[0]
    assert (off_mid < on_mid).all() and (off_mid > 0).all()
    np.testing.assert_allclose(off_mid / on_mid, np.exp(-((4.0 / anat.lat_w) ** 2)))


def test_labelling_threshold_moves_grade_1_to_normal(params: SynthParams) -> None:
    """compression_min_grade: 2 labels grade-1 levels normal (severity kept); the expert's boxes follow it."""
    one = simulate_annotations(params, "ci")
    two = simulate_annotations(params.model_copy(update={"compression_min_grade": 2}), "ci")
    e1, e2 = (d[d["reader_level"] == "expert"].reset_index(drop=True) for d in (one, two))
    assert len(e1) == len(e2)
    mild = e1["severity"] == "mild"
    assert mild.any()
    assert (e1.loc[mild, "label"] == "compression").all()
    assert (e2.loc[mild, "label"] == "normal").all() and (e2.loc[mild, "severity"] == "mild").all()
    assert (e1.loc[~mild, "label"] == e2.loc[~mild, "label"]).all()


def test_readers_disagree_most_at_grade_1_and_look_alikes(params: SynthParams) -> None:
    """Simulated readers' labels against the expert's, level by level, on the paper profile's first patients."""
    table = disagreement_table(params, "paper", max_patients=250).set_index("reader_id")
    assert set(table.index) == {r.reader_id for r in params.readers if r.level != "expert"}
    for _, by in table.iterrows():
        assert by["grade 1"] > 2 * max(by["grade 2"], by["grade 3"]), by
        assert by["look-alike"] > 5 * by["plain normal"], by
    assert (table.loc[["junior_1", "junior_2"], "grade 1"].mean()) > table.loc[["mid_1", "mid_2"], "grade 1"].mean()


def test_readers_miss_more_on_ambiguous_images() -> None:
    """Same level, same reader: misses rise with ambiguity (off-midline slice, noisy or moving scan)."""
    from pipelines.synth.params import ReaderParams
    from pipelines.synth.readers import read_image

    reader = ReaderParams(
        reader_id="r",
        level="mid",
        box_jitter=0.0,
        miss_rate={"mild": 0.2, "moderate": 0.0, "severe": 0.0},
        ambiguity_miss_factor=1.5,
    )
    box = np.array([[10.0, 10.0, 30.0, 20.0]])

    def miss_share(amb: float) -> float:
        rng = np.random.default_rng(0)
        rows = [
            read_image(reader, rng, "1.2", box, ["mild"], ["none"], np.array([amb]), 1, 64, 64) for _ in range(4000)
        ]
        return float(np.mean([r[0][3] == "normal" for r in rows]))

    clear, hard = miss_share(0.0), miss_share(1.0)
    assert clear == pytest.approx(0.2, abs=0.025)
    assert hard == pytest.approx(0.5, abs=0.03)
