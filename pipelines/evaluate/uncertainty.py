"""Uncertainty of every figure: one set of patient resamples per test set, shared by every source.

Patients are the unit (images of one patient are correlated). For one test set, `PatientResampling` holds the
bootstrap draw counts (B, P) and the leave-one-patient-out rows (P, P); `PatientResampling.score` scores a source
(the model, a reader) on the full sample, on every resample and on every jackknife sample in one batched call, as a
`SourceDraws`. Every published figure is then a function of `SourceDraws`:

- a source's CI: `SourceDraws.intervals` (BCa by default: the jackknife gives its acceleration);
- a reader group: `SourceDraws.mean` of its readers (each reader scored as the model is);
- a paired comparison: `SourceDraws.minus`, then `difference`: the same resample applied to both sources;
- lesion-level operating points matched to a reader: `operating_point_draws`, the same way;
- the multi-reader multi-case analysis: `mrmc_model_vs_group`, from the same jackknife values.

`bootstrap`, `paired_difference` and `bootstrap_operating_points` are the one-call forms used by `cordwatch score`,
the subgroup table, the tests and the benchmarks; `evaluate_set` (study.py) uses the parts, so a model's CI, its
reader groups and the difference all come from one computation per source.

mAP when a resample lacks a class: AP is averaged over the classes that have at least one reference box in that
resample (ultralytics and COCO average the classes present), so a resample that draws no compressed level scores
mAP over `normal` alone. Such resamples are kept, not dropped; per-class APs are NaN there and their CIs count only
the resamples where the class exists (`n_valid`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contracts import CLASS_NAMES
from pipelines.evaluate.intervals import (
    Difference,
    Interval,
    bca_difference,
    bca_interval,
    jackknife_weights,
    percentile_difference,
    percentile_interval,
    undefined_difference,
    undefined_interval,
)
from pipelines.evaluate.mrmc import MRMCResult, model_vs_readers
from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.scoring import (
    METRIC_CLASSES,
    METRICS,
    OPERATING_POINT_KEYS,
    Matched,
    match,
    operating_points_for,
    resample_weights,
    same_reference,
    score_resamples,
)

# Operating-point figures that compare the model with the reader (model minus reader): reported with a P value.
OPERATING_POINT_GAINS: tuple[str, ...] = ("ppv_gain_at_reader_sensitivity", "sensitivity_gain_at_reader_ppv")


# --------------------------------------------------------------------------------------------- resampled figures
@dataclass(frozen=True)
class SourceDraws:
    """A source's figures on the sample (`point`), on each bootstrap resample and on each leave-one-patient-out
    sample; columns are `keys` (METRICS, or OPERATING_POINT_KEYS)."""

    keys: tuple[str, ...]
    point: np.ndarray  # (K,)
    draws: np.ndarray  # (B, K)
    jack: np.ndarray  # (P, K)

    def column(self, key: str) -> tuple[float, np.ndarray, np.ndarray]:
        """(point, draws, jackknife values) of one figure."""
        k = self.keys.index(key)
        return float(self.point[k]), self.draws[:, k], self.jack[:, k]

    def interval(self, key: str, level: float, method: str = "bca") -> Interval:
        """One figure's CI (none for a figure undefined on the sample, see `undefined_on_sample`)."""
        point, draws, jack = self.column(key)
        if not np.isfinite(point):
            return undefined_interval(point, draws)
        if method == "percentile":
            return percentile_interval(point, draws, level)
        return bca_interval(point, draws, jack, level)

    def intervals(self, level: float, method: str = "bca") -> dict[str, Interval]:
        """Every figure's CI."""
        return {key: self.interval(key, level, method) for key in self.keys}

    def difference(self, key: str, level: float, method: str = "bca") -> Difference:
        """A difference figure (from `minus`, or a gain) with its CI and two-sided P value against 0 (neither for a
        figure undefined on the sample)."""
        point, draws, jack = self.column(key)
        if not np.isfinite(point):
            return undefined_difference(point, draws)
        if method == "percentile":
            return percentile_difference(point, draws, level)
        return bca_difference(point, draws, jack, level)

    def minus(self, other: SourceDraws) -> SourceDraws:
        """Paired difference self - other: resample by resample (both must come from one `PatientResampling`)."""
        if self.keys != other.keys or self.draws.shape != other.draws.shape or self.jack.shape != other.jack.shape:
            raise ValueError("a paired difference needs two sources scored on the same resamples")
        return SourceDraws(self.keys, self.point - other.point, self.draws - other.draws, self.jack - other.jack)

    @staticmethod
    def mean(items: Sequence[SourceDraws]) -> SourceDraws:
        """A group's figure: the mean over its members (readers), resample by resample; a figure undefined for a
        member (NaN) is averaged over the others."""
        if not items:
            raise ValueError("a group needs at least one member")
        with warnings.catch_warnings():  # a figure undefined for every member stays NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            return SourceDraws(
                items[0].keys,
                np.nanmean([i.point for i in items], axis=0),
                np.nanmean([i.draws for i in items], axis=0),
                np.nanmean([i.jack for i in items], axis=0),
            )


@dataclass(frozen=True)
class PatientResampling:
    """The patient resamples of one test set, shared by every source scored on it (so comparisons are paired).

    Attributes:
        patient_ids: (P,) patient keys, sorted as text.
        weights: (B, P) times each patient is drawn in each bootstrap resample.
        jackknife: (P, P) leave-one-patient-out weights.
    """

    patient_ids: np.ndarray
    weights: np.ndarray
    jackknife: np.ndarray

    @classmethod
    def for_patients(cls, patient_ids: Sequence[str] | np.ndarray, resamples: int, seed: int) -> PatientResampling:
        """Resamples of these patients (duplicates ignored); same seed and patients give the same resamples."""
        ids = np.unique(np.asarray(patient_ids, dtype=object).astype(str))
        return cls(ids.astype(object), resample_weights(ids.size, resamples, seed), jackknife_weights(ids.size))

    @classmethod
    def covering(cls, matchings: Sequence[Matched], params: EvaluateParams) -> PatientResampling:
        """Resamples of every patient any of these matchings scores."""
        ids = np.concatenate([np.asarray(m.patient_ids, dtype=object).astype(str) for m in matchings])
        return cls.for_patients(ids, params.bootstrap_resamples, params.bootstrap_seed)

    @property
    def n_patients(self) -> int:
        return int(self.patient_ids.size)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """(1 + B + P, P) weight rows: the sample, each bootstrap resample, each jackknife sample (built once, shared
        by every source scored on these resamples)."""
        return np.vstack([np.ones((1, self.n_patients)), self.weights, self.jackknife])

    def split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values computed on `rows`, split into (sample, bootstrap resamples, jackknife samples)."""
        b = self.weights.shape[0]
        return values[0], values[1 : 1 + b], values[1 + b :]

    def columns(self, m: Matched) -> np.ndarray:
        """Position of each of `m`'s patients among ours."""
        ids = self.patient_ids.astype(str)
        theirs = np.asarray(m.patient_ids, dtype=object).astype(str)
        idx = np.searchsorted(ids, theirs)
        idx = np.clip(idx, 0, max(ids.size - 1, 0))
        if theirs.size and (ids.size == 0 or not np.array_equal(ids[idx], theirs)):
            raise ValueError("the matching scores patients these resamples do not cover")
        return idx

    def score(self, m: Matched, conf: float, iou_index: int, ap50_only: bool = False) -> SourceDraws:
        """Every METRICS figure of `m` on the sample, each resample and each jackknife sample (one batched call)."""
        values = score_resamples(m, self.rows[:, self.columns(m)], conf, iou_index, ap50_only)
        return SourceDraws(METRICS, *self.split(values))


def operating_point_draws(
    model: Matched, reader: Matched, resampling: PatientResampling, conf: float, iou_index: int
) -> SourceDraws:
    """`matched_operating_points` (scoring.py) on the sample, each resample and each jackknife sample: each
    resample re-finds the reader's operating point and the model's matched threshold."""
    same_reference(model, reader)
    im, ir = resampling.columns(model), resampling.columns(reader)
    rows = resampling.rows
    values = np.array([operating_points_for(model, reader, w[im], w[ir], conf, iou_index) for w in rows])
    return SourceDraws(OPERATING_POINT_KEYS, *resampling.split(values.reshape(len(rows), len(OPERATING_POINT_KEYS))))


def operating_point_figures(d: SourceDraws, params: EvaluateParams) -> dict[str, Interval | Difference]:
    """CIs of every operating-point figure (`ci_method`); the model-minus-reader gains as differences with a P value
    (`difference_ci_method`)."""
    level = params.ci_level
    return {
        key: d.difference(key, level, params.difference_ci_method)
        if key in OPERATING_POINT_GAINS
        else d.interval(key, level, params.ci_method)
        for key in d.keys
    }


def mrmc_model_vs_group(
    model: SourceDraws, readers: Sequence[SourceDraws], metric: str, level: float
) -> MRMCResult | str:
    """Model minus reader-group mean with readers AND patients random (Obuchowski-Rockette, jackknife over
    patients, Hillis ddf; RJafroc's 1T-RRRC). Returns why not, as text, where it cannot be computed: fewer than two
    readers (no reader variance), or a leave-one-patient-out sample where the figure is undefined (e.g. the only
    patient with a compressed level left out, so AP of that class does not exist)."""
    if len(readers) < 2:
        return f"needs at least 2 readers, the group has {len(readers)}"
    model_point, _, model_jack = model.column(metric)
    cols = [r.column(metric) for r in readers]
    jack = np.vstack([model_jack, *(c[2] for c in cols)])
    if not np.isfinite(jack).all():
        return f"{metric} is undefined in {int((~np.isfinite(jack)).any(0).sum())} leave-one-patient-out sample(s)"
    return model_vs_readers(
        model_point, model_jack, np.array([c[0] for c in cols]), np.vstack([c[2] for c in cols]), level
    )


# ----------------------------------------------------------------------------------------------- one-call forms
def bootstrap(m: Matched, params: EvaluateParams) -> dict[str, Interval]:
    """Every metric of one source with its patient-bootstrap CI (`params.ci_method`, resamples, seed, level)."""
    resampling = PatientResampling.for_patients(m.patient_ids, params.bootstrap_resamples, params.bootstrap_seed)
    draws = resampling.score(m, params.operating_conf, params.iou_index)
    return draws.intervals(params.ci_level, params.ci_method)


def paired_difference(m_a: Matched, m_b: Matched, params: EvaluateParams, metric: str = "map50") -> Difference:
    """A minus B on one metric, with a paired patient bootstrap (the same resample applied to both sources).

    Args:
        m_a: e.g. the model, matched against the reference.
        m_b: e.g. a reader, matched against the same reference.
        params: resamples, seed, CI level and method, operating point.
        metric: a key of METRICS.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    same_reference(m_a, m_b)
    resampling = PatientResampling.covering([m_a, m_b], params)
    ap50_only = "50_95" not in metric
    a = resampling.score(m_a, params.operating_conf, params.iou_index, ap50_only)
    b = resampling.score(m_b, params.operating_conf, params.iou_index, ap50_only)
    return a.minus(b).difference(metric, params.ci_level, params.difference_ci_method)


def bootstrap_operating_points(
    model: Matched, reader: Matched, params: EvaluateParams
) -> dict[str, Interval | Difference]:
    """`matched_operating_points` with paired patient-bootstrap CIs; the two gains also get a P value."""
    resampling = PatientResampling.covering([model, reader], params)
    d = operating_point_draws(model, reader, resampling, params.operating_conf, params.iou_index)
    return operating_point_figures(d, params)


# ---------------------------------------------------------------------------------------------------- subgroups
SUBGROUP_COLUMNS: tuple[str, ...] = (
    "subgroup",
    "value",
    "n_patients",
    "n_images",
    *(f"n_refs_{name}" for name in CLASS_NAMES),
    *(f"n_patients_{name}" for name in CLASS_NAMES),
    "metric",
    "point",
    "low",
    "high",
    "n_valid",
    "too_small",
    "reason",
)


def subgroup_table(pred: pd.DataFrame, ref: pd.DataFrame, images: pd.DataFrame, params: EvaluateParams) -> pd.DataFrame:
    """Every metric with its CI overall and per value of each subgroup column (site, manufacturer, ...).

    Matches once, then scores each subgroup's slice of that matching with its own patient bootstrap. A row is
    flagged `too_small` (point and CI still given, the CI unreliable) when the subgroup has fewer than
    `min_subgroup_patients` patients, or fewer than `min_subgroup_class_patients` patients holding a reference box
    of a class the metric depends on (patients, not boxes: six levels an image, so ten compression boxes can come
    from one or two patients).

    Args:
        pred: predicted boxes (see `match`).
        ref: reference boxes.
        images: one row per image: `image_id, patient_key` and the `params.subgroups` columns.
        params: subgroups, thresholds and bootstrap settings.

    Returns:
        Long table, one row per (subgroup, value, metric), columns SUBGROUP_COLUMNS; subgroup "all" first.
    """
    needed = ["image_id", "patient_key", *params.subgroups]
    missing = [c for c in needed if c not in images.columns]
    if missing:
        raise ValueError(f"images table lacks column(s) {', '.join(missing)} needed for subgroups")
    table = images.assign(image_id=images["image_id"].astype(str)).drop_duplicates("image_id").set_index("image_id")
    m = match(pred, ref, dict(zip(table.index, table["patient_key"].astype(str), strict=True)))
    attrs = table.loc[m.image_ids]
    slices: list[tuple[str, str, np.ndarray]] = [("all", "all", np.ones(m.n_images, dtype=bool))]
    for col in params.subgroups:
        values = attrs[col].astype(object).where(attrs[col].notna(), "unknown").astype(str).to_numpy()
        slices += [(col, v, values == v) for v in sorted(set(values))]
    rows: list[dict[str, Any]] = []
    for col, value, mask in slices:
        sub = m.subset(mask)
        refs = sub.ref_counts.sum(0)
        patients_with = (sub.patient_ref_counts > 0).sum(0)
        intervals = bootstrap(sub, params)
        for metric in METRICS:
            reasons = []
            if sub.n_patients < params.min_subgroup_patients:
                reasons.append(f"{sub.n_patients} patients < {params.min_subgroup_patients}")
            for c in METRIC_CLASSES[metric]:
                if patients_with[c] < params.min_subgroup_class_patients:
                    reasons.append(
                        f"{int(patients_with[c])} patients with {CLASS_NAMES[c]} < {params.min_subgroup_class_patients}"
                    )
            iv = intervals[metric]
            rows.append(
                {
                    "subgroup": col,
                    "value": value,
                    "n_patients": sub.n_patients,
                    "n_images": sub.n_images,
                    **{f"n_refs_{name}": int(refs[i]) for i, name in enumerate(CLASS_NAMES)},
                    **{f"n_patients_{name}": int(patients_with[i]) for i, name in enumerate(CLASS_NAMES)},
                    "metric": metric,
                    "point": iv.point,
                    "low": iv.low,
                    "high": iv.high,
                    "n_valid": iv.n_valid,
                    "too_small": bool(reasons),
                    "reason": "; ".join(reasons),
                }
            )
    return pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS))
