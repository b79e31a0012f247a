"""Evaluation stage: matching and scoring (scoring.py), CIs and comparisons on shared patient resamples
(uncertainty.py, intervals.py), the multi-reader multi-case analysis (mrmc.py), the study on one test set (study.py)."""

from __future__ import annotations

from pipelines.evaluate.intervals import Difference, Interval
from pipelines.evaluate.params import IOU_THRESHOLDS, EvaluateParams
from pipelines.evaluate.score_files import ScoreResult, read_boxes, score_files
from pipelines.evaluate.scoring import (
    METRICS,
    OPERATING_POINT_KEYS,
    READER_METRICS_NOTE,
    BoxFileError,
    Matched,
    match,
    matched_operating_points,
    metrics,
    validate_boxes,
)
from pipelines.evaluate.uncertainty import (
    PatientResampling,
    SourceDraws,
    bootstrap,
    bootstrap_operating_points,
    paired_difference,
    subgroup_table,
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
    "PatientResampling",
    "ScoreResult",
    "SourceDraws",
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
