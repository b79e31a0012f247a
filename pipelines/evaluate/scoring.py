"""Detection scoring: boxes matched once, then every figure (mAP50, mAP50-95, P/R, lesion sensitivity/PPV) as a
function of patient weights, so a bootstrap or jackknife resample never re-matches (CIs: uncertainty.py).

Boxes are matched to the reference once (`match`), the COCO / ultralytics way: per image and class, predictions in
descending score order each take the unclaimed reference of highest IoU, separately at each IoU threshold
0.50:0.05:0.95, and count as TP there when that IoU reaches the threshold. Every later figure is a function of the
stored TP flags, scores and reference counts, so a bootstrap resample of patients is just a weight per patient
(how many times it was drawn), equivalent to replicating its rows, and never needs a re-match.

AP is ultralytics' `compute_ap` (101-point interpolated area under the precision envelope) on ultralytics'
`ap_per_class` precision-recall curve. `compute_ap` itself takes one curve at a time, and a 2,000-resample bootstrap
of five sources on two test sets calls it 400,000 times (four minutes on a study-sized set), so `_ap_rows` does its
arithmetic (same sentinels, envelope, `np.interp`, trapezoid) for all resamples of a chunk at once; the tests check
it against `compute_ap` and the whole score against `ap_per_class` and pycocotools. One deliberate difference:
predictions that share a score form one point of the curve. `ap_per_class` breaks score ties in whatever order
`np.argsort` leaves them, so for a reader (every box scored 1.0), for duplicated boxes or for a resample that draws
a patient twice its value depends on that order; here it does not. Without ties the two are identical
(tests/unit/evaluate/test_scoring.py checks both, and the matching against pycocotools).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.contracts import CLASS_IDS, CLASS_NAMES
from pipelines.evaluate.params import IOU_THRESHOLDS

BOX_COLUMNS: tuple[str, ...] = ("x_min", "y_min", "x_max", "y_max")
BOX_FILE_COLUMNS: tuple[str, ...] = ("image_id", "label", *BOX_COLUMNS)
NUM_CLASSES = len(CLASS_NAMES)
LESION_CLASS = CLASS_IDS["compression"]  # lesion-level sensitivity / PPV are about compressed levels

# Every figure `metrics` returns, in this order (bootstrap keeps them as columns of one array).
METRICS: tuple[str, ...] = (
    "map50",
    "map50_95",
    "precision",
    "recall",
    "sensitivity",
    "ppv",
    *(f"ap50_{name}" for name in CLASS_NAMES),
    *(f"ap50_95_{name}" for name in CLASS_NAMES),
)
# Which classes each metric depends on (for subgroup "too few references" flags).
METRIC_CLASSES: dict[str, tuple[int, ...]] = {
    "map50": tuple(range(NUM_CLASSES)),
    "map50_95": tuple(range(NUM_CLASSES)),
    "precision": tuple(range(NUM_CLASSES)),
    "recall": tuple(range(NUM_CLASSES)),
    "sensitivity": (LESION_CLASS,),
    "ppv": (LESION_CLASS,),
    **{f"ap50_{name}": (i,) for i, name in enumerate(CLASS_NAMES)},
    **{f"ap50_95_{name}": (i,) for i, name in enumerate(CLASS_NAMES)},
}

READER_METRICS_NOTE = (
    "Readers mark boxes without a confidence score, so a reader is one operating point (recall r, precision p), "
    "not a curve, and a reader's mAP50 is a convention: interpolated from (recall 0, precision 1), as ultralytics "
    "does and as this report does for the model, one point scores about r(1+p)/2 per class; pycocotools "
    "interpolates without that starting point and walks tied boxes one at a time, and scores the same reads "
    "differently. mAP50 is kept because the study reports it. The like-for-like comparison is at the reader's own "
    "lesion-level (compression) operating point: the model's PPV at the confidence threshold where its sensitivity "
    "reaches the reader's, and its sensitivity at the lowest threshold where its PPV still reaches the reader's, each "
    "with a paired patient-bootstrap CI and P value."
)

_RECALL_EPS = 1e-16  # as ultralytics ap_per_class: recall = tp / (n_labels + eps)
_MAX_PROBLEMS = 10  # validation errors listed before "... and N more"


class BoxFileError(ValueError):
    """A box table (predictions or reference) that cannot be scored; the message names file, row and column."""


# --------------------------------------------------------------------------------------------------- validation
def validate_boxes(
    frame: pd.DataFrame, where: str, *, scored: bool = False, line_offset: int | None = None
) -> pd.DataFrame:
    """Check a box table and return it clean: image_id (str), label, class_id, x_min..y_max, score, [patient_key].

    Args:
        frame: `image_id, label, x_min, y_min, x_max, y_max`, optional `score` and `patient_key`.
        where: what to call the table in errors (a file name).
        scored: a prediction table: `score` is read (absent: a reader, every box 1.0) and must lie in [0, 1].
        line_offset: file line of the first data row (2 for a CSV with a header); None names frame rows instead.

    Raises:
        BoxFileError: listing each problem with its row (or line) and column.
    """
    missing = [c for c in BOX_FILE_COLUMNS if c not in frame.columns]
    if missing:
        expected = ", ".join(BOX_FILE_COLUMNS) + (" [, score]" if scored else "")
        raise BoxFileError(f"{where}: missing column(s) {', '.join(missing)} (expected {expected})")
    n = len(frame)
    problems: list[str] = []
    count = 0

    def at(pos: int) -> str:
        return f"line {pos + line_offset}" if line_offset is not None else f"row {frame.index[pos]!r}"

    def report(bad: np.ndarray, text: Callable[[int], str]) -> None:
        nonlocal count
        positions = np.flatnonzero(bad)
        count += positions.size
        for pos in positions[: max(0, _MAX_PROBLEMS - len(problems))]:
            problems.append(f"{at(int(pos))}, {text(int(pos))}")

    ids = frame["image_id"]
    report((ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy(), lambda p: "column 'image_id': empty")
    labels = frame["label"]
    known = labels.notna().to_numpy() & labels.astype(str).isin(tuple(CLASS_IDS)).to_numpy()
    allowed = ", ".join(CLASS_NAMES)
    report(~known, lambda p: f"column 'label': unknown label {labels.iloc[p]!r} (expected one of {allowed})")

    numeric = [*BOX_COLUMNS, *(["score"] if scored and "score" in frame.columns else [])]
    values: dict[str, np.ndarray] = {}
    for col in numeric:
        num = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        values[col] = num
        raw = frame[col]
        report(~np.isfinite(num), lambda p, c=col, r=raw: f"column '{c}': {r.iloc[p]!r} is not a finite number")
    for lo, hi in (("x_min", "x_max"), ("y_min", "y_max")):
        with np.errstate(invalid="ignore"):
            bad = values[hi] <= values[lo]
        report(bad, lambda p, a=lo, b=hi: f"column '{b}': {b} ({values[b][p]:g}) <= {a} ({values[a][p]:g})")
    if "score" in values:
        with np.errstate(invalid="ignore"):
            bad = (values["score"] < 0) | (values["score"] > 1)
        report(bad, lambda p: f"column 'score': {values['score'][p]:g} is outside [0, 1]")
    if "patient_key" in frame.columns:
        keys = frame["patient_key"]
        report((keys.isna() | (keys.astype(str).str.strip() == "")).to_numpy(), lambda p: "column 'patient_key': empty")
    if count:
        more = f"\n  ... and {count - len(problems)} more" if count > len(problems) else ""
        raise BoxFileError(f"{where}: {count} problem(s):\n  " + "\n  ".join(problems) + more)

    out = pd.DataFrame(
        {
            "image_id": ids.astype(str).to_numpy(),
            "label": labels.astype(str).to_numpy(),
            "class_id": labels.astype(str).map(CLASS_IDS).to_numpy(dtype=np.int64) if n else np.zeros(0, np.int64),
            **{c: values[c] for c in BOX_COLUMNS},
            "score": values["score"] if "score" in values else np.ones(n),
        }
    )
    if "patient_key" in frame.columns:
        out["patient_key"] = frame["patient_key"].astype(str).to_numpy()
    return out


# ----------------------------------------------------------------------------------------------------- matching
@dataclass(frozen=True, eq=False)
class Matched:
    """The one-time matching of predictions to references, everything a score or a resample needs.

    Predictions are stored sorted by image, class, descending score (ties in input order, as COCO).

    Attributes:
        image_ids: (I,) image ids, sorted.
        patient_ids: (P,) patient keys, sorted (the bootstrap's clusters).
        image_patient: (I,) patient index of each image.
        ref_counts: (I, C) reference boxes per image and class.
        pred_image: (N,) image index of each prediction.
        pred_class: (N,) class id.
        pred_score: (N,) confidence (1.0 for a reader).
        pred_tp: (N, 10) TP flag at each IoU threshold 0.50:0.95.
        pred_row: (N,) position of each prediction in the table given to `match`.
    """

    image_ids: np.ndarray
    patient_ids: np.ndarray
    image_patient: np.ndarray
    ref_counts: np.ndarray
    pred_image: np.ndarray
    pred_class: np.ndarray
    pred_score: np.ndarray
    pred_tp: np.ndarray
    pred_row: np.ndarray

    @property
    def n_images(self) -> int:
        """Images scored (with a reference or a prediction)."""
        return int(self.image_ids.size)

    @property
    def n_patients(self) -> int:
        """Clusters resampled by the bootstrap."""
        return int(self.patient_ids.size)

    @property
    def n_predictions(self) -> int:
        """Predicted boxes."""
        return int(self.pred_score.size)

    @property
    def n_references(self) -> dict[str, int]:
        """Reference boxes per class name."""
        totals = self.ref_counts.sum(0)
        return {name: int(totals[i]) for i, name in enumerate(CLASS_NAMES)}

    @functools.cached_property
    def pred_patient(self) -> np.ndarray:
        """(N,) patient index of each prediction."""
        return self.image_patient[self.pred_image]

    @functools.cached_property
    def patient_ref_counts(self) -> np.ndarray:
        """(P, C) reference boxes per patient and class."""
        out = np.zeros((self.n_patients, NUM_CLASSES))
        np.add.at(out, self.image_patient, self.ref_counts)
        return out

    @functools.cached_property
    def curves(self) -> tuple[_ClassCurve, ...]:
        """Per class: predictions in descending score order with their tie groups (computed once)."""
        return tuple(_ClassCurve.build(self, c) for c in range(NUM_CLASSES))

    def subset(self, images: np.ndarray) -> Matched:
        """The same matching restricted to some images (a boolean mask over `image_ids`); exact, as matching is
        per image."""
        keep = np.asarray(images, dtype=bool)
        new_index = np.cumsum(keep) - 1
        patients, image_patient = np.unique(self.image_patient[keep], return_inverse=True)
        rows = keep[self.pred_image]
        return Matched(
            image_ids=self.image_ids[keep],
            patient_ids=self.patient_ids[patients],
            image_patient=image_patient.astype(np.int64),
            ref_counts=self.ref_counts[keep],
            pred_image=new_index[self.pred_image[rows]],
            pred_class=self.pred_class[rows],
            pred_score=self.pred_score[rows],
            pred_tp=self.pred_tp[rows],
            pred_row=self.pred_row[rows],
        )


@dataclass(frozen=True)
class _ClassCurve:
    """One class's predictions in descending score order, split into groups of equal score."""

    score: np.ndarray  # (n,) descending
    patient: np.ndarray  # (n,) patient index
    tp: np.ndarray  # (n, 10) float
    starts: np.ndarray  # (g,) first row of each equal-score group
    group_score: np.ndarray  # (g,) the group's score

    @classmethod
    def build(cls, m: Matched, c: int) -> _ClassCurve:
        rows = np.flatnonzero(m.pred_class == c)
        rows = rows[np.argsort(-m.pred_score[rows], kind="stable")]
        score = m.pred_score[rows]
        starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]]) if score.size else np.zeros(0, np.int64)
        return cls(score, m.pred_patient[rows], m.pred_tp[rows].astype(float), starts, score[starts])

    @property
    def has_ties(self) -> bool:
        return self.starts.size < self.score.size

    def grouped(self, w_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted (boxes, TP boxes per threshold, score) per equal-score group, groups of zero weight dropped."""
        if self.score.size == 0:
            return np.zeros(0), np.zeros((0, IOU_THRESHOLDS.size)), np.zeros(0)
        wtp = self.tp * w_rows[:, None]
        if self.has_ties:
            n = np.add.reduceat(w_rows, self.starts)
            tp = np.add.reduceat(wtp, self.starts, axis=0)
            score = self.group_score
        else:
            n, tp, score = w_rows, wtp, self.score
        keep = n > 0
        if keep.all():
            return n, tp, score
        return n[keep], tp[keep], score[keep]

    @functools.cached_property
    def _groups_to_last_tp(self) -> int:
        """Equal-score groups down to the last one holding a TP at any IoU threshold (0 without a TP)."""
        last_tp = np.flatnonzero(self.tp.any(1))
        return int(np.searchsorted(self.starts, last_tp[-1], side="right")) if last_tp.size else 0

    def extent(self, conf: float) -> tuple[int, int]:
        """(rows, groups) that can move any figure at operating threshold `conf`: every group down to the last one
        holding a TP at any IoU, and every group scored at or above `conf`. The groups after that are false
        positives in every resample at every threshold, below the operating point: they only lower precision
        after recall has reached its last value, under the envelope that AP integrates, so AP is the same
        without them (and an unused low-confidence tail is most of a detector's boxes at conf 0.001)."""
        if self.score.size == 0:
            return 0, 0
        groups_conf = int(np.searchsorted(-self.group_score, -conf, side="right"))
        groups = max(self._groups_to_last_tp, groups_conf)
        rows = int(self.starts[groups]) if groups < self.starts.size else int(self.score.size)
        return rows, groups

    def group_sums(self, values: np.ndarray, groups: int) -> np.ndarray:
        """(B, rows) per-box values -> (B, groups) sums per equal-score group (the first `groups` groups)."""
        if not self.has_ties:
            return values
        return np.add.reduceat(values, self.starts[:groups], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (M, 4) and (N, 4) xyxy boxes, (M, N), in float64 and without ultralytics' eps.

    Exact arithmetic matters here: integer pixel boxes often meet a threshold exactly (IoU 0.5), and pycocotools
    counts those as matches; float32 or an eps in the denominator can drop them.
    """
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def greedy_match(iou: np.ndarray) -> np.ndarray:
    """TP flags (N, 10) for predictions (columns of `iou`, (M, N), already in descending score order).

    At each threshold, each prediction in turn takes the still-unclaimed reference with the highest IoU, and is a
    TP if that IoU reaches the threshold (ultralytics `match_predictions`, COCOeval `evaluateImg`).
    """
    n_ref, n_pred = iou.shape
    thresholds = IOU_THRESHOLDS
    cols = np.arange(thresholds.size)
    correct = np.zeros((n_pred, thresholds.size), dtype=bool)
    if n_ref == 0 or n_pred == 0:
        return correct
    claimed = np.zeros((n_ref, thresholds.size), dtype=bool)
    for j in np.flatnonzero((iou >= thresholds[0]).any(0)):
        available = np.where(claimed, -1.0, iou[:, j, None])
        best = available.argmax(0)
        hit = available[best, cols] >= thresholds
        correct[j] = hit
        claimed[best[hit], cols[hit]] = True
    return correct


def match(pred: pd.DataFrame, ref: pd.DataFrame, patient_of: Mapping[str, str] | None = None) -> Matched:
    """Match predicted boxes to reference boxes once, at the 10 IoU thresholds.

    Args:
        pred: `image_id, label, x_min, y_min, x_max, y_max[, score]` (no score: a reader, every box 1.0).
        ref: the reference standard, same columns (score ignored).
        patient_of: image_id -> patient key, the bootstrap's clusters; None makes each image its own cluster.

    Returns:
        The matching over every image that has a reference or a prediction.

    Raises:
        BoxFileError: a malformed table.
        ValueError: an image with no patient in `patient_of`.
    """
    p = validate_boxes(pred, "predictions", scored=True)
    r = validate_boxes(ref, "reference")
    image_ids = np.array(sorted(set(r["image_id"]) | set(p["image_id"])), dtype=object)
    index = pd.Series(np.arange(image_ids.size), index=image_ids)
    if patient_of is None:
        keys = image_ids.astype(str)
    else:
        lost = [i for i in image_ids if i not in patient_of]
        if lost:
            raise ValueError(f"{len(lost)} image(s) have no patient in patient_of, e.g. {lost[:3]}")
        keys = np.array([str(patient_of[i]) for i in image_ids], dtype=object)
    patient_ids, image_patient = np.unique(keys, return_inverse=True)

    r_img = index.loc[r["image_id"]].to_numpy() if len(r) else np.zeros(0, np.int64)
    r_cls = r["class_id"].to_numpy()
    ref_counts = np.zeros((image_ids.size, NUM_CLASSES), dtype=np.int64)
    np.add.at(ref_counts, (r_img, r_cls), 1)

    p_img = index.loc[p["image_id"]].to_numpy() if len(p) else np.zeros(0, np.int64)
    p_cls, p_score = p["class_id"].to_numpy(), p["score"].to_numpy()
    # Sort by image, class, descending score; lexsort is stable, so equal scores keep input order (as COCO).
    order = np.lexsort((-p_score, p_cls, p_img))
    p_key = (p_img * NUM_CLASSES + p_cls)[order]
    p_box = p[list(BOX_COLUMNS)].to_numpy(dtype=float)[order]
    r_order = np.lexsort((r_cls, r_img))
    r_key = (r_img * NUM_CLASSES + r_cls)[r_order]
    r_box = r[list(BOX_COLUMNS)].to_numpy(dtype=float)[r_order]

    tp = np.zeros((p_key.size, IOU_THRESHOLDS.size), dtype=bool)
    groups, starts = np.unique(p_key, return_index=True)
    ends = np.append(starts[1:], p_key.size) if starts.size else starts
    r_starts = np.searchsorted(r_key, groups, "left")
    r_ends = np.searchsorted(r_key, groups, "right")
    for s, e, rs, re_ in zip(starts, ends, r_starts, r_ends, strict=True):
        if re_ > rs:
            tp[s:e] = greedy_match(box_iou(r_box[rs:re_], p_box[s:e]))
    return Matched(
        image_ids=image_ids,
        patient_ids=patient_ids.astype(object),
        image_patient=image_patient.astype(np.int64),
        ref_counts=ref_counts,
        pred_image=p_img[order],
        pred_class=p_cls[order],
        pred_score=p_score[order],
        pred_tp=tp,
        pred_row=order,
    )


# ------------------------------------------------------------------------------------------------------ metrics
_AP_X = np.linspace(0.0, 1.0, 101)  # ultralytics compute_ap's 101 recall points (COCO)


def _ap_rows(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """ultralytics `compute_ap` for each row of (B, g) recall / precision curves, in one pass but the interpolation.

    The same sentinels, precision envelope and 101-point `np.interp` as `compute_ap` (checked against it in the
    tests); the per-row `np.interp` stays a loop, as numpy has no batched form, but it is the only one.
    """
    b = recall.shape[0]
    mrec = np.concatenate([np.zeros((b, 1)), recall, recall[:, -1:], np.ones((b, 1))], axis=1)
    mpre = np.concatenate([np.ones((b, 1)), precision, np.zeros((b, 2))], axis=1)
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre, axis=1), axis=1), axis=1)
    curve = np.empty((b, _AP_X.size))
    for i in range(b):
        curve[i] = np.interp(_AP_X, mrec[i], mpre[i])
    return np.trapezoid(curve, _AP_X, axis=1)


def pr_curve(m: Matched, class_id: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of one class at one IoU: (recall, precision, score threshold), one point per distinct
    score in descending order. A reader (every box 1.0) is a single point."""
    curve = m.curves[class_id]
    n_ref = float(m.patient_ref_counts[:, class_id].sum())
    n, tp, score = curve.grouped(np.ones(curve.score.size))
    if n.size == 0 or n_ref <= 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    tpc = tp[:, iou_index_of(iou)].cumsum()
    return tpc / n_ref, tpc / n.cumsum(), score


def _patient_weights(m: Matched, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones(m.n_patients)
    w = np.asarray(weights, dtype=float)
    if w.shape != (m.n_patients,) or (w < 0).any():
        raise ValueError(f"weights must be {m.n_patients} non-negative numbers (one per patient), got {w.shape}")
    return w


# Resamples scored together: bounds the (resamples x predictions) arrays to a few MB each.
_CELLS_PER_CHUNK = 2_000_000


def score_resamples(
    m: Matched, weights: np.ndarray, conf: float, iou_index: int, ap50_only: bool = False
) -> np.ndarray:
    """Every figure in METRICS for each row of `weights` (B, P): (B, len(METRICS)); the bootstrap's inner loop.

    All resamples of a chunk are scored with array operations over (resamples x predictions): weighted counts per
    equal-score group, cumulative TP and box counts, precision and recall, then AP as ultralytics' `compute_ap`.
    A group of zero weight (its patients not drawn) repeats the previous curve point, which leaves AP unchanged,
    and before any weighted box the curve sits at recall 0, precision 1, the sentinel's own point, so no resample
    needs a curve of its own length. `ap50_only` skips AP at IoU 0.55-0.95 (mAP50-95 figures come back NaN).
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if weights.shape[0] == 0:
        return np.zeros((0, len(METRICS)))
    longest = max([c.extent(conf)[0] for c in m.curves] + [1])
    step = max(1, _CELLS_PER_CHUNK // longest)
    return np.concatenate(
        [_score_chunk(m, weights[i : i + step], conf, iou_index, ap50_only) for i in range(0, len(weights), step)]
    )


def _score_chunk(m: Matched, w: np.ndarray, conf: float, iou_index: int, ap50_only: bool) -> np.ndarray:
    b = w.shape[0]
    n_ref = w @ m.patient_ref_counts  # (B, C)
    thresholds = [0] if ap50_only else list(range(IOU_THRESHOLDS.size))
    ap = np.full((b, NUM_CLASSES, IOU_THRESHOLDS.size), np.nan)
    precision = np.full((b, NUM_CLASSES), np.nan)
    recall = np.full((b, NUM_CLASSES), np.nan)
    for c, curve in enumerate(m.curves):
        has_ref = n_ref[:, c] > 0
        rows, n_groups = curve.extent(conf)
        if n_groups == 0:  # no box of this class: AP 0 and recall 0 where there are references
            ap[:, c, thresholds] = np.where(has_ref, 0.0, np.nan)[:, None]
            recall[:, c] = np.where(has_ref, 0.0, np.nan)
            continue
        w_rows = w[:, curve.patient[:rows]]
        n_cum = curve.group_sums(w_rows, n_groups).cumsum(1)  # (B, g) boxes at or above each group's score
        # Operating point: greedy matching in score order means the boxes at or above `conf` are matched exactly
        # as if the others did not exist, so their stored flags are the thresholded detector's.
        k = int(np.searchsorted(-curve.group_score[:n_groups], -conf, side="right"))
        for t in sorted({*thresholds, iou_index}):
            tp_cum = curve.group_sums(w_rows * curve.tp[:rows, t], n_groups).cumsum(1)
            if t == iou_index:
                n_above = n_cum[:, k - 1] if k else np.zeros(b)
                tp_above = tp_cum[:, k - 1] if k else np.zeros(b)
                with np.errstate(invalid="ignore", divide="ignore"):
                    precision[:, c] = np.where(n_above > 0, tp_above / n_above, np.nan)
                    recall[:, c] = np.where(has_ref, tp_above / n_ref[:, c], np.nan)
            if t not in thresholds:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                prec = np.where(n_cum > 0, tp_cum / n_cum, 1.0)
            rec = tp_cum / (n_ref[:, c : c + 1] + _RECALL_EPS)
            values = _ap_rows(rec, prec)
            values[n_cum[:, -1] == 0] = 0.0  # references but no drawn box: AP 0 (compute_ap of an empty curve)
            ap[:, c, t] = np.where(has_ref, values, np.nan)
    present = n_ref > 0  # (B, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no reference at all: NaN, as before
        # Class means over classes with references (ultralytics / COCO); a class with references but no boxes
        # above `conf` counts precision 0 there (ultralytics' convention), while its own PPV stays undefined.
        mean_p = np.nanmean(np.where(present, np.nan_to_num(precision, nan=0.0), np.nan), axis=1)
        mean_r = np.nanmean(np.where(present, recall, np.nan), axis=1)
        map50 = np.nanmean(np.where(present, ap[:, :, 0], np.nan), axis=1)
        map50_95 = np.nanmean(np.where(present[:, :, None], ap, np.nan).reshape(b, -1), axis=1)
        per_class_95 = ap.mean(2)
    if ap50_only:
        map50_95[:] = np.nan
    return np.column_stack(
        [map50, map50_95, mean_p, mean_r, recall[:, LESION_CLASS], precision[:, LESION_CLASS], ap[:, :, 0],
         per_class_95]
    )  # fmt: skip


def _score(m: Matched, w: np.ndarray, conf: float, iou_index: int, ap50_only: bool = False) -> np.ndarray:
    """`score_resamples` for one weight vector."""
    return score_resamples(m, w[None, :], conf, iou_index, ap50_only)[0]


def metrics(m: Matched, weights: np.ndarray | None = None, conf: float = 0.25, iou: float = 0.5) -> dict[str, float]:
    """Score a matching, optionally with patient weights (a bootstrap resample: times each patient is drawn).

    Args:
        m: from `match`.
        weights: (P,) non-negative weight per patient, same order as `m.patient_ids`; None = each once.
        conf: operating confidence threshold for precision, recall, sensitivity and PPV (boxes with score >= conf).
        iou: IoU threshold of the operating point (one of 0.50:0.05:0.95).

    Returns:
        METRICS -> value; NaN where undefined (e.g. AP of a class without references, PPV with no compression box).
        map50, map50_95, precision and recall average the classes that have references (a class with references
        but no box at or above `conf` counts precision 0 there, as ultralytics does).
    """
    values = _score(m, _patient_weights(m, weights), conf, iou_index_of(iou))
    return {k: float(v) for k, v in zip(METRICS, values, strict=True)}


def iou_index_of(iou: float) -> int:
    hits = np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou, atol=1e-9))
    if hits.size == 0:
        raise ValueError(f"iou must be one of {np.round(IOU_THRESHOLDS, 2).tolist()}, got {iou}")
    return int(hits[0])


# ---------------------------------------------------------------------------------------------------- bootstrap
def resample_weights(n_patients: int, resamples: int, seed: int) -> np.ndarray:
    """(B, P) draw counts: each row is one bootstrap resample of the patients (with replacement)."""
    rng = np.random.default_rng(seed)
    if n_patients == 0:
        return np.zeros((resamples, 0))
    draws = rng.integers(0, n_patients, size=(resamples, n_patients))
    flat = draws + (np.arange(resamples) * n_patients)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_patients).reshape(resamples, n_patients).astype(float)


# ---------------------------------------------------------------------------------------- matched operating points
OPERATING_POINT_KEYS: tuple[str, ...] = (
    "reader_sensitivity",
    "reader_ppv",
    "model_conf_at_reader_sensitivity",
    "model_sensitivity_at_reader_sensitivity",
    "model_ppv_at_reader_sensitivity",
    "ppv_gain_at_reader_sensitivity",
    "model_conf_at_reader_ppv",
    "model_sensitivity_at_reader_ppv",
    "model_ppv_at_reader_ppv",
    "sensitivity_gain_at_reader_ppv",
)


def _lesion_curve(m: Matched, w: np.ndarray, iou_index: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(references, thresholds, sensitivity, PPV) of the compression class at each distinct score, descending."""
    n_ref = float(w @ m.patient_ref_counts[:, LESION_CLASS])
    n, tp, score = m.curves[LESION_CLASS].grouped(w[m.curves[LESION_CLASS].patient])
    cum_tp, cum_n = tp[:, iou_index].cumsum(), n.cumsum()
    sens = cum_tp / n_ref if n_ref > 0 else np.full(score.size, np.nan)
    return n_ref, score, sens, cum_tp / cum_n  # groups of zero weight are dropped, so cum_n > 0


def same_reference(m_a: Matched, m_b: Matched) -> None:
    """Raise unless two matchings were scored against the same reference boxes of the same patients."""
    ids = np.union1d(m_a.patient_ids.astype(str), m_b.patient_ids.astype(str))
    ref_a = np.zeros((ids.size, NUM_CLASSES))
    ref_b = np.zeros((ids.size, NUM_CLASSES))
    ref_a[np.searchsorted(ids, m_a.patient_ids.astype(str))] = m_a.patient_ref_counts
    ref_b[np.searchsorted(ids, m_b.patient_ids.astype(str))] = m_b.patient_ref_counts
    if not np.array_equal(ref_a, ref_b):
        raise ValueError("paired comparison needs both sources scored against the same reference boxes and patients")


def operating_points_for(
    model: Matched, reader: Matched, w_model: np.ndarray, w_reader: np.ndarray, conf: float, iou_index: int
) -> np.ndarray:
    """OPERATING_POINT_KEYS values for one pair of patient weight vectors (each in its matching's patient order)."""
    n_ref, r_thr, r_sens, r_ppv = _lesion_curve(reader, w_reader, iou_index)
    k = int(np.searchsorted(-r_thr, -conf, side="right")) - 1  # the reader's boxes at or above conf: all, if 1.0
    # A reader who marks no compressed level has sensitivity 0 (if there are any) and no PPV.
    sens_r = r_sens[k] if k >= 0 else (0.0 if n_ref > 0 else np.nan)
    ppv_r = r_ppv[k] if k >= 0 else np.nan
    _, thr, sens, ppv = _lesion_curve(model, w_model, iou_index)
    tol = 1e-12  # float noise only: counts are integers (times integer weights)
    # Model sensitivity never falls as the threshold drops: the highest threshold reaching the reader's sensitivity.
    hit = np.flatnonzero(sens >= sens_r - tol) if np.isfinite(sens_r) else np.zeros(0, np.int64)
    at_sens = (thr[hit[0]], sens[hit[0]], ppv[hit[0]]) if hit.size else (np.nan,) * 3
    # PPV is not monotone: the lowest threshold (most sensitive) whose PPV still reaches the reader's.
    hit = np.flatnonzero(ppv >= ppv_r - tol) if np.isfinite(ppv_r) else np.zeros(0, np.int64)
    at_ppv = (thr[hit[-1]], sens[hit[-1]], ppv[hit[-1]]) if hit.size else (np.nan,) * 3
    return np.array(
        [sens_r, ppv_r, *at_sens, at_sens[2] - ppv_r, *at_ppv, at_ppv[1] - sens_r],
    )


def matched_operating_points(model: Matched, reader: Matched, conf: float = 0.25, iou: float = 0.5) -> dict[str, float]:
    """Lesion-level (compression) sensitivity and PPV of a reader and of the model at matched operating points.

    A reader's boxes (all scored 1.0) give one operating point. The model is read off its own curve there: at the
    highest confidence threshold where its sensitivity reaches the reader's (its PPV compared), and at the lowest
    where its PPV still reaches the reader's (its sensitivity compared). NaN where the model cannot reach it.

    Args:
        model: model boxes matched against the reference.
        reader: reader boxes matched against the same reference.
        conf: the reader's boxes at or above this score form its operating point (all of them when scored 1.0).
        iou: IoU threshold for a TP.

    Returns:
        OPERATING_POINT_KEYS -> value, plus `reader_operating_points` (distinct reader scores: 1 for a reader).
    """
    same_reference(model, reader)
    values = operating_points_for(
        model, reader, np.ones(model.n_patients), np.ones(reader.n_patients), conf, iou_index_of(iou)
    )
    out = {k: float(v) for k, v in zip(OPERATING_POINT_KEYS, values, strict=True)}
    out["reader_operating_points"] = float(np.unique(reader.pred_score).size)
    return out
