"""Evaluation stage: scoring core (mAP, operating points, patient-bootstrap CIs, reader comparison, subgroups)."""

from __future__ import annotations

from pipelines.evaluate.params import IOU_THRESHOLDS, EvaluateParams
from pipelines.evaluate.score_files import ScoreResult, read_boxes, score_files
from pipelines.evaluate.scoring import (
    METRICS,
    OPERATING_POINT_KEYS,
    READER_METRICS_NOTE,
    BoxFileError,
    Difference,
    Interval,
    Matched,
    bootstrap,
    bootstrap_operating_points,
    match,
    matched_operating_points,
    metrics,
    paired_difference,
    subgroup_table,
    validate_boxes,
)

__all__ = [
    "IOU_THRESHOLDS",
    "METRICS",
    "OPERATING_POINT_KEYS",
    "READER_METRICS_NOTE",
    "BoxFileError",
    "Difference",
    "EvaluateParams",
    "Interval",
    "Matched",
    "ScoreResult",
    "bootstrap",
    "bootstrap_operating_points",
    "match",
    "matched_operating_points",
    "metrics",
    "paired_difference",
    "read_boxes",
    "score_files",
    "subgroup_table",
    "validate_boxes",
]
