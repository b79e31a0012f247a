"""The study's evaluation on one test set: the model and each reader group against the expert reference.

Reader groups (mid-level, junior) are scored reader by reader exactly as the model is; a group's figure is the mean
over its readers, and its CI (and the model-minus-group difference) comes from the same patient resamples applied to
every source at once, so the comparison is paired.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.scoring import (
    METRICS,
    READER_METRICS_NOTE,
    Difference,
    Interval,
    Matched,
    iou_index_of,
    match,
    matched_operating_points,
    percentile_difference,
    percentile_interval,
    resample_weights,
    score_resamples,
    subgroup_table,
)

# Du et al. 2026 (Spine 51(9):610-621), for the side-by-side table.
STUDY = {
    "cv_map50_range": (0.917, 0.970),
    "external_map50": (0.944, 0.934, 0.953),
    "mid_map50": (0.912, 0.908, 0.919),
    "p_value": "<0.05",
}
READER_GROUPS: tuple[str, ...] = ("mid", "junior")


@dataclass
class SetEvaluation:
    """Everything measured on one test set."""

    name: str
    n_patients: int
    n_images: int
    model: dict[str, Interval]
    groups: dict[str, dict[str, Interval]] = field(default_factory=dict)
    readers: dict[str, dict[str, Interval]] = field(default_factory=dict)
    model_minus_group: dict[str, Difference] = field(default_factory=dict)
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    matched: dict[str, Matched] = field(default_factory=dict)  # the one-time matchings, for curves

    def to_json(self) -> dict[str, Any]:
        return {
            "n_patients": self.n_patients,
            "n_images": self.n_images,
            "model": {k: v.to_dict() for k, v in self.model.items()},
            "reader_groups": {g: {k: v.to_dict() for k, v in m.items()} for g, m in self.groups.items()},
            "readers": {r: {k: v.to_dict() for k, v in m.items()} for r, m in self.readers.items()},
            "model_minus_group": {g: d.to_dict() for g, d in self.model_minus_group.items()},
            "matched_operating_points": self.operating_points,
            "reader_note": READER_METRICS_NOTE,
            "subgroups": self.subgroups.replace({np.nan: None}).to_dict("records"),
        }


def _draws(m: Matched, weights: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(point, (B, metrics) resampled values) of one source: computed once, reused for reader and group CIs."""
    iou_index = iou_index_of(iou)
    point = score_resamples(m, np.ones((1, m.n_patients)), conf, iou_index)[0]
    return point, score_resamples(m, weights, conf, iou_index)


def _nanmean(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a figure undefined for every reader stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def _reader_group(
    model_map50: tuple[float, np.ndarray], readers: dict[str, Matched], weights: np.ndarray, params: EvaluateParams
) -> tuple[dict[str, dict[str, Interval]], dict[str, Interval], Difference]:
    """Each reader's CIs, the group mean's CIs and model minus group mean (mAP50), all on the same resamples."""
    conf, iou, level = params.operating_conf, params.iou_threshold, params.ci_level
    per_reader, points, draws = {}, [], []
    for reader, m in readers.items():
        point, resampled = _draws(m, weights, conf, iou)
        per_reader[reader] = {
            k: percentile_interval(float(point[j]), resampled[:, j], level) for j, k in enumerate(METRICS)
        }
        points.append(point)
        draws.append(resampled)
    group_point, group_draws = _nanmean(np.array(points)), _nanmean(np.array(draws))
    group = {k: percentile_interval(float(group_point[j]), group_draws[:, j], level) for j, k in enumerate(METRICS)}
    k = METRICS.index("map50")
    diff = percentile_difference(model_map50[0] - float(group_point[k]), model_map50[1] - group_draws[:, k], level)
    return per_reader, group, diff


def evaluate_set(
    name: str,
    model_boxes: pd.DataFrame,
    annotations: pd.DataFrame,
    images: pd.DataFrame,
    params: EvaluateParams,
    reference_level: str = "expert",
) -> SetEvaluation:
    """Score the model and the reader groups on the images of one test set.

    Args:
        name: e.g. "external_test".
        model_boxes: the model's predictions on these images (image_id, label, box, score).
        annotations: annotations.parquet rows of these images (all readers).
        images: images.parquet rows of these images (patient_key and subgroup columns).
        params: the evaluate section.
        reference_level: whose reads are the reference standard.
    """
    from pipelines.train.yolo_data import reference_boxes

    ids = set(images["image_id"])
    ann = annotations[annotations["image_id"].isin(ids)]
    ref = reference_boxes(ann, reference_level)
    ref = ref[["image_id", "label", "x_min", "y_min", "x_max", "y_max", "patient_key"]].reset_index(drop=True)
    patient_of = dict(zip(images["image_id"], images["patient_key"], strict=True))
    pred = model_boxes[model_boxes["image_id"].isin(ids)].reset_index(drop=True)
    model_m = match(pred, ref, patient_of)
    # One set of patient resamples for every source, so reader groups and the model-minus-group difference pair up.
    weights = resample_weights(model_m.n_patients, params.bootstrap_resamples, params.bootstrap_seed)
    model_point, model_draws = _draws(model_m, weights, params.operating_conf, params.iou_threshold)
    model_ci = {
        key: percentile_interval(float(model_point[j]), model_draws[:, j], params.ci_level)
        for j, key in enumerate(METRICS)
    }
    result = SetEvaluation(name, images["patient_key"].nunique(), len(images), model_ci)
    result.matched["model"] = model_m
    k = METRICS.index("map50")
    model_map50 = (float(model_point[k]), model_draws[:, k])
    for group in READER_GROUPS:
        reader_ids = sorted(ann.loc[ann["reader_level"] == group, "reader_id"].unique())
        if not reader_ids:
            continue
        matched: dict[str, Matched] = {}
        for reader in reader_ids:
            boxes = ann.loc[ann["reader_id"] == reader, ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]]
            m = match(boxes.reset_index(drop=True), ref, patient_of)  # no score column: a reader, every box 1.0
            if not np.array_equal(m.patient_ids, model_m.patient_ids):
                raise ValueError("readers and model must be scored on the same patients")
            matched[reader] = result.matched[reader] = m
            result.operating_points[reader] = matched_operating_points(
                model_m, m, params.operating_conf, params.iou_threshold
            )
        per_reader, result.groups[group], result.model_minus_group[group] = _reader_group(
            model_map50, matched, weights, params
        )
        result.readers.update(per_reader)
    result.subgroups = subgroup_table(pred, ref, images, params)
    return result
