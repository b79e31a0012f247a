"""Numpy renderer: spin-echo contrast from relaxation, the phantom on a pixel grid, and scanner effects.

Tissue signal follows the spin-echo equation S = PD (1 - exp(-TR/T1)) exp(-TE/T2), so a vendor's TR/TE, the
field strength (longer T1 at 3 T) and the T1-weighted distractor series all change contrast for physical
reasons rather than by fiat. Shapes are drawn with signed distances and a one-pixel soft edge (partial
volume), so a 256x256 image costs a few tens of milliseconds on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synth.anatomy import N_DISCS, N_LEVELS, Anatomy, centerline, lateral_factor, protrusions

# name: (proton density, T1 at 1.5 T ms, T1 at 3 T ms, T2 ms); fat and marrow use TSE's effective T2.
TISSUES: dict[str, tuple[float, float, float, float]] = {
    "csf": (1.00, 4000.0, 4300.0, 1800.0),
    "cord": (0.70, 750.0, 1000.0, 78.0),
    "edema": (0.85, 1400.0, 1700.0, 170.0),
    "nucleus": (0.85, 1100.0, 1250.0, 125.0),
    "annulus": (0.50, 900.0, 1000.0, 32.0),
    "marrow": (0.80, 550.0, 650.0, 80.0),
    "cortex": (0.12, 800.0, 900.0, 12.0),
    "fat": (0.90, 260.0, 380.0, 150.0),
    "muscle": (0.70, 870.0, 1400.0, 42.0),
    "brain": (0.80, 1000.0, 1300.0, 90.0),
    "air": (0.0, 1000.0, 1000.0, 1.0),
}
CSF_REF = 0.55  # CSF signal of the reference T2 protocol; noise sigma is expressed against it


def tissue_signal(tr_ms: float, te_ms: float, field_strength: float) -> dict[str, float]:
    """Noise-free spin-echo signal of every tissue for a protocol.

    Args:
        tr_ms: repetition time.
        te_ms: echo time.
        field_strength: 1.5 or 3.0 (selects the T1 column).
    """
    col = 2 if field_strength >= 2.0 else 1
    out = {}
    for name, row in TISSUES.items():
        pd, t1, t2 = row[0], row[col], row[3]
        out[name] = float(pd * (1.0 - np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2))
    return out


@dataclass(frozen=True)
class SliceGeometry:
    """Where one image sits: matrix, pixel size, patient positioning in the FOV, and lateral offset.

    Attributes:
        rows, cols: matrix.
        ps: pixel spacing, mm (square pixels).
        theta: in-plane rotation of the anatomy, radians.
        shift_a, shift_s: anatomy offset (anterior-posterior, superior-inferior) from the FOV centre, mm.
        x_lat: distance of the slice from the patient's mid-sagittal plane, mm.
    """

    rows: int
    cols: int
    ps: float
    theta: float
    shift_a: float
    shift_s: float
    x_lat: float


def _grid(g: SliceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Anatomical (a, s) mm coordinates of every pixel centre."""
    u = ((np.arange(g.cols, dtype=np.float32) + 0.5 - g.cols / 2) * g.ps)[None, :]
    v = ((np.arange(g.rows, dtype=np.float32) + 0.5 - g.rows / 2) * g.ps)[:, None]
    c, s = np.float32(np.cos(g.theta)), np.float32(np.sin(g.theta))
    return c * u - s * v + np.float32(g.shift_a), s * u + c * v + np.float32(g.shift_s)


def spine_frame(anat: Anatomy, a: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map anatomical coordinates to the spine frame (t, d) by Gauss-Newton foot-point iterations."""
    t = s.astype(np.float32, copy=True)
    for _ in range(3):
        c, dc = centerline(anat, t)
        t = t + ((a - c) * dc + (s - t)) / (1.0 + dc * dc)
    c, dc = centerline(anat, t)
    d = ((a - c) - dc * (s - t)) / np.sqrt(1.0 + dc * dc)
    return t.astype(np.float32), d.astype(np.float32)


def frame_to_pixels(anat: Anatomy, g: SliceGeometry, t: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact inverse of `spine_frame` + `_grid`: spine-frame points to pixel (x, y), edges at integers."""
    c, dc = centerline(anat, t)
    n = 1.0 / np.sqrt(1.0 + dc * dc)
    a = c + d * n - g.shift_a
    s = t - d * dc * n - g.shift_s
    cs, sn = np.cos(g.theta), np.sin(g.theta)
    u = cs * a + sn * s
    v = -sn * a + cs * s
    return u / g.ps + g.cols / 2.0, v / g.ps + g.rows / 2.0


def _sig(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float32)))


class _Canvas:
    """Float image with soft-edged painting from signed distances (mm, negative inside)."""

    def __init__(self, shape: tuple[int, int], ps: float, values: dict[str, float]) -> None:
        self.img = np.zeros(shape, dtype=np.float32)
        self.k = np.float32(1.0 / ps)
        self.v = values

    def alpha(self, sdf: np.ndarray) -> np.ndarray:
        return np.clip(np.float32(0.5) - sdf * self.k, 0.0, 1.0)

    def paint(self, sdf: np.ndarray, tissue: str | np.ndarray, weight: np.ndarray | float = 1.0) -> None:
        val = self.v[tissue] if isinstance(tissue, str) else tissue
        al = self.alpha(sdf)
        if not np.isscalar(weight) or weight != 1.0:
            al = al * weight
        self.img += al * (val - self.img)


def _rrect(
    t: np.ndarray, d: np.ndarray, ct: np.ndarray, cd: np.ndarray, ht: np.ndarray, hd: np.ndarray, r: float
) -> np.ndarray:
    """Signed distance to a rounded rectangle (centre ct, cd; half sizes ht, hd; corner radius r)."""
    qx = np.abs(t - ct) - (ht - r)
    qy = np.abs(d - cd) - (hd - r)
    out = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0) - r
    return out.astype(np.float32, copy=False)


def _ellipse(t: np.ndarray, d: np.ndarray, ct: float, cd: float, rt: float, rd: float) -> np.ndarray:
    """Approximate signed distance to an ellipse (exact on the axes, good enough for soft edges)."""
    q = np.sqrt(((t - ct) / rt) ** 2 + ((d - cd) / rd) ** 2)
    return ((q - 1.0) * min(rt, rd)).astype(np.float32, copy=False)


def _bone(
    cv: _Canvas,
    sdf: np.ndarray,
    weight: np.ndarray | float = 1.0,
    cortex_mm: float = 1.0,
    marrow: np.ndarray | None = None,
) -> None:
    """Cortical shell (dark) with marrow inside, from one signed distance; `marrow` overrides its signal."""
    cv.paint(sdf, "cortex", weight)
    cv.paint(sdf + np.float32(cortex_mm), "marrow" if marrow is None else marrow, weight)


def canal_profile(anat: Anatomy, t: np.ndarray | float, x_lat: float) -> tuple[np.ndarray, np.ndarray]:
    """Canal and cord half AP diameters along `t` on a slice `x_lat` mm off the midline.

    The canal widens at C1-C2 and into the cisterns above the foramen magnum; the cord widens into the
    medulla and, less, at the cervical enlargement.
    """
    t = np.asarray(t, dtype=np.float32)
    canal = (
        anat.canal_r
        * lateral_factor(x_lat, 12.0)
        * (1.0 + 0.25 * _sig((anat.body_bot[1] - t) / 6.0) + 0.5 * _sig((anat.t_fm - t) / 6.0))
    )
    # The cord thickens into the medulla above and at the cervical enlargement (C5-C6), a little below C4-5.
    enlarge = anat.cord_enlarge * np.exp(-(((t - float(anat.disc_t[3]) + 4.0) / 16.0) ** 2))
    cord = anat.cord_r * lateral_factor(x_lat, 6.5) * (1.0 + 0.7 * _sig((anat.t_fm - 10.0 - t) / 6.0) + enlarge)
    return canal.astype(np.float32), cord.astype(np.float32)


def _disc_profile(
    t: np.ndarray, kd: np.ndarray, anat: Anatomy, amp: np.ndarray, widen: float, power: np.ndarray
) -> np.ndarray:
    """Protrusion (mm) along t from the nearest disc's amplitude: Gaussian (power 2) or flat-top (4)."""
    # Gather from float32 copies of the per-disc tables: casting 8 values beats casting a whole image.
    z = (
        np.abs(t - anat.disc_t.astype(np.float32)[kd])
        / ((anat.disc_h / 2.0 + 0.5 * anat.bulge_w + widen).astype(np.float32)[kd])
    )
    z = z * z
    z = np.where((power == 4.0)[kd], z * z, z)
    return amp.astype(np.float32)[kd] * np.exp(-z)


def render_sagittal(anat: Anatomy, g: SliceGeometry, values: dict[str, float]) -> np.ndarray:
    """Noise-free sagittal image (float32, signal units) of one slice.

    Args:
        anat: the patient.
        g: pixel grid, positioning and lateral offset.
        values: tissue signals from `tissue_signal` (T2 for the labelled series, T1 for a distractor).
    """
    a, s = _grid(g)
    t, d = spine_frame(anat, a, s)
    cv = _Canvas(t.shape, g.ps, values)
    midline = 0.35 + 0.65 * float(np.exp(-((g.x_lat / 4.0) ** 2)))  # spinous processes are midline structures
    t_c2 = float(anat.body_bot[1])
    t_t1 = float(anat.body_bot[7])
    ant_ref = -anat.canal_r - 16.0 - 4.0 * _sig((t - float(anat.disc_t[4])) / 20.0)  # anterior vertebral line

    # Neck and head outline: fat under the skin, muscle inside.
    d_post = anat.neck_post + 22.0 * _sig((anat.t_fm - t) / 12.0) + 10.0 * _sig((t - t_t1) / 15.0)
    d_ant = ant_ref - anat.prevert - 42.0 - 45.0 * _sig((t_c2 - 10.0 - t) / 10.0)
    outline = np.maximum(d - d_post, d_ant - d)
    cv.paint(outline, "fat")
    cv.paint(np.maximum(d - (d_post - 8.0), (d_ant + 5.0) - d), "muscle")
    streak = np.abs(d - (38.0 + 8.0 * np.sin(t / 23.0))) - 0.8  # an intermuscular fat plane
    cv.paint(np.maximum(streak, outline + 14.0), "fat", 0.6)

    # Posterior fossa: occipital bone shell, cerebellum/brain inside.
    ct_h, cd_h = anat.t_fm - 34.0, 14.0
    _bone(cv, _ellipse(t, d, ct_h, cd_h, 40.0, 47.0), 1.0, cortex_mm=2.0)
    cv.paint(_ellipse(t, d, ct_h, cd_h, 35.0, 42.0), "brain")

    # Airway (naso/oropharynx, larynx, trachea) in front of the prevertebral soft tissue.
    air_post = ant_ref - anat.prevert - 8.0 * _sig((t - float(anat.disc_t[2])) / 6.0)
    cv.paint(np.maximum(d - air_post, (air_post - 14.0) - d), "air")

    canal, cord = canal_profile(anat, t, g.x_lat)

    # Posterior elements: lamina + spinous process of C2..T3, indexed on a sheared t to keep each in its band.
    centres = (anat.body_top[1:] + anat.body_bot[1:]) / 2.0
    t_shear = t - 0.45 * np.maximum(d - canal, 0.0)
    mids = ((centres[:-1] + centres[1:]) / 2.0).astype(np.float32)
    kp = np.clip(np.searchsorted(mids, t_shear), 0, len(centres) - 1)
    length = np.array([30.0, 22.0, 22.0, 24.0, 28.0, 38.0, 40.0, 40.0, 40.0], dtype=np.float32)[kp]
    phi = np.deg2rad(np.array([15.0, 25.0, 25.0, 27.0, 30.0, 32.0, 40.0, 45.0, 45.0], dtype=np.float32))[kp]
    t0 = centres.astype(np.float32)[kp] + 1.0
    dd = d - (canal + 1.0)
    tt = t - t0
    lam = dd * np.cos(phi) + tt * np.sin(phi)
    mu = -dd * np.sin(phi) + tt * np.cos(phi)
    half = 4.5 - 1.5 * np.clip(lam / length, 0.0, 1.0)
    sp = np.maximum(np.maximum(-lam, lam - length), np.abs(mu) - half)
    _bone(cv, sp, midline)

    # Discs fill the anterior column; their posterior margin is the (possibly protruding) anterior canal wall.
    ant_amp, post_amp = protrusions(anat, *canal_profile(anat, anat.disc_t, 0.0), g.x_lat)
    bounds = centres[1:-1]  # disc k sits between body centres k+1 and k+2
    kd = np.clip(np.searchsorted(bounds.astype(np.float32), t), 0, N_DISCS - 1)
    mech = [anat.mechanism[k] if k < N_LEVELS else "none" for k in range(N_DISCS)]
    power = np.array([4.0 if m == "osteophyte" else 2.0 for m in mech])
    p_ant = _disc_profile(t, kd, anat, ant_amp, 0.0, power)
    p_post = _disc_profile(t, kd, anat, post_amp, 2.0, np.full(N_DISCS, 2.0))
    wall_ant = -canal + p_ant
    wall_post = canal - p_post
    in_col = np.maximum(anat.body_bot[1] - t, t - anat.body_top[-1]).astype(np.float32)
    disc_sdf = np.maximum(np.maximum(d - wall_ant, (ant_ref + 1.5) - d), in_col)
    cv.paint(disc_sdf, "annulus")
    deg = anat.degeneration.astype(np.float32)[kd]
    nucleus_val = (1.0 - deg) * values["nucleus"] + deg * values["annulus"] * 1.3
    dz = anat.disc_t.astype(np.float32)[kd]
    nuc = (
        np.sqrt(
            ((t - dz) / (anat.disc_h.astype(np.float32)[kd] * 0.32)) ** 2 + ((d - (ant_ref - canal) / 2.0) / 5.5) ** 2
        )
        - 1.0
    )
    cv.paint(np.maximum(nuc * 2.0, in_col), nucleus_val)

    # Vertebral bodies (and dens), nearest body by t.
    b_bounds = np.concatenate(
        ([(anat.body_bot[0] + anat.body_top[1]) / 2.0], (anat.body_bot[1:-1] + anat.body_top[2:]) / 2.0)
    )
    kb = np.searchsorted(b_bounds.astype(np.float32), t)
    ctb = ((anat.body_top + anat.body_bot) / 2.0).astype(np.float32)[kb]
    htb = ((anat.body_bot - anat.body_top) / 2.0).astype(np.float32)[kb]
    hdb = (anat.body_depth / 2.0).astype(np.float32)[kb]
    cdb = -canal - hdb - 0.3
    body_sdf = _rrect(t, d, ctb, cdb, htb, hdb, 2.5)
    marrow_val = np.float32(values["marrow"]) * anat.marrow.astype(np.float32)[kb]  # heterogeneous marrow
    _bone(cv, body_sdf, marrow=marrow_val)
    # Modic-type endplate change: brighter marrow in a band on both sides of a degenerated disc.
    modic = anat.modic.astype(np.float32)[kd]
    if anat.modic.any():
        band = np.abs(t - dz) - (anat.disc_h.astype(np.float32)[kd] / 2.0 + 3.5)
        cv.paint(np.maximum(body_sdf + 1.2, band), marrow_val * (1.0 + modic), (modic > 0).astype(np.float32))
    # C1: anterior arch in front of the dens, posterior arch behind the canal.
    tc1 = float(anat.body_top[0]) + 7.0
    _bone(cv, _ellipse(t, d, tc1, -anat.canal_r * 1.5 - anat.body_depth[0] - 6.0, 5.5, 3.8))
    _bone(cv, _ellipse(t, d, tc1 + 1.0, anat.canal_r * 1.5 + 7.0, 5.0, 4.5), midline)
    # Clivus: a bar running up and forward from the basion.
    ang = np.deg2rad(32.0)
    tb, db = anat.t_fm - 1.0, -anat.canal_r * 1.5 - 4.0
    lam = -(t - tb) * np.cos(ang) - (d - db) * np.sin(ang)
    mu = (t - tb) * np.sin(ang) - (d - db) * np.cos(ang)
    _bone(cv, np.maximum(np.maximum(-lam, lam - 45.0), np.abs(mu) - 5.0), 1.0, cortex_mm=1.2)

    # Canal: CSF between the walls, protrusion material in front, ligamentum flavum behind, then the cord.
    ostep = np.array([1.0 if m == "osteophyte" else 0.0 for m in mech], dtype=np.float32)[kd]
    # Herniated disc is darker than a healthy nucleus but not as dark as bone; osteophytes are cortical bone.
    prot_val = ostep * values["cortex"] + (1.0 - ostep) * (0.6 * values["annulus"] + 0.4 * values["nucleus"])
    top = (anat.t_fm - 60.0) - t  # the canal continues into the cisterns above the foramen magnum
    cv.paint(np.maximum(np.maximum(wall_ant - d, d - wall_post), top), "csf")
    cv.paint(np.maximum(np.maximum(d - wall_ant, -canal - 1.5 - d), in_col + 2.0), prot_val)
    # Look-alikes in the canal: a prominent anterior epidural vein (dark flow void bulging into the anterior CSF
    # behind the body just below the disc) and CSF pulsation flow voids in the posterior CSF.
    for k in range(N_LEVELS):
        if anat.vein[k] > 0:
            h = float(anat.vein[k]) * max(anat.canal_r - anat.cord_r + anat.cord_c, 0.3)  # share of the front gap
            tc = float(anat.disc_t[k] + anat.disc_h[k] / 2.0 + 1.5)
            cv.paint(_ellipse(t, d, tc, -canal + h / 2.0, 3.0, h / 2.0), np.float32(values["cortex"] * 2.0))
        if anat.flow_void[k] > 0:
            band = np.abs(t - float(anat.disc_t[k])) - (4.0 + 2.0 * float(anat.flow_void[k]))
            post_csf = np.maximum(np.maximum(band, d - wall_post), (anat.cord_c + cord) - d)
            cv.paint(post_csf, np.float32(values["csf"] * (1.0 - float(anat.flow_void[k]))))
    lf_band = np.abs(t - dz) - (anat.disc_h.astype(np.float32)[kd] / 2.0 + 4.0)
    cv.paint(np.maximum(np.maximum(wall_post - d, d - (canal + 2.5)), np.maximum(lf_band, in_col)), "cortex")
    cord_ant = np.maximum(anat.cord_c - cord, wall_ant)
    cord_post = np.minimum(anat.cord_c + cord, wall_post)
    cv.paint(np.maximum(np.maximum(cord_ant - d, d - cord_post), top), "cord")

    # Intramedullary T2 hyperintensity at severe levels.
    canal_k, cord_k = canal_profile(anat, anat.disc_t, g.x_lat)
    for k in range(N_LEVELS):
        if anat.edema_len[k] > 0:
            c_a = max(anat.cord_c - float(cord_k[k]), -float(canal_k[k]) + float(ant_amp[k]))
            c_p = min(anat.cord_c + float(cord_k[k]), float(canal_k[k]) - float(post_amp[k]))
            half_ap = max(0.3 * (c_p - c_a), 0.8)
            cv.paint(
                _ellipse(t, d, float(anat.disc_t[k]), (c_a + c_p) / 2.0, float(anat.edema_len[k]), half_ap),
                "edema",
            )
    return cv.img


def _blur(img: np.ndarray, w: float) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w]: vendors' reconstruction filters differ in sharpness."""
    if w <= 0:
        return img
    out = img * np.float32(1.0 - 2.0 * w)
    out[1:, :] += np.float32(w) * img[:-1, :]
    out[:-1, :] += np.float32(w) * img[1:, :]
    out[0, :] += np.float32(w) * img[0, :]
    out[-1, :] += np.float32(w) * img[-1, :]
    res = out * np.float32(1.0 - 2.0 * w)
    res[:, 1:] += np.float32(w) * out[:, :-1]
    res[:, :-1] += np.float32(w) * out[:, 1:]
    res[:, 0] += np.float32(w) * out[:, 0]
    res[:, -1] += np.float32(w) * out[:, -1]
    return res


REF_SLICE_MM = 3.0  # slice thickness of the reference voxel (0.75 x 0.75 x 3 mm) for SNR and blur


@dataclass(frozen=True)
class Artefacts:
    """Per-series acquisition artefacts; every default is the neutral value (no artefact).

    Attributes:
        phase_axis: numpy axis of phase encoding (0: vertical, DICOM COL; 1: horizontal, DICOM ROW).
        kspace_fraction: share of k-space acquired along each axis before zero-filling (1.0: no Gibbs ringing).
        ghost_amp: first-order motion ghost amplitude as a fraction of the signal (0: no ghosts).
        ghost_shift: ghost offset along the phase axis, pixels (the period of the motion in k-space lines).
        ghost_phase: phase of the periodic motion at the first k-space line, radians.
        wrap_px: width folded in from beyond each phase-axis edge of the FOV, pixels (0: no wrap).
        pi_factor: parallel imaging acceleration R along the phase axis (1: none).
        g_max: peak g-factor, at the centre of the FOV along the phase axis (1: uniform noise).
    """

    phase_axis: int = 0
    kspace_fraction: float = 1.0
    ghost_amp: float = 0.0
    ghost_shift: int = 0
    ghost_phase: float = 0.0
    wrap_px: int = 0
    pi_factor: float = 1.0
    g_max: float = 1.0


NO_ARTEFACTS = Artefacts()


@dataclass(frozen=True)
class Acquisition:
    """Per-series scanner effects.

    Attributes:
        blur: 3-tap blur weight.
        bias: six coefficients of the log bias field (x, y, xy, x^2, y^2, coil fall-off).
        bias_strength: overall scale of the log bias field.
        sigma: Gaussian sigma of each quadrature channel, in signal units (Rician magnitude noise), where g = 1.
        scale: signal-to-stored-value factor (vendor and receiver gain).
        art: Gibbs ringing, motion ghosts, wrap-around and parallel-imaging noise (neutral by default).
    """

    blur: float
    bias: tuple[float, ...]
    bias_strength: float
    sigma: float
    scale: float
    art: Artefacts = NO_ARTEFACTS


def _wrap(img: np.ndarray, wrap_px: int, axis: int) -> np.ndarray:
    """Fold tissue from beyond each phase-axis edge onto the opposite edge (phase aliasing, FOV < body).

    The render only covers the FOV, so the tissue just outside an edge is approximated by the mirror image of
    the strip just inside it (continuous across the edge); a linear taper to 0 at `wrap_px` stands for the
    receive coil's sensitivity falling off outside the FOV. The aliased signal adds coherently to what is already there.
    """
    n = img.shape[axis]
    w = min(int(wrap_px), n // 2)
    if w <= 0:
        return img
    img_t = np.moveaxis(img, axis, 0)
    out = img_t.copy()
    # Row -1-j (j px beyond the top edge) ~ row j; it aliases to row n-1-j. Taper: 1 at the edge, 0 past w.
    taper = np.linspace(1.0, 0.0, w + 1, dtype=np.float32)[:w, None]
    top = img_t[:w] * taper  # j = 0..w-1 beyond the top edge
    bottom = img_t[n - w :][::-1] * taper  # j = 0..w-1 beyond the bottom edge
    out[n - w :] += top[::-1]  # row -1-j (beyond the top) aliases to row n-1-j
    out[:w] += bottom  # row n+j (beyond the bottom) aliases to row j
    return np.moveaxis(out, 0, axis)


def _kspace(img: np.ndarray, art: Artefacts) -> np.ndarray:
    """Gibbs truncation and periodic motion phase errors, applied in k-space; returns a complex image.

    Truncation: only the central `kspace_fraction` of k-space is acquired along each axis and the rest
    zero-filled (vendors interpolate to a finer display matrix), so sharp edges such as the cord-CSF boundary
    ring (the sinc of the truncation window). Motion: a periodic motion during the acquisition puts a phase
    error a*sin(2*pi*s*k/N + phi) on phase-encode line k; exp(i a sin x) = sum J_n(a) e^(i n x), so copies of
    the image appear at +/- s pixels along the phase axis with amplitude J1(a) ~ a/2, never along the readout.
    """
    k = np.fft.fft2(img.astype(np.complex64))
    if art.kspace_fraction < 1.0:
        for ax in (0, 1):
            f = np.abs(np.fft.fftfreq(img.shape[ax]))  # cycles per pixel, 0..0.5
            keep = (f <= 0.5 * art.kspace_fraction + 1e-9).astype(np.float32)
            k *= keep[:, None] if ax == 0 else keep[None, :]
    if art.ghost_amp > 0 and art.ghost_shift > 0:
        n = img.shape[art.phase_axis]
        line = np.fft.fftfreq(n) * n  # k-space line index (centred), linear acquisition order
        a = 2.0 * art.ghost_amp  # J1(a) ~ a/2: first-order ghost at the requested fraction of the signal
        err = np.exp(1j * a * np.sin(2.0 * np.pi * art.ghost_shift * line / n + art.ghost_phase)).astype(np.complex64)
        k *= err[:, None] if art.phase_axis == 0 else err[None, :]
    return np.fft.ifft2(k).astype(np.complex64)


def g_factor_map(shape: tuple[int, int], art: Artefacts) -> np.ndarray | None:
    """Noise amplification of parallel imaging (SENSE/GRAPPA g-factor) along the phase axis; None if uniform.

    Unfolding pixels FOV/R apart is worst conditioned where the receive coils' sensitivities are most alike,
    which for a spine array is the middle of the FOV: g peaks there at `g_max` and falls to 1 at the edges, the
    central lobe widening with R (more aliased partners). `snr` is the protocol's SNR where g = 1, so the
    sqrt(R) loss of fewer k-space lines is already in it.
    """
    if art.pi_factor <= 1.0 or art.g_max <= 1.0:
        return None
    n = shape[art.phase_axis]
    u = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    width = 0.25 * art.pi_factor
    edge = np.exp(-1.0 / (2.0 * width * width))
    lobe = (np.exp(-(u * u) / (2.0 * width * width)) - edge) / (1.0 - edge)  # 1 at the centre, 0 at the edges
    g = (1.0 + (art.g_max - 1.0) * lobe).astype(np.float32)
    return g[:, None] if art.phase_axis == 0 else g[None, :]


def acquire(img: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Apply artefacts, blur, bias field and Rician noise, and quantise to 12-bit unsigned (uint16 storage).

    Order follows the signal chain: tissue beyond the FOV aliases in, k-space is truncated and motion-corrupted,
    the reconstruction filter blurs, coil sensitivity shades, and thermal noise (scaled by the g-factor) is added
    to both quadrature channels before the magnitude. Neutral artefacts leave the pixels bit-identical.
    """
    rows, cols = img.shape
    art = acq.art
    if art.wrap_px > 0:
        img = _wrap(img, art.wrap_px, art.phase_axis)
    if art.kspace_fraction < 1.0 or (art.ghost_amp > 0 and art.ghost_shift > 0):
        cimg = _kspace(img, art)
        # Without motion the truncated image is real (a symmetric window of a real object's k-space).
        img = cimg if art.ghost_amp > 0 and art.ghost_shift > 0 else np.ascontiguousarray(cimg.real)
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    b = acq.bias
    # Posterior spine coil: signal falls off anteriorly (to the image left), plus smooth B1 inhomogeneity.
    log_b = (b[0] * x + b[1] * y + b[2] * x * y + b[3] * (x * x - 0.33) + b[4] * (y * y - 0.33)) + b[5] * (x - 1.0)
    field = np.exp(np.float32(acq.bias_strength) * log_b).astype(np.float32)
    if np.iscomplexobj(img):
        sig = _blur(img.real, acq.blur) * field
        sig_im = _blur(img.imag, acq.blur) * field
    else:
        sig = _blur(img, acq.blur) * field
        sig_im = None
    g = g_factor_map(img.shape, art)
    sd = np.float32(acq.sigma) if g is None else np.float32(acq.sigma) * g
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * sd
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * sd
    if sig_im is not None:
        n2 = n2 + sig_im
    mag = np.sqrt((sig + n1) ** 2 + n2 * n2) * np.float32(acq.scale)
    return np.clip(np.rint(mag), 0, 4095).astype(np.uint16)


def blur_for_thickness(blur: float, slice_thickness_mm: float) -> float:
    """In-plane blur weight scaled by slice thickness: through-plane partial volume softens oblique edges.

    The scanner's `blur` is its value at the reference 3 mm slice; thicker slices average more of the curved
    cord and canal across the slab. Capped at 0.25, where the 3-tap kernel is flat.
    """
    return float(min(0.25, blur * slice_thickness_mm / REF_SLICE_MM))


def nominal_snr(snr: float, voxel_mm3: float) -> float:
    """A protocol's CSF SNR at its voxel size: `snr` is quoted at the 0.75 x 0.75 x 3 mm reference voxel."""
    return float(snr * (voxel_mm3 / (0.75 * 0.75 * REF_SLICE_MM)) ** 0.5)


def sample_acquisition(
    rng: np.random.Generator, *, blur: float, bias_strength: float, snr: float, voxel_mm3: float, scale: float
) -> Acquisition:
    """Draw one series' bias field, noise level and gain around a scanner's nominal values."""
    snr_eff = nominal_snr(snr, voxel_mm3) * rng.uniform(0.85, 1.15)
    bias = (*(float(v) for v in rng.normal(0.0, 0.5, 5)), float(rng.uniform(0.3, 0.7)))
    return Acquisition(
        blur=blur,
        bias=bias,
        bias_strength=bias_strength,
        sigma=CSF_REF / snr_eff,
        scale=scale * float(rng.uniform(0.9, 1.1)),
    )


def sample_artefacts(
    rng: np.random.Generator,
    *,
    moves: bool,
    wraps: bool,
    phase_axis: str,
    gibbs: float,
    ghost_amplitude: float,
    wrap_mm: float,
    pi_factor: float,
    g_max: float,
    n_phase: int,
    ps: float,
) -> Artefacts:
    """Draw one series' artefacts from its own stream; a fixed number of draws whatever the settings.

    Args:
        rng: the patient's artefact stream (never the pixel-noise stream, so noise draws do not shift).
        moves: whether this patient moves (ghosts), drawn once per patient.
        wraps: whether this patient's FOV is too small along the phase axis (wrap), drawn once per patient.
        phase_axis: "col" (phase encoded along columns: vertical, superior-inferior here) or "row" (horizontal,
            anterior-posterior), as DICOM's InPlanePhaseEncodingDirection.
        gibbs: fraction of k-space acquired along each axis (1.0: none).
        ghost_amplitude: largest ghost amplitude (fraction of signal); a moving patient gets 0.5-1 times it.
        wrap_mm: largest folded width, mm; a wrapping patient gets 0.4-1 times it.
        pi_factor: acceleration R.
        g_max: peak g-factor.
        n_phase: matrix size along the phase axis.
        ps: pixel spacing, mm.
    """
    amp_scale, wrap_scale, period, phase = rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0), rng.random(), rng.random()
    # Ghost spacing N*TR_eff/T_motion: swallowing, breathing and CSF pulsation put ghosts 1/8-1/3 FOV away.
    shift = round(float(n_phase * (0.125 + (1.0 / 3.0 - 0.125) * period)))
    ghosts = moves and ghost_amplitude > 0
    return Artefacts(
        phase_axis=0 if phase_axis == "col" else 1,
        kspace_fraction=float(gibbs),
        ghost_amp=float(ghost_amplitude * amp_scale) if ghosts else 0.0,
        ghost_shift=shift if ghosts else 0,
        ghost_phase=float(2.0 * np.pi * phase) if ghosts else 0.0,
        wrap_px=round(float(wrap_mm * wrap_scale / ps)) if wraps else 0,
        pi_factor=float(pi_factor),
        g_max=float(g_max),
    )


def level_boxes(anat: Anatomy, g: SliceGeometry) -> np.ndarray:
    """Pixel boxes (x_min, y_min, x_max, y_max; edges at integers) around the canal at each labelled level.

    A box spans the disc height plus 2.5 mm above and below, and the canal plus 2.5 mm each side (the
    posterior disc margin in front, the ligamentum flavum behind), mapped exactly through the curved frame and
    rotation. Boxes are clipped to the image; a row of NaN marks a level that is mostly outside it.
    """
    out = np.full((N_LEVELS, 4), np.nan)
    edge = np.linspace(0.0, 1.0, 5)
    for k in range(N_LEVELS):
        tk, hk = float(anat.disc_t[k]), float(anat.disc_h[k])
        canal, _ = canal_profile(anat, tk, g.x_lat)
        t0, t1 = tk - hk / 2.0 - 2.5, tk + hk / 2.0 + 2.5
        d0, d1 = -float(canal) - 2.5, float(canal) + 2.5
        ts = np.concatenate([t0 + (t1 - t0) * edge, np.full(5, t1), t1 - (t1 - t0) * edge, np.full(5, t0)])
        ds = np.concatenate([np.full(5, d0), d0 + (d1 - d0) * edge, np.full(5, d1), d1 - (d1 - d0) * edge])
        x, y = frame_to_pixels(anat, g, ts, ds)
        raw = np.array([x.min(), y.min(), x.max(), y.max()])
        clip = np.array([max(raw[0], 0.0), max(raw[1], 0.0), min(raw[2], g.cols), min(raw[3], g.rows)])
        area_raw = (raw[2] - raw[0]) * (raw[3] - raw[1])
        area = max(clip[2] - clip[0], 0.0) * max(clip[3] - clip[1], 0.0)
        if area >= 0.6 * area_raw:
            out[k] = clip
    return out


def render_axial(anat: Anatomy, level: int, rows: int, cols: int, ps: float, values: dict[str, float]) -> np.ndarray:
    """Noise-free axial slice through one disc level (a distractor series: never annotated).

    Image x runs patient right-to-left, y anterior-to-posterior, canal centre a little behind the FOV centre.
    """
    x = ((np.arange(cols, dtype=np.float32) + 0.5 - cols / 2) * ps)[None, :]
    y = ((np.arange(rows, dtype=np.float32) + 0.5 - rows / 2) * ps)[:, None] - 8.0
    x, y = np.broadcast_to(x, (rows, cols)), np.broadcast_to(y, (rows, cols))
    cv = _Canvas((rows, cols), ps, values)
    canal, cord = float(anat.canal_r), float(anat.cord_r)
    ant_amp, post_amp = protrusions(anat, np.full(N_DISCS, canal), np.full(N_DISCS, cord))
    depth = float(anat.body_depth[level + 2])
    cv.paint(_ellipse(x, y, 0.0, 5.0, 58.0, 66.0), "fat")
    cv.paint(_ellipse(x, y, 0.0, 5.0, 51.0, 58.0), "muscle")
    cv.paint(_ellipse(x, y, 0.0, -canal - depth - anat.prevert - 14.0, 9.0, 7.0), "air")
    # Vertebral body / disc: annulus ring with a nucleus whose brightness follows degeneration.
    cy = -canal - depth / 2.0
    cv.paint(_ellipse(x, y, 0.0, cy, 11.0 + depth / 4.0, depth / 2.0), "annulus")
    deg = float(anat.degeneration[level])
    nuc_val = np.float32((1 - deg) * values["nucleus"] + deg * values["annulus"] * 1.3)
    cv.paint(_ellipse(x, y, 0.0, cy, 6.0, depth / 4.0), nuc_val)
    # Laminae and spinous process behind the canal.
    for side in (-1.0, 1.0):
        ang = np.deg2rad(35.0) * side
        lam = (x - side * 10.0) * np.sin(ang) + (y - canal) * np.cos(ang)
        mu = (x - side * 10.0) * np.cos(ang) - (y - canal) * np.sin(ang)
        _bone(cv, np.maximum(np.maximum(-lam, lam - 14.0), np.abs(mu) - 2.5))
    _bone(cv, _rrect(x, y, 0.0, canal + 22.0, 3.0, 12.0, 1.5))
    # Canal: CSF ellipse narrowed by the level's protrusions, then the cord.
    wall_a, wall_p = -canal + float(ant_amp[level]), canal - float(post_amp[level])
    csf = np.maximum(_ellipse(x, y, 0.0, 0.0, 12.0, canal), np.maximum(wall_a - y, y - wall_p))
    cv.paint(csf, "csf")
    c_a = max(anat.cord_c - cord, wall_a)
    c_p = min(anat.cord_c + cord, wall_p)
    cv.paint(_ellipse(x, y, 0.0, (c_a + c_p) / 2.0, 6.5, max((c_p - c_a) / 2.0, 0.8)), "cord")
    return cv.img
