"""Simulated physician reads of the ground-truth level boxes (the expert is the reference standard).

Each reader redraws every level box with edge jitter proportional to the box size, reads some compressions as
normal (mostly grade 1), overcalls some normal levels as compression (far more often at look-alikes and at
levels graded below the labelling threshold), and now and then skips a level. Ambiguity raises the misses: a
slice off the mid-sagittal plane, where the protrusion is partial-volumed, and a noisy or moving scan. The
expert is the reference standard and makes no errors of grade. The rates live in params; `calibration.py` checks
the resulting mAP50 against the expert.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.contracts import ANNOTATION_COLUMNS, OPTIONAL_ANNOTATION_COLUMNS
from pipelines.synth.anatomy import Anatomy, lateral_visibility
from pipelines.synth.params import SEVERITY_NAMES, ReaderParams

# The annotations.csv contract (DESIGN.md), severity included.
ANNOTATION_HEADER: tuple[str, ...] = (*ANNOTATION_COLUMNS, *OPTIONAL_ANNOTATION_COLUMNS)


def _jitter(box: np.ndarray, frac: float, rng: np.random.Generator, cols: int, rows: int) -> np.ndarray:
    """Move each edge by N(0, frac * box size on that axis), keep order and image bounds, round to 0.01 px."""
    w, h = box[2] - box[0], box[3] - box[1]
    out = box + rng.normal(0.0, 1.0, 4) * frac * np.array([w, h, w, h])
    out = np.clip(out, 0.0, [cols, rows, cols, rows])
    # A box never collapses: keep at least a quarter of the true size on each axis.
    if out[2] - out[0] < 0.25 * w:
        cx = (out[0] + out[2]) / 2.0
        out[0], out[2] = cx - 0.125 * w, cx + 0.125 * w
    if out[3] - out[1] < 0.25 * h:
        cy = (out[1] + out[3]) / 2.0
        out[1], out[3] = cy - 0.125 * h, cy + 0.125 * h
    return np.round(np.clip(out, 0.0, [cols, rows, cols, rows]), 2)


# A scan at or above this CSF SNR reads as clean; below it, noise hides subtle signs in proportion.
CLEAN_SNR = 30.0
MOTION_AMBIGUITY = 0.3  # extra ambiguity of a scan with motion ghosts


def level_ambiguity(anat: Anatomy, x_lat: float, snr: float, moves: bool) -> np.ndarray:
    """Per labelled level, how hard the image makes the call: 0 (clear) .. 1.

    The larger of the partial-volume loss on this slice (1 - the share of the midline protrusion it shows) and
    the noise of the series (its nominal SNR against `CLEAN_SNR`, plus `MOTION_AMBIGUITY` when the patient moved).
    """
    partial = 1.0 - lateral_visibility(anat, x_lat)[: len(anat.severity)]
    noise = min(1.0, max(0.0, 1.0 - snr / CLEAN_SNR) + (MOTION_AMBIGUITY if moves else 0.0))
    return np.maximum(partial, noise)


def read_image(
    reader: ReaderParams,
    rng: np.random.Generator,
    sop_uid: str,
    boxes: np.ndarray,
    severities: Sequence[str],
    lookalikes: Sequence[str],
    ambiguity: np.ndarray,
    min_grade: int,
    cols: int,
    rows: int,
) -> list[tuple[object, ...]]:
    """One reader's annotation rows for one image.

    Args:
        reader: the reader's error rates.
        rng: the reader's stream for this patient (draws are made for every level, so a skipped level does not
            shift the later ones).
        sop_uid: image SOPInstanceUID.
        boxes: (n_levels, 4) true boxes in pixels; rows of NaN are levels outside the image (no box).
        severities: true severity (Kang grade name) per level: none|mild|moderate|severe.
        lookalikes: per level, the look-alike kind at a normal level, or "none".
        ambiguity: per level, 0 (clear) .. 1 (hardest): off-midline partial volume, noise, motion.
        min_grade: Kang grade from which a level is labelled compression.
        cols, rows: image size, to keep boxes inside it.

    Returns:
        Rows in `ANNOTATION_HEADER` order; `severity` is the grade the reader read, `label` follows `min_grade`.
    """
    threshold_severity = SEVERITY_NAMES[min_grade]
    out: list[tuple[object, ...]] = []
    for box, sev, look, amb in zip(boxes, severities, lookalikes, ambiguity, strict=True):
        u_omit, u_call = rng.random(2)
        jittered = _jitter(box, reader.box_jitter, rng, cols, rows) if not np.isnan(box).any() else None
        if jittered is None or u_omit < reader.omit_rate:
            continue
        grade = SEVERITY_NAMES.index(sev)
        if grade >= min_grade:
            p_miss = min(1.0, reader.miss_rate[sev] * (1.0 + reader.ambiguity_miss_factor * float(amb)))  # type: ignore[index]
            label, r_sev = ("normal", "none") if u_call < p_miss else ("compression", sev)
        elif grade > 0 or look != "none":
            # Signs short of the label's threshold: where readers overcall most.
            overcall = u_call < reader.lookalike_fp_rate
            label, r_sev = ("compression", threshold_severity) if overcall else ("normal", sev)
        else:
            overcall = u_call < reader.false_positive_rate
            label, r_sev = ("compression", threshold_severity) if overcall else ("normal", "none")
        x0, y0, x1, y1 = (f"{v:.2f}" for v in jittered)
        out.append((sop_uid, reader.reader_id, reader.level, label, x0, y0, x1, y1, r_sev))
    return out
