"""The study's evaluation on one test set: the model and each reader group against the expert reference.

Every figure comes from `uncertainty.py`'s shared parts, on one `PatientResampling` per test set:
- each source (the model, each reader) is scored once on the sample, every bootstrap resample and every
  leave-one-patient-out sample (`SourceDraws`), and its CIs come from those;
- a reader group's figure is the mean over its readers, resample by resample;
- model minus group (mAP50, the study's figure) is paired: the same resample applied to every source. Readers are
  fixed and patients random: the CI and P value are about these readers;
- the multi-reader multi-case analysis (Obuchowski-Rockette, Hillis ddf) of the same difference treats readers as a
  sample too: its CI and P value are about readers like these (mid-level physicians), not these readers;
- the like-for-like comparison, at each reader's own lesion-level operating point (the model's PPV at the reader's
  sensitivity, its sensitivity at the reader's PPV), per reader and as the group mean, with paired CIs and P values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.evaluate.intervals import Difference, Interval
from pipelines.evaluate.mrmc import MRMCResult
from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.scoring import READER_METRICS_NOTE, Matched, match
from pipelines.evaluate.uncertainty import (
    PatientResampling,
    SourceDraws,
    mrmc_model_vs_group,
    operating_point_draws,
    operating_point_figures,
    subgroup_table,
)
from pipelines.labels import reference_boxes

# Du et al. 2026 (Spine 51(9):610-621), for the side-by-side table.
STUDY = {
    "cv_map50_range": (0.917, 0.970),
    "external_map50": (0.944, 0.934, 0.953),
    "mid_map50": (0.912, 0.908, 0.919),
    "p_value": "<0.05",
}
READER_GROUPS: tuple[str, ...] = ("mid", "junior")
HEADLINE_METRIC = "map50"  # the study's figure: model minus readers and the MRMC analysis are about it

# What each comparison answers, written next to it in metrics.json and the report.
COMPARISON_NOTES = {
    "model_minus_group": (
        "Paired patient bootstrap with the readers fixed: how much better the model is than THESE readers, on "
        "patients like these."
    ),
    "mrmc": (
        "Obuchowski-Rockette with jackknife covariances over patients and Hillis's degrees of freedom, readers and "
        "patients both random: how much better the model is than readers LIKE these (the reader group sampled), on "
        "patients like these. Wider than the fixed-reader CI with few readers."
    ),
    "operating_points": (
        "Lesion-level (compression, IoU at evaluate.iou_threshold) sensitivity and PPV at each reader's own operating "
        "point, read off the model's curve; gains are model minus reader; the group row averages its readers' "
        "figures resample by resample."
    ),
}


@dataclass
class SetEvaluation:
    """Everything measured on one test set."""

    name: str
    n_patients: int
    n_images: int
    ci_method: str
    model: dict[str, Interval]
    groups: dict[str, dict[str, Interval]] = field(default_factory=dict)
    readers: dict[str, dict[str, Interval]] = field(default_factory=dict)
    reader_levels: dict[str, str] = field(default_factory=dict)
    model_minus_group: dict[str, Difference] = field(default_factory=dict)
    mrmc: dict[str, MRMCResult | str] = field(default_factory=dict)  # a str says why it was not computed
    # reader id or "group:<level>" -> OPERATING_POINT_KEYS -> Interval (gains: Difference)
    operating_points: dict[str, dict[str, Interval | Difference]] = field(default_factory=dict)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    matched: dict[str, Matched] = field(default_factory=dict)  # the one-time matchings, for curves

    def to_json(self) -> dict[str, Any]:
        """metrics.json content of this set: every leaf figure is a dict with `point` (and low/high/p_value)."""
        return {
            "n_patients": self.n_patients,
            "n_images": self.n_images,
            "ci_method": self.ci_method,
            "model": {k: v.to_dict() for k, v in self.model.items()},
            "reader_groups": {g: {k: v.to_dict() for k, v in m.items()} for g, m in self.groups.items()},
            "readers": {r: {k: v.to_dict() for k, v in m.items()} for r, m in self.readers.items()},
            "reader_levels": self.reader_levels,
            "model_minus_group": {g: d.to_dict() for g, d in self.model_minus_group.items()},
            "mrmc": {g: _mrmc_json(r) for g, r in self.mrmc.items()},
            "operating_point_comparison": {
                src: {k: v.to_dict() for k, v in figs.items()} for src, figs in self.operating_points.items()
            },
            "notes": {"reader_map50": READER_METRICS_NOTE, **COMPARISON_NOTES},
            "subgroups": self.subgroups.replace({np.nan: None}).to_dict("records"),
        }


def _mrmc_json(result: MRMCResult | str) -> dict[str, Any]:
    """The MRMC result as a leaf figure (`point` is the difference), beside its test statistic and df; or why not."""
    if isinstance(result, str):
        return {"point": None, "not_computed": result}
    out = result.to_dict()
    out["point"] = out.pop("difference")
    return out


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

    conf, iou_index, level, method = params.operating_conf, params.iou_index, params.ci_level, params.ci_method
    ids = set(images["image_id"])
    ann = annotations[annotations["image_id"].isin(ids)]
    ref = reference_boxes(ann, reference_level)
    ref = ref[["image_id", "label", "x_min", "y_min", "x_max", "y_max", "patient_key"]].reset_index(drop=True)
    patient_of = dict(zip(images["image_id"], images["patient_key"], strict=True))
    pred = model_boxes[model_boxes["image_id"].isin(ids)].reset_index(drop=True)
    model_m = match(pred, ref, patient_of)
    # Every patient of the set, whether or not it holds a box: one set of resamples for every source.
    resampling = PatientResampling.for_patients(
        images["patient_key"].astype(str).unique(), params.bootstrap_resamples, params.bootstrap_seed
    )
    model_draws = resampling.score(model_m, conf, iou_index)
    result = SetEvaluation(
        name, images["patient_key"].nunique(), len(images), method, model_draws.intervals(level, method)
    )
    result.matched["model"] = model_m
    for group in READER_GROUPS:
        reader_ids = sorted(ann.loc[ann["reader_level"] == group, "reader_id"].unique())
        if not reader_ids:
            continue
        reader_draws: list[SourceDraws] = []
        point_draws: list[SourceDraws] = []
        for reader in reader_ids:
            boxes = ann.loc[ann["reader_id"] == reader, ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]]
            m = match(boxes.reset_index(drop=True), ref, patient_of)  # no score column: a reader, every box 1.0
            result.matched[reader] = m
            result.reader_levels[reader] = group
            draws = resampling.score(m, conf, iou_index)
            reader_draws.append(draws)
            result.readers[reader] = draws.intervals(level, method)
            points = operating_point_draws(model_m, m, resampling, conf, iou_index)
            point_draws.append(points)
            result.operating_points[reader] = operating_point_figures(points, params)
        group_draws = SourceDraws.mean(reader_draws)
        result.groups[group] = group_draws.intervals(level, method)
        result.model_minus_group[group] = model_draws.minus(group_draws).difference(
            HEADLINE_METRIC, level, params.difference_ci_method
        )
        result.mrmc[group] = mrmc_model_vs_group(model_draws, reader_draws, HEADLINE_METRIC, level)
        result.operating_points[f"group:{group}"] = operating_point_figures(SourceDraws.mean(point_draws), params)
    result.subgroups = subgroup_table(pred, ref, images, params)
    return result
