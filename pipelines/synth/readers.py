"""Simulated physician reads of the ground-truth level boxes (the expert is the reference standard).

Each reader redraws every level box with edge jitter proportional to the box size, reads some compressions as
normal (mostly mild ones), overcalls some normal levels as compression, and now and then skips a level. The
rates live in params; `calibration.py` checks the resulting mAP50 against the expert.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.contracts import ANNOTATION_COLUMNS, OPTIONAL_ANNOTATION_COLUMNS
from pipelines.synth.params import ReaderParams

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


def read_image(
    reader: ReaderParams,
    rng: np.random.Generator,
    sop_uid: str,
    boxes: np.ndarray,
    severities: Sequence[str],
    cols: int,
    rows: int,
) -> list[tuple[object, ...]]:
    """One reader's annotation rows for one image.

    Args:
        reader: the reader's error rates.
        rng: the reader's stream for this patient (draws are made for every level, so a skipped level does not
        shift
            the later ones).
        sop_uid: image SOPInstanceUID.
        boxes: (n_levels, 4) true boxes in pixels; rows of NaN are levels outside the image (no box).
        severities: true severity per level (none|mild|moderate|severe).
        cols, rows: image size, to keep boxes inside it.

    Returns:
        Rows in `ANNOTATION_HEADER` order.
    """
    out: list[tuple[object, ...]] = []
    for box, sev in zip(boxes, severities, strict=True):
        u_omit, u_call = rng.random(2)
        jittered = _jitter(box, reader.box_jitter, rng, cols, rows) if not np.isnan(box).any() else None
        if jittered is None or u_omit < reader.omit_rate:
            continue
        if sev == "none":
            label, r_sev = ("compression", "mild") if u_call < reader.false_positive_rate else ("normal", "none")
        elif u_call < reader.miss_rate[sev]:  # type: ignore[index]
            label, r_sev = "normal", "none"
        else:
            label, r_sev = "compression", sev
        x0, y0, x1, y1 = (f"{v:.2f}" for v in jittered)
        out.append((sop_uid, reader.reader_id, reader.level, label, x0, y0, x1, y1, r_sev))
    return out
