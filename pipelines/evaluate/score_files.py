"""`cordwatch score`: score any prediction box file against any reference box file, with patient-bootstrap CIs.

Lets a reviewer score a new reader or another model exactly as `cordwatch evaluate` scores ours.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contracts import CLASS_NAMES
from pipelines.evaluate.intervals import CI_METHOD_LABELS, Interval
from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.scoring import METRICS, READER_METRICS_NOTE, BoxFileError, match, validate_boxes
from pipelines.evaluate.uncertainty import bootstrap

# How each figure is labelled in the printed table.
METRIC_LABELS: dict[str, str] = {
    "map50": "mAP50",
    "map50_95": "mAP50-95",
    "precision": "precision (class mean)",
    "recall": "recall (class mean)",
    "sensitivity": "lesion sensitivity",
    "ppv": "lesion PPV",
    **{f"ap50_{name}": f"AP50 {name}" for name in CLASS_NAMES},
    **{f"ap50_95_{name}": f"AP50-95 {name}" for name in CLASS_NAMES},
}


def read_boxes(path: Path, *, scored: bool) -> pd.DataFrame:
    """Read and validate a box file (CSV, or parquet by suffix).

    Args:
        path: `image_id, label, x_min, y_min, x_max, y_max` [, `score`] [, `patient_key`], pixels.
        scored: a prediction file (reads `score`; absent means a reader, every box 1.0).

    Raises:
        BoxFileError: naming the file, line and column of each problem.
    """
    path = Path(path)
    if not path.is_file():
        raise BoxFileError(f"{path}: file not found")
    if path.suffix.lower() == ".parquet":
        return validate_boxes(pd.read_parquet(path), str(path), scored=scored)
    try:
        # Ids stay text ("007" is not 7); only empty cells are missing, so an id like "NA" survives.
        frame = pd.read_csv(
            path,
            dtype={"image_id": str, "patient_key": str, "label": str, "source": str},
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError as exc:
        raise BoxFileError(f"{path}: empty file (expected a header line: image_id,label,x_min,...)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BoxFileError(f"{path}: not a readable CSV: {exc}") from exc
    return validate_boxes(frame, str(path), scored=scored, line_offset=2)  # line 1 is the header


@dataclass(frozen=True)
class ScoreResult:
    """Every figure of one prediction file against one reference file, with its CI."""

    pred_path: str
    ref_path: str
    params: EvaluateParams
    intervals: dict[str, Interval]
    n_images: int
    n_patients: int
    n_predictions: int
    n_references: dict[str, int]
    clustered_by: str  # "patient_key" (from the reference file) or "image" (each image its own cluster)
    reader: bool  # predictions carry a single score (none given: a reader), hence a single operating point
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Printable summary: what was scored, then one line per figure with its CI."""
        p = self.params
        pct = f"{100 * p.ci_level:g}%"
        refs = ", ".join(f"{k} {v}" for k, v in self.n_references.items())
        kind = "reader: one score for every box, one operating point" if self.reader else "model: scored boxes"
        lines = [
            f"predictions: {self.pred_path}  [{kind}, {self.n_predictions} boxes]",
            f"reference:   {self.ref_path}  [{refs}]",
            f"images {self.n_images}, clusters {self.n_patients} (by {self.clustered_by}); "
            f"{pct} CI: {CI_METHOD_LABELS[p.ci_method]}, {p.bootstrap_resamples} resamples, "
            f"seed {p.bootstrap_seed}",
            f"operating point: score >= {p.operating_conf:g}, IoU >= {p.iou_threshold:.2f}; lesion = compression box",
            "",
            f"{'metric':<24}{'value':>8}   {pct} CI",
        ]
        for key in METRICS:
            iv = self.intervals[key]
            ci = f"{iv.low:.3f}-{iv.high:.3f}" if np.isfinite(iv.low) else "n/a"
            value = f"{iv.point:.3f}" if np.isfinite(iv.point) else "n/a"
            lines.append(f"{METRIC_LABELS.get(key, key):<24}{value:>8}   {ci}")
        for note in self.notes:
            lines += textwrap.wrap(note, width=110, initial_indent="note: ", subsequent_indent="      ")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Each figure as {point, low, high, n_valid} (NaN as null) under its METRICS key, plus `meta`."""
        out: dict[str, Any] = {key: self.intervals[key].to_dict() for key in METRICS}
        out["meta"] = {
            "pred": self.pred_path,
            "ref": self.ref_path,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "n_predictions": self.n_predictions,
            "n_references": dict(self.n_references),
            "clustered_by": self.clustered_by,
            "reader": self.reader,
            "ci_level": self.params.ci_level,
            "ci_method": self.params.ci_method,
            "bootstrap_resamples": self.params.bootstrap_resamples,
            "bootstrap_seed": self.params.bootstrap_seed,
            "operating_conf": self.params.operating_conf,
            "iou_threshold": self.params.iou_threshold,
            "notes": list(self.notes),
        }
        return out


def _patient_map(ref: pd.DataFrame, where: str) -> dict[str, str] | None:
    """image_id -> patient_key from the reference file, or None when it has no such column."""
    if "patient_key" not in ref.columns:
        return None
    keys = ref.groupby("image_id")["patient_key"].unique()
    split = keys[keys.map(len) > 1]
    if len(split):
        image = split.index[0]
        raise BoxFileError(
            f"{where}: image {image!r} has more than one patient_key ({', '.join(map(str, split.iloc[0]))}); "
            f"{len(split)} image(s) so affected"
        )
    return {image: str(k[0]) for image, k in keys.items()}


def score_files(pred_csv: Path, ref_csv: Path, params: EvaluateParams) -> ScoreResult:
    """Score a prediction box file against a reference box file (see `cordwatch score`).

    Args:
        pred_csv: predictions; `score` optional (absent: a reader, every box 1.0); `source` ignored.
        ref_csv: reference boxes; optional `patient_key` (absent: each image is its own bootstrap cluster).
        params: bootstrap and operating-point settings.

    Raises:
        BoxFileError: a malformed file, or predictions on images the reference does not have.
    """
    pred = read_boxes(Path(pred_csv), scored=True)
    ref = read_boxes(Path(ref_csv), scored=False)
    # The reference defines the images scored (as COCO's loadRes): boxes on other images are most likely an id
    # mismatch, and counting them as false positives would silently lower every figure.
    stray = sorted(set(pred["image_id"]) - set(ref["image_id"]))
    if stray:
        raise BoxFileError(
            f"{pred_csv}: {len(stray)} image_id(s) have no reference boxes in {ref_csv}, e.g. "
            f"{', '.join(map(repr, stray[:3]))}; score only images the reference covers"
        )
    patient_of = _patient_map(ref, str(ref_csv))
    m = match(pred, ref, patient_of)
    intervals = bootstrap(m, params)
    reader = bool(np.unique(m.pred_score).size <= 1)
    notes = []
    if reader:
        notes.append(READER_METRICS_NOTE)
    if patient_of is None:
        notes.append("no patient_key in the reference: each image is resampled on its own, so CIs are too narrow "
                     "if several images come from one patient")  # fmt: skip
    if m.n_patients < params.min_subgroup_patients:
        notes.append(f"only {m.n_patients} clusters (< {params.min_subgroup_patients}): CIs are unreliable")
    return ScoreResult(
        pred_path=str(pred_csv),
        ref_path=str(ref_csv),
        params=params,
        intervals=intervals,
        n_images=m.n_images,
        n_patients=m.n_patients,
        n_predictions=m.n_predictions,
        n_references=m.n_references,
        clustered_by="image" if patient_of is None else "patient_key",
        reader=reader,
        notes=notes,
    )
