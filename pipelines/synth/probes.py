"""Controlled phantoms for checking explanations: one patient rendered with compression at a chosen level only.

The cohort generator draws everything at random; an explanation check needs the opposite: the same patient, the
same scanner and the same noise, with the compression moved from one level to another, so that whatever moves in
a heatmap moved because the compression did. Rendering goes through the generator's own anatomy, physics and
acquisition (`sample_anatomy`, `render_sagittal`, `acquire`), on the mid-sagittal slice of a scanner from params.
SYNTHETIC data, like everything the generator makes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipelines.synth.anatomy import N_LEVELS, sample_anatomy
from pipelines.synth.params import LEVEL_NAMES, SynthParams
from pipelines.synth.render import (
    SliceGeometry,
    acquire,
    blur_for_thickness,
    level_boxes,
    render_sagittal,
    sample_acquisition,
    tissue_signal,
)

# Position of each grade in its band (`amount`): the middle, an unambiguous example of the grade.
_AMOUNT = 0.6


@dataclass(frozen=True)
class Probe:
    """One rendered image: stored values (12-bit in uint16, MONOCHROME2), the six level boxes in pixels, and which
    level is compressed (None: none)."""

    pixels: np.ndarray
    boxes: np.ndarray  # (6, 4) x_min, y_min, x_max, y_max; NaN rows for levels outside the image
    compressed_level: int | None
    pixel_spacing_mm: float

    @property
    def compressed_box(self) -> np.ndarray:
        if self.compressed_level is None:
            raise ValueError("this probe has no compressed level")
        return self.boxes[self.compressed_level]


def compression_probe(
    params: SynthParams,
    seed: int,
    level: int | None,
    *,
    severity: str = "moderate",
    site: str = "dev",
    scanner: int = 0,
    profile: str = "demo",
    age_years: int = 55,
    fov_mm: float | None = None,
    matrix: int | None = None,
) -> Probe:
    """Patient `seed`, with a disc protrusion of `severity` (mild|moderate|severe) at `level` (0 = C2-C3) and every
    other level plain normal (no look-alikes, no artefacts); `level=None` renders the patient with no compression.

    Same seed, different level: identical anatomy, geometry and noise except at the two levels. `fov_mm` and
    `matrix` override the scanner's (a smaller field of view zooms in on the cervical canal).
    """
    if level is not None and not 0 <= level < N_LEVELS:
        raise ValueError(f"level must be 0..{N_LEVELS - 1} ({', '.join(LEVEL_NAMES)}), got {level}")
    rng = np.random.default_rng([seed, 7919])
    anat = sample_anatomy(rng, params.anatomy, 0.0, age_years)
    levels = np.arange(N_LEVELS)
    hit = levels == (-1 if level is None else level)
    anat = dataclasses.replace(
        anat,
        severity=tuple(severity if h else "none" for h in hit),
        mechanism=tuple("disc" if h else "none" for h in hit),
        lookalike=("none",) * N_LEVELS,
        amount=np.where(hit, _AMOUNT, 0.0),
        edema_len=np.where(hit, 4.0, 0.0) if severity == "severe" else np.zeros(N_LEVELS),
        vein=np.zeros(N_LEVELS),
        flow_void=np.zeros(N_LEVELS),
    )
    sc = params.sites[site].scanners[scanner]
    prof = params.profiles[profile]
    matrix = matrix or max(32, round(sc.matrix * prof.matrix_scale / 8.0) * 8)
    ps = round((fov_mm or sc.fov_mm) / matrix, 4)
    geom = SliceGeometry(rows=matrix, cols=matrix, ps=ps, theta=0.0, shift_a=0.0, shift_s=0.0, x_lat=0.0)
    noise = np.random.default_rng([seed, 104729])
    acq = sample_acquisition(
        noise,
        blur=blur_for_thickness(sc.blur, sc.slice_thickness_mm),
        bias_strength=sc.bias_strength,
        snr=sc.snr,
        voxel_mm3=ps * ps * sc.slice_thickness_mm,
        scale=sc.intensity_scale,
    )
    pixels = acquire(render_sagittal(anat, geom, tissue_signal(sc.tr_ms, sc.te_ms, sc.field_strength)), acq, noise)
    return Probe(pixels, level_boxes(anat, geom), level, ps)
