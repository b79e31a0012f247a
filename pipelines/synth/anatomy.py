"""Patient anatomy of the cervical spine phantom: vertebrae, discs, canal, cord and where it is compressed.

Geometry lives in a curved "spine frame" measured in millimetres: `t` runs down the canal centre line (head to
feet) and `d` across it (anterior negative, posterior positive, 0 at the canal centre). Everything that
depends on the image (pixel grid, positioning, lateral slice offset) is applied later by `render.py`, so one
patient keeps the same anatomy on every slice and series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synth.params import LEVEL_NAMES, LOOKALIKE_NAMES, AnatomyParams

# Bodies, head to feet. Index 0 is the dens (odontoid peg, fused to C2 with no disc below it).
BODY_NAMES: tuple[str, ...] = ("dens", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3")
_BODY_HEIGHT = np.array([14.0, 17.0, 13.5, 13.5, 13.5, 13.8, 14.5, 16.0, 17.0, 18.0])
_BODY_DEPTH = np.array([10.0, 15.5, 15.5, 16.0, 16.5, 17.0, 17.0, 18.0, 20.0, 22.0])
# Discs below bodies 1..8: C2-3 .. C7-T1 are the six labelled levels; T1-2 and T2-3 only fill the image.
_DISC_HEIGHT = np.array([4.5, 5.0, 5.5, 5.8, 5.6, 5.0, 4.5, 4.5])
N_LEVELS = len(LEVEL_NAMES)
N_DISCS = len(_DISC_HEIGHT)

# Severity bands on the mid-sagittal plane, as fractions: mild (Kang 1) = share of the CSF gap in front of (or
# behind) the cord effaced; moderate/severe (Kang 2/3) = share of cord thickness indented beyond the gap. Plain
# normal levels bulge up to "none"; look-alikes reach up to LOOKALIKE_BULGE, just short of grade 1: the
# difference between a bulge that touches the sac and one that effaces the CSF over the cord is what readers
# (and the detector) have to see.
SEVERITY_BANDS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.30),
    "mild": (0.55, 0.95),
    "moderate": (0.08, 0.25),
    "severe": (0.30, 0.50),
}
LOOKALIKE_BULGE: dict[str, tuple[float, float]] = {
    "touching_bulge": (0.30, 0.50),
    "wide_canal_bulge": (0.35, 0.50),
    "dark_disc": (0.0, 0.15),
}
SEVERITY_RANK: dict[str, int] = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
GRADE_OF = SEVERITY_RANK  # Kang grade of a severity name


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
        amount: per labelled level, position (0..1) in its band: the severity's (`SEVERITY_BANDS`), a look-alike
            bulge's (`LOOKALIKE_BULGE`), or a plain normal level's bulge; millimetres follow from the canal and
            cord size (see `protrusions`).
        bulge_w: half-width (mm along `t`) of each disc's protrusion profile.
        degeneration: per disc 0 (healthy, bright nucleus) .. 1 (dark, thin disc).
        edema_len: per labelled level, half-length of the intramedullary T2 hyperintensity (0 unless severe).
        midline_x: patient mid-sagittal plane, scanner left-right mm.
        t_fm: foramen magnum level.
        prevert, neck_post: soft-tissue thickness scalars.
        lookalike: per labelled level, a non-compressive sign that resembles compression, or "none" (always
            "none" at a compressed level).
        canal_class, curvature: the patient's congenital canal size and sagittal alignment (for reports).
        lat_w: per disc, lateral half-width (mm) of its protrusion: a slice this far off the midline sees about
            a third of it, so compression is harder to see on parasagittal slices.
        cord_enlarge: relative thickening of the cord at the cervical enlargement (C5-C6).
        marrow: per body, marrow signal factor (heterogeneous fatty / red marrow).
        modic: per disc, endplate marrow signal change (0: none) beside degenerated discs.
        vein: per labelled level, AP thickness (share of the anterior CSF gap) of a prominent epidural vein.
        flow_void: per labelled level, depth (0..1) of CSF pulsation signal loss behind the cord.
        age_years: the patient's age (drives degeneration and height loss).
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
    lookalike: tuple[str, ...]
    canal_class: str
    curvature: str
    lat_w: np.ndarray
    cord_enlarge: float
    marrow: np.ndarray
    modic: np.ndarray
    vein: np.ndarray
    flow_void: np.ndarray
    age_years: int

    @property
    def grades(self) -> tuple[int, ...]:
        """Kang grade (0-3) of each labelled level."""
        return tuple(GRADE_OF[s] for s in self.severity)

    def labelled_compressed(self, min_grade: int) -> tuple[bool, ...]:
        """Whether each labelled level is labelled `compression` when grades from `min_grade` count."""
        return tuple(g >= min_grade for g in self.grades)

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


def _lookalike_kind(u: float, wide_canal: bool, probs: dict[str, float]) -> str:
    """The look-alike at a normal level from one uniform draw `u`: a big bulge in a wide canal only where the canal
    is wide (its own probability there), otherwise the other kinds by their probabilities, or none."""
    if wide_canal and u < probs["wide_canal_bulge"]:
        return "wide_canal_bulge"
    acc = 0.0
    for kind in LOOKALIKE_NAMES:
        if kind != "wide_canal_bulge":
            acc += probs[kind]
            if u < acc:
                return kind
    return "none"


def sample_anatomy(rng: np.random.Generator, params: AnatomyParams, prevalence: float, age_years: int = 55) -> Anatomy:
    """Draw one patient: body sizes, canal and cord, curvature, which levels are compressed how badly (Kang
    grade and cause), look-alikes at normal levels, and marrow texture.

    Args:
        rng: the patient's anatomy stream.
        params: anatomy and compression rates.
        prevalence: probability that this patient has at least one compressed level (site-specific).
        age_years: the patient's age: older spines have more degenerated, thinner discs and lower bodies.
    """
    decades = (age_years - 50) / 10.0
    scale = rng.uniform(0.92, 1.08)
    degeneration = np.clip(
        rng.beta(1.2, 3.0, N_DISCS)
        + (rng.random(N_DISCS) < params.degeneration_prob) * 0.4
        + params.degeneration_per_decade * decades,
        0,
        1,
    )

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

    canal_names = list(params.canal_class_probs)
    canal_class = canal_names[_choice(rng, params.canal_class_probs)]
    curv_names = list(params.curvature_probs)
    curvature = curv_names[_choice(rng, params.curvature_probs)]
    mean_c, sd_c = params.curvature_mm[curvature]  # type: ignore[index]
    lordosis = float(np.clip(rng.normal(mean_c, sd_c), -12.0, 20.0))

    # Look-alikes at normal levels: one categorical draw per level (a fixed number of draws), then its amount.
    lookalike = ["none"] * N_LEVELS
    vein = np.zeros(N_LEVELS)
    flow_void = np.zeros(N_LEVELS)
    la_u, la_amt = rng.random(N_LEVELS), rng.random(N_LEVELS)
    for k in range(N_LEVELS):
        if severity[k] != "none":
            continue
        kind = lookalike[k] = _lookalike_kind(float(la_u[k]), canal_class == "wide", params.lookalike_probs)
        if kind == "epidural_vein":
            vein[k] = 0.45 + 0.4 * la_amt[k]
        elif kind == "flow_void":
            flow_void[k] = 0.6 + 0.35 * la_amt[k]
        elif kind == "dark_disc":
            degeneration[k] = 0.85 + 0.15 * la_amt[k]
        if kind in LOOKALIKE_BULGE:
            amount[k] = la_amt[k]  # position in the look-alike's band (see `protrusions`)
            degeneration[k] = max(degeneration[k], 0.4 + 0.3 * la_amt[k])

    loss = params.height_loss_per_decade * max(decades, 0.0)
    body_h = _BODY_HEIGHT * scale * rng.uniform(0.95, 1.05, len(_BODY_HEIGHT)) * (1.0 - loss * rng.uniform(0.5, 1.5))
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

    lo_c, hi_c = params.canal_radius_mm[canal_class]  # type: ignore[index]
    lo_r, hi_r = params.cord_radius_mm
    lo_w, hi_w = params.protrusion_width_mm
    lo_e, hi_e = params.cord_enlargement
    t_mid = float((body_top[1] + body_bot[7]) / 2.0)
    marrow = np.clip(1.0 + rng.normal(0.0, params.marrow_heterogeneity, len(_BODY_HEIGHT)), 0.6, 1.5)
    modic = np.where(
        (rng.random(N_DISCS) < params.modic_prob) & (degeneration > 0.5), rng.uniform(0.2, 0.5, N_DISCS), 0.0
    )
    return Anatomy(
        body_top=body_top,
        body_bot=body_bot,
        body_depth=_BODY_DEPTH * scale * rng.uniform(0.95, 1.05, len(_BODY_DEPTH)),
        disc_t=disc_t,
        disc_h=disc_h,
        canal_r=float(rng.uniform(lo_c, hi_c)),
        cord_r=float(rng.uniform(lo_r, hi_r)),
        cord_c=float(rng.uniform(-0.6, 0.3)),
        lordosis=lordosis,
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
        lookalike=tuple(lookalike),
        canal_class=canal_class,
        curvature=curvature,
        lat_w=rng.uniform(lo_w, hi_w, N_DISCS),
        cord_enlarge=float(rng.uniform(lo_e, hi_e)),
        marrow=marrow,
        modic=modic,
        vein=vein,
        flow_void=flow_void,
        age_years=int(age_years),
    )


def lateral_factor(x_lat: float, half_width: float) -> float:
    """Share of the midline antero-posterior size seen by a sagittal slice `x_lat` mm off the midline.

    The canal and cord are roughly elliptic in cross-section, so a parasagittal slice cuts a thinner chord.
    """
    r = min(abs(x_lat) / half_width, 0.95)
    return float(np.sqrt(1.0 - r * r))


def lateral_visibility(anat: Anatomy, x_lat: float) -> np.ndarray:
    """Share (0..1] of each disc's midline protrusion seen by a slice `x_lat` mm off the mid-sagittal plane.

    A central protrusion or ligament fold is a few millimetres wide, narrower than the canal: a parasagittal
    slice cuts its flank (partial volume), so the canal looks less narrowed there than on the midline.
    """
    return np.exp(-((x_lat / anat.lat_w) ** 2))


def protrusions(
    anat: Anatomy, canal_r: np.ndarray, cord_r: np.ndarray, x_lat: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Anterior and posterior canal-wall protrusion (mm into the canal) per disc on a slice `x_lat` mm off the midline.

    Millimetres are set on the mid-sagittal plane from the midline canal and cord size at each disc, so on the
    midline the visible sign equals the grade: mild effaces CSF only, moderate indents the cord, severe deforms
    it. Off the midline the protrusion shrinks by `lateral_visibility`, while the label (read by the expert on
    the whole series) does not: a grade-1 level can look like a touching bulge on a parasagittal slice.

    Args:
        anat: the patient.
        canal_r, cord_r: midline half AP diameters of canal and cord at each disc, shape (N_DISCS,).
        x_lat: the slice's distance from the mid-sagittal plane, mm.
    """
    ant = np.zeros(N_DISCS)
    post = np.zeros(N_DISCS)
    for k in range(N_DISCS):
        gap_a = max(float(canal_r[k] - cord_r[k]) + anat.cord_c, 0.3)
        gap_p = max(float(canal_r[k] - cord_r[k]) - anat.cord_c, 0.3)
        thick = 2.0 * float(cord_r[k])
        if k < N_LEVELS and anat.lookalike[k] in LOOKALIKE_BULGE:
            # A bulge just short of grade 1: it narrows the CSF in front of the cord but leaves some over it.
            lo, hi = LOOKALIKE_BULGE[anat.lookalike[k]]
            ant[k] = gap_a * (lo + (hi - lo) * anat.amount[k])
            continue
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
    vis = lateral_visibility(anat, x_lat)
    return ant * vis, post * vis
