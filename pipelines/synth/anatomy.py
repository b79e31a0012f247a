"""Patient anatomy of the cervical spine phantom: vertebrae, discs, canal, cord and where it is compressed.

Geometry lives in a curved "spine frame" measured in millimetres: `t` runs down the canal centre line (head to
feet) and `d` across it (anterior negative, posterior positive, 0 at the canal centre). Everything that
depends on the image (pixel grid, positioning, lateral slice offset) is applied later by `render.py`, so one
patient keeps the same anatomy on every slice and series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synth.params import LEVEL_NAMES, AnatomyParams

# Bodies, head to feet. Index 0 is the dens (odontoid peg, fused to C2 with no disc below it).
BODY_NAMES: tuple[str, ...] = ("dens", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3")
_BODY_HEIGHT = np.array([14.0, 17.0, 13.5, 13.5, 13.5, 13.8, 14.5, 16.0, 17.0, 18.0])
_BODY_DEPTH = np.array([10.0, 15.5, 15.5, 16.0, 16.5, 17.0, 17.0, 18.0, 20.0, 22.0])
# Discs below bodies 1..8: C2-3 .. C7-T1 are the six labelled levels; T1-2 and T2-3 only fill the image.
_DISC_HEIGHT = np.array([4.5, 5.0, 5.5, 5.8, 5.6, 5.0, 4.5, 4.5])
N_LEVELS = len(LEVEL_NAMES)
N_DISCS = len(_DISC_HEIGHT)

# Severity bands, as fractions: mild = share of the CSF gap effaced; moderate/severe = share of cord thickness
# indented beyond the gap. Normal levels may bulge but never past this share of the gap.
SEVERITY_BANDS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.30),
    "mild": (0.55, 0.95),
    "moderate": (0.08, 0.25),
    "severe": (0.30, 0.50),
}
SEVERITY_RANK: dict[str, int] = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}


@dataclass(frozen=True)
class Anatomy:
    """One patient's spine, in spine-frame millimetres (see module docstring).

    Attributes:
        body_top, body_bot: `t` of the top/bottom of each body in `BODY_NAMES` order.
        body_depth: antero-posterior depth of each body.
        disc_t, disc_h: centre and height of each disc (first six are the labelled levels).
        canal_r, cord_r: half antero-posterior diameters of the canal and cord on the midline.
        cord_c: cord centre offset inside the canal (posterior positive).
        lordosis, lordosis_w, tilt, t_mid, x0: centre-line shape (see `centerline`).
        severity, mechanism: per labelled level; mechanism in disc|osteophyte|ligamentum_flavum|pincer|none.
        amount: per labelled level, position in the severity band (0..1), so each slice derives mm from its
        own
            canal and cord size.
        bulge_w: half-width (mm along `t`) of each disc's protrusion profile.
        degeneration: per disc 0 (healthy, bright nucleus) .. 1 (dark, thin disc).
        edema_len: per labelled level, half-length of the intramedullary T2 hyperintensity (0 unless severe).
        midline_x: patient mid-sagittal plane, scanner left-right mm.
        t_fm: foramen magnum level.
        prevert, neck_post: soft-tissue thickness scalars.
    """

    body_top: np.ndarray
    body_bot: np.ndarray
    body_depth: np.ndarray
    disc_t: np.ndarray
    disc_h: np.ndarray
    canal_r: float
    cord_r: float
    cord_c: float
    lordosis: float
    lordosis_w: float
    tilt: float
    t_mid: float
    x0: float
    severity: tuple[str, ...]
    mechanism: tuple[str, ...]
    amount: np.ndarray
    bulge_w: np.ndarray
    degeneration: np.ndarray
    edema_len: np.ndarray
    midline_x: float
    t_fm: float
    prevert: float
    neck_post: float

    @property
    def n_compressed(self) -> int:
        """Number of labelled levels with any compression."""
        return sum(s != "none" for s in self.severity)

    @property
    def max_severity(self) -> str:
        """Worst severity over the labelled levels."""
        return max(self.severity, key=SEVERITY_RANK.__getitem__)

    @property
    def compressed_levels(self) -> tuple[str, ...]:
        """Names of the compressed levels, head to feet."""
        return tuple(LEVEL_NAMES[k] for k, s in enumerate(self.severity) if s != "none")


def centerline(anat: Anatomy, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Antero-posterior position c(t) of the canal centre line and its slope dc/dt.

    A Gaussian bump gives the cervical lordosis (mid-cervical levels sit anterior) and a linear term the
    overall tilt of the neck; both are smooth everywhere so the frame never folds.
    """
    z = (np.asarray(t) - anat.t_mid) / anat.lordosis_w
    e = np.exp(-(z * z))
    c = anat.x0 - anat.lordosis * e + anat.tilt * (np.asarray(t) - anat.t_mid)
    dc = anat.lordosis * 2.0 * z / anat.lordosis_w * e + anat.tilt
    return c, dc


def _choice(rng: np.random.Generator, probs: dict[str, float] | tuple[float, ...]) -> int:
    p = np.asarray(list(probs.values()) if isinstance(probs, dict) else probs, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def sample_anatomy(rng: np.random.Generator, params: AnatomyParams, prevalence: float) -> Anatomy:
    """Draw one patient: body sizes, canal and cord, curvature, and which levels are compressed how badly.

    Args:
        rng: the patient's anatomy stream.
        params: anatomy and compression rates.
        prevalence: probability that this patient has at least one compressed level (site-specific).
    """
    scale = rng.uniform(0.92, 1.08)
    degeneration = np.clip(rng.beta(1.2, 3.0, N_DISCS) + (rng.random(N_DISCS) < params.degeneration_prob) * 0.4, 0, 1)

    severity = ["none"] * N_LEVELS
    mechanism = ["none"] * N_LEVELS
    if rng.random() < prevalence:
        n_lev = 1 + _choice(rng, params.n_levels_probs)
        lp = np.asarray(params.level_probs, dtype=float)
        levels = rng.choice(N_LEVELS, size=min(n_lev, N_LEVELS), replace=False, p=lp / lp.sum())
        sev_names = list(params.severity_probs)
        mech_names = list(params.mechanism_probs)
        for k in sorted(int(v) for v in levels):
            severity[k] = sev_names[_choice(rng, params.severity_probs)]
            mechanism[k] = mech_names[_choice(rng, params.mechanism_probs)]
            if severity[k] == "severe" and rng.random() < params.pincer_prob_severe:
                mechanism[k] = "pincer"
            # Compressed levels are degenerate discs: darker nucleus, lower height.
            degeneration[k] = max(degeneration[k], rng.uniform(0.5, 1.0))
    amount = rng.random(N_LEVELS)
    edema_len = np.array([rng.uniform(3.5, 7.5) if s == "severe" else 0.0 for s in severity])

    body_h = _BODY_HEIGHT * scale * rng.uniform(0.95, 1.05, len(_BODY_HEIGHT))
    disc_h = _DISC_HEIGHT * scale * rng.uniform(0.9, 1.1, N_DISCS) * (1.0 - 0.35 * degeneration)
    body_top = np.empty(len(body_h))
    body_bot = np.empty(len(body_h))
    t = rng.normal(-88.0, 5.0)  # dens tip; the FOV centre is t=0 before positioning
    for b, h in enumerate(body_h):
        body_top[b] = t
        body_bot[b] = t + h
        # Body b >= 1 is followed by disc b-1; the dens overlaps C2 by 1 mm with no disc between them.
        t = body_bot[b] + (disc_h[b - 1] if 1 <= b <= N_DISCS else -1.0)
    disc_t = (body_bot[1:-1] + body_top[2:]) / 2.0

    lo_c, hi_c = params.canal_radius_mm
    lo_r, hi_r = params.cord_radius_mm
    mean_l, sd_l = params.lordosis_mm
    t_mid = float((body_top[1] + body_bot[7]) / 2.0)
    return Anatomy(
        body_top=body_top,
        body_bot=body_bot,
        body_depth=_BODY_DEPTH * scale * rng.uniform(0.95, 1.05, len(_BODY_DEPTH)),
        disc_t=disc_t,
        disc_h=disc_h,
        canal_r=float(rng.uniform(lo_c, hi_c)),
        cord_r=float(rng.uniform(lo_r, hi_r)),
        cord_c=float(rng.uniform(-0.6, 0.3)),
        lordosis=float(np.clip(rng.normal(mean_l, sd_l), -6.0, 20.0)),
        lordosis_w=float(rng.uniform(55.0, 80.0)),
        tilt=float(rng.normal(0.0, 0.06)),
        t_mid=t_mid,
        x0=float(rng.normal(-4.0, 3.0)),
        severity=tuple(severity),
        mechanism=tuple(mechanism),
        amount=amount,
        bulge_w=rng.uniform(2.0, 3.5, N_DISCS),
        degeneration=degeneration,
        edema_len=edema_len,
        midline_x=float(rng.normal(0.0, 2.0)),
        t_fm=float(body_top[0] - rng.uniform(3.0, 6.0)),
        prevert=float(rng.uniform(3.0, 6.0)),
        neck_post=float(rng.uniform(62.0, 80.0)),
    )


def lateral_factor(x_lat: float, half_width: float) -> float:
    """Share of the midline antero-posterior size seen by a sagittal slice `x_lat` mm off the midline.

    The canal and cord are roughly elliptic in cross-section, so a parasagittal slice cuts a thinner chord.
    """
    r = min(abs(x_lat) / half_width, 0.95)
    return float(np.sqrt(1.0 - r * r))


def protrusions(anat: Anatomy, canal_r: np.ndarray, cord_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anterior and posterior canal-wall protrusion (mm into the canal) per disc.

    Deriving millimetres from the slice's own canal and cord size at each disc keeps the visible severity
    equal to the label on every slice: mild effaces CSF only, moderate indents the cord, severe deforms it.

    Args:
        anat: the patient.
        canal_r, cord_r: half AP diameters of canal and cord at each disc on this slice, shape (N_DISCS,).
    """
    ant = np.zeros(N_DISCS)
    post = np.zeros(N_DISCS)
    for k in range(N_DISCS):
        gap_a = max(float(canal_r[k] - cord_r[k]) + anat.cord_c, 0.3)
        gap_p = max(float(canal_r[k] - cord_r[k]) - anat.cord_c, 0.3)
        thick = 2.0 * float(cord_r[k])
        if k >= N_LEVELS or anat.severity[k] == "none":
            # Non-compressive bulges and ligament thickening: "any bump = compression" must not hold.
            u = anat.amount[k] if k < N_LEVELS else 0.5
            ant[k] = gap_a * SEVERITY_BANDS["none"][1] * u * anat.degeneration[k]
            post[k] = gap_p * 0.15 * (1.0 - u)
            continue
        lo, hi = SEVERITY_BANDS[anat.severity[k]]
        f = lo + (hi - lo) * anat.amount[k]
        mech = anat.mechanism[k]
        if anat.severity[k] == "mild":
            amt_a, amt_p = gap_a * f, gap_p * f
        else:
            amt_a, amt_p = gap_a + thick * f, gap_p + thick * f
        if mech == "pincer":
            # Both walls close in; the cord deformation is shared between them.
            ant[k] = gap_a + thick * f * 0.55
            post[k] = gap_p + thick * f * 0.45
        elif mech == "ligamentum_flavum":
            post[k] = amt_p
            ant[k] = gap_a * 0.15
        else:
            ant[k] = amt_a
            post[k] = gap_p * 0.1
    return ant, post
