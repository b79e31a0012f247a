"""Scoring core: mAP against ultralytics and pycocotools, bootstrap, paired differences, readers, subgroups, files."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipelines.contracts import CLASS_IDS, CLASS_NAMES
from pipelines.evaluate import (
    METRICS,
    BoxFileError,
    Difference,
    EvaluateParams,
    Interval,
    bootstrap,
    bootstrap_operating_points,
    match,
    matched_operating_points,
    metrics,
    paired_difference,
    score_files,
    subgroup_table,
)
from pipelines.evaluate.scoring import resample_weights

COLS = ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]


# ------------------------------------------------------------------------------------------------ synthetic boxes
def random_boxes(
    seed: int,
    n_images: int = 14,
    n_patients: int = 6,
    miss: float = 0.15,
    wrong_class: float = 0.1,
    fp_rate: float = 1.0,
    dup: float = 0.15,
    jitter: float = 0.15,
    integer: bool = False,
    score_decimals: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(pred, ref, patient_of): up to 6 levels an image, jittered detections, class flips, FPs and duplicates."""
    rng = np.random.default_rng(seed)
    refs, preds, patient_of = [], [], {}
    for i in range(n_images):
        image = f"im{i:03d}"
        patient_of[image] = f"pt{i % n_patients:02d}"
        for _ in range(rng.integers(0, 7)):
            x0, y0 = rng.uniform(0, 200, 2)
            w, h = rng.uniform(10, 60, 2)
            box = np.array([x0, y0, x0 + w, y0 + h])
            cls = int(rng.integers(0, 2))
            refs.append((image, CLASS_NAMES[cls], *box))
            if rng.random() < miss:
                continue
            pbox = box + rng.normal(0, jitter, 4) * [w, h, w, h]
            pcls = 1 - cls if rng.random() < wrong_class else cls
            score = rng.random()
            preds.append((image, CLASS_NAMES[pcls], *pbox, score))
            if rng.random() < dup:  # a duplicate that NMS let through, slightly moved, lower score
                preds.append((image, CLASS_NAMES[pcls], *(pbox + rng.normal(0, 1, 4)), score * rng.random()))
        for _ in range(rng.poisson(fp_rate)):
            x0, y0 = rng.uniform(0, 220, 2)
            w, h = rng.uniform(10, 60, 2)
            preds.append((image, CLASS_NAMES[int(rng.integers(0, 2))], x0, y0, x0 + w, y0 + h, rng.random()))
    ref = pd.DataFrame(refs, columns=COLS)
    pred = pd.DataFrame(preds, columns=[*COLS, "score"])
    for frame in (ref, pred):
        lo = frame[["x_min", "y_min"]].to_numpy()
        hi = np.maximum(frame[["x_max", "y_max"]].to_numpy(), lo + 2)
        if integer:
            lo, hi = np.round(lo), np.round(hi)
        frame[["x_min", "y_min"]], frame[["x_max", "y_max"]] = lo, hi
    if score_decimals is not None:
        pred["score"] = pred["score"].round(score_decimals)
    return pred, ref, patient_of


# ------------------------------------------------------------------------------------------- reference implementations
def ultralytics_reference(pred: pd.DataFrame, ref: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """AP (classes with references, 10 thresholds) and those classes, by ultralytics' own box_iou,
    DetectionValidator.match_predictions and ap_per_class, per image as its validator does."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    validator = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    tps, confs, pred_cls, target_cls = [], [], [], []
    for image in sorted(set(pred["image_id"]) | set(ref["image_id"])):
        p = pred[pred["image_id"] == image]
        p = p.iloc[np.argsort(-p["score"].to_numpy(), kind="stable")]  # NMS output order: descending confidence
        r = ref[ref["image_id"] == image]
        rc = torch.tensor(r["label"].map(CLASS_IDS).to_numpy(dtype=np.int64))
        target_cls.append(rc.numpy())
        if not len(p):
            continue
        pc = torch.tensor(p["label"].map(CLASS_IDS).to_numpy(dtype=np.int64))
        if len(r):
            iou = box_iou(torch.tensor(r[COLS[2:]].to_numpy()), torch.tensor(p[COLS[2:]].to_numpy()))
            tps.append(BaseValidator.match_predictions(validator, pc, rc, iou).numpy())
        else:
            tps.append(np.zeros((len(p), 10), dtype=bool))
        confs.append(p["score"].to_numpy())
        pred_cls.append(pc.numpy())
    tp = np.concatenate(tps) if tps else np.zeros((0, 10), dtype=bool)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pcls = np.concatenate(pred_cls) if pred_cls else np.zeros(0)
    out = ap_per_class(tp, conf, pcls, np.concatenate(target_cls) if target_cls else np.zeros(0))
    return out[5], out[6]


def coco_reference(pred: pd.DataFrame, ref: pd.DataFrame) -> tuple[np.ndarray, float, float]:
    """pycocotools: (TP flags (N, 10) in pred row order, mAP50, mAP50-95); COCO interpolates AP its own way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = {k: i + 1 for i, k in enumerate(sorted(set(pred["image_id"]) | set(ref["image_id"])))}

    def xywh(row: pd.Series) -> list[float]:
        return [row.x_min, row.y_min, row.x_max - row.x_min, row.y_max - row.y_min]

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in images.values()],
        "categories": [{"id": c + 1, "name": n} for c, n in enumerate(CLASS_NAMES)],
        "annotations": [
            {"id": k + 1, "image_id": images[row.image_id], "category_id": CLASS_IDS[row.label] + 1,
             "bbox": xywh(row), "area": xywh(row)[2] * xywh(row)[3], "iscrowd": 0}
            for k, row in enumerate(ref.itertuples())
        ],
    }  # fmt: skip
    dets = [
        {"image_id": images[row.image_id], "category_id": CLASS_IDS[row.label] + 1, "bbox": xywh(row),
         "score": row.score}
        for row in pred.itertuples()
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)  # detection ids = row + 1
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 10_000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    flags = np.zeros((len(pred), 10), dtype=bool)
    for e in ev.evalImgs:
        if e is not None:
            for d, det_id in enumerate(e["dtIds"]):
                flags[det_id - 1] = e["dtMatches"][:, d] > 0
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K); -1 where a class has no references
    return flags, precision[0][precision[0] > -1].mean(), precision[precision > -1].mean()


def flags_by_row(m, n_rows: int) -> np.ndarray:
    out = np.zeros((n_rows, 10), dtype=bool)
    out[m.pred_row] = m.pred_tp
    return out


def assert_same(a: dict[str, float], b: dict[str, float], tol: float = 1e-12) -> None:
    for key in a:
        assert (np.isnan(a[key]) and np.isnan(b[key])) or abs(a[key] - b[key]) <= tol, (key, a[key], b[key])


# ------------------------------------------------------------------------------------------------- mAP correctness
@pytest.mark.parametrize("seed", range(6))
def test_map_equals_ultralytics_on_random_boxes(seed):
    pred, ref, patient_of = random_boxes(seed, n_images=20)
    got = metrics(match(pred, ref, patient_of))
    ap, classes = ultralytics_reference(pred, ref)
    assert got["map50"] == pytest.approx(ap[:, 0].mean(), abs=1e-12)
    assert got["map50_95"] == pytest.approx(ap.mean(), abs=1e-12)
    for row, c in enumerate(classes):
        assert got[f"ap50_{CLASS_NAMES[c]}"] == pytest.approx(ap[row, 0], abs=1e-12)
        assert got[f"ap50_95_{CLASS_NAMES[c]}"] == pytest.approx(ap[row].mean(), abs=1e-12)


def _edge_case(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = pd.DataFrame(
        [("a", "normal", 10, 10, 50, 30), ("a", "compression", 10, 40, 50, 60), ("a", "normal", 10, 70, 50, 90),
         ("b", "normal", 12, 10, 52, 30), ("b", "compression", 12, 40, 52, 62), ("c", "normal", 0, 0, 30, 30)],
        columns=COLS,
    )  # fmt: skip
    correct = ref.assign(score=np.linspace(0.9, 0.4, len(ref)), x_max=ref["x_max"] + 2.0)
    empty = pd.DataFrame(columns=[*COLS, "score"])
    swap = {"normal": "compression", "compression": "normal"}
    cases = {
        "no_predictions": (empty, ref),
        "no_references": (correct, pd.DataFrame(columns=COLS)),
        "duplicate_boxes": (pd.concat([correct, correct.assign(score=correct["score"] - 0.05)]), ref),
        "class_absent_in_reference": (correct, ref[ref["label"] == "normal"]),
        "class_absent_in_predictions": (correct[correct["label"] == "normal"], ref),
        "class_absent_everywhere": (correct[correct["label"] == "normal"], ref[ref["label"] == "normal"]),
        "all_correct": (correct, ref),
        "all_wrong_class": (correct.assign(label=correct["label"].map(swap)), ref),
        "all_wrong_place": (correct.assign(y_min=correct["y_min"] + 200, y_max=correct["y_max"] + 200), ref),
        "image_without_reference": (
            pd.concat([correct, correct.assign(image_id="z", score=correct["score"] - 0.01)]),
            ref,
        ),
    }
    return cases[name]


@pytest.mark.parametrize(
    "case",
    ["no_predictions", "no_references", "duplicate_boxes", "class_absent_in_reference", "class_absent_in_predictions",
     "class_absent_everywhere", "all_correct", "all_wrong_class", "all_wrong_place", "image_without_reference"],
)  # fmt: skip
def test_map_equals_ultralytics_on_edge_cases(case):
    pred, ref = _edge_case(case)
    got = metrics(match(pred, ref))
    ap, _ = ultralytics_reference(pred, ref)
    if len(ap) == 0:  # no references: AP is undefined (ultralytics' DetMetrics prints 0.0, COCO -1)
        assert np.isnan(got["map50"]) and np.isnan(got["map50_95"])
        return
    assert got["map50"] == pytest.approx(ap[:, 0].mean(), abs=1e-12)
    assert got["map50_95"] == pytest.approx(ap.mean(), abs=1e-12)
    expected = {"all_correct": 0.995, "all_wrong_class": 0.0, "all_wrong_place": 0.0, "no_predictions": 0.0}
    if case in expected:  # 0.995, not 1: ultralytics' interpolation closes the curve at recall 1 with precision 0
        assert got["map50"] == pytest.approx(expected[case], abs=1e-9)


@pytest.mark.parametrize(
    ("seed", "integer", "decimals", "tol"),
    [(0, False, None, 0.003), (1, False, None, 0.003), (2, True, None, 0.003), (3, True, 1, 0.03), (4, False, 2, 0.03)],
)
def test_matching_equals_pycocotools(seed, integer, decimals, tol):
    """TP flags equal COCOeval's dtMatches, also with integer boxes (IoU exactly on a threshold) and tied scores."""
    pytest.importorskip("pycocotools")
    pred, ref, patient_of = random_boxes(seed, n_images=25, integer=integer, score_decimals=decimals)
    m = match(pred, ref, patient_of)
    flags, map50, map50_95 = coco_reference(pred, ref)
    assert np.array_equal(flags_by_row(m, len(pred)), flags)
    got = metrics(m)
    # Same matches; AP differs by interpolation only (COCO: precision at 101 recall steps; ultralytics: trapezoid),
    # about 0.001, and more with tied scores, which COCO walks in input order and we take as one point.
    assert got["map50"] == pytest.approx(map50, abs=tol)
    assert got["map50_95"] == pytest.approx(map50_95, abs=tol)


def test_iou_exactly_on_threshold_counts():
    ref = pd.DataFrame([("a", "normal", 0, 0, 20, 10)], columns=COLS)
    pred = pd.DataFrame([("a", "normal", 0, 0, 10, 10, 0.9)], columns=[*COLS, "score"])  # IoU = 100 / 200
    m = match(pred, ref)
    assert m.pred_tp[0].tolist() == [True] + [False] * 9
    if importlib.util.find_spec("pycocotools"):
        assert np.array_equal(m.pred_tp, coco_reference(pred, ref)[0])


def test_tied_scores_form_one_operating_point():
    """A reader (every box 1.0): AP is ultralytics' compute_ap on its single (recall, precision) point, whatever
    the row order (ap_per_class would depend on how argsort orders the ties)."""
    from ultralytics.utils.metrics import compute_ap

    pred, ref, patient_of = random_boxes(7, n_images=30)
    reader = pred.drop(columns="score")
    m = match(reader, ref, patient_of)
    got = metrics(m)
    for c, name in enumerate(CLASS_NAMES):
        rows = m.pred_class == c
        tp, n, n_ref = m.pred_tp[rows, 0].sum(), rows.sum(), m.ref_counts[:, c].sum()
        expected = compute_ap(np.array([tp / (n_ref + 1e-16)]), np.array([tp / n]))[0]
        assert got[f"ap50_{name}"] == pytest.approx(expected, abs=1e-12)
    shuffled = reader.sample(frac=1.0, random_state=3)
    assert_same(got, metrics(match(shuffled, ref, patient_of)))


def test_operating_point_counts():
    pred, ref, patient_of = random_boxes(3, n_images=30)
    m = match(pred, ref, patient_of)
    got = metrics(m, conf=0.4)
    lesion = (m.pred_class == CLASS_IDS["compression"]) & (m.pred_score >= 0.4)
    assert got["ppv"] == pytest.approx(m.pred_tp[lesion, 0].mean())
    assert got["sensitivity"] == pytest.approx(m.pred_tp[lesion, 0].sum() / m.ref_counts[:, 1].sum())
    # TP flags of the boxes above a threshold are those of a detector that only output those boxes.
    above = metrics(match(pred[pred["score"] >= 0.4], ref, patient_of), conf=0.4)
    for key in ("precision", "recall", "sensitivity", "ppv"):
        assert got[key] == pytest.approx(above[key], abs=1e-12)


# ------------------------------------------------------------------------------------------------------- bootstrap
def replicate(pred, ref, patient_of, patients: np.ndarray, counts: np.ndarray):
    """The explicit resample: each patient's images copied `count` times under new ids."""
    preds, refs, owner = [], [], {}
    for patient, k in zip(patients, counts, strict=True):
        images = [i for i, p in patient_of.items() if p == patient]
        for copy in range(int(k)):
            rename = {i: f"{i}~{copy}" for i in images}
            preds.append(pred[pred["image_id"].isin(images)].assign(image_id=lambda d, r=rename: d["image_id"].map(r)))
            refs.append(ref[ref["image_id"].isin(images)].assign(image_id=lambda d, r=rename: d["image_id"].map(r)))
            owner.update({new: f"{patient}~{copy}" for new in rename.values()})
    return pd.concat(preds), pd.concat(refs), owner


@pytest.mark.parametrize(("seed", "reader"), [(0, False), (1, False), (2, True)])
def test_weights_equal_explicit_replication(seed, reader):
    pred, ref, patient_of = random_boxes(seed, n_images=24, n_patients=9, score_decimals=None if seed else 1)
    if reader:
        pred = pred.drop(columns="score")
    m = match(pred, ref, patient_of)
    for w in resample_weights(m.n_patients, 4, seed):
        big = match(*replicate(pred, ref, patient_of, m.patient_ids, w))
        for conf in (0.0, 0.25, 0.6):
            assert_same(metrics(m, w, conf=conf), metrics(big, conf=conf), tol=1e-12)


def test_bootstrap_deterministic_and_contains_point():
    pred, ref, patient_of = random_boxes(5, n_images=40, n_patients=20)
    m = match(pred, ref, patient_of)
    params = EvaluateParams(bootstrap_resamples=300, bootstrap_seed=11)
    first, again = bootstrap(m, params), bootstrap(m, params)
    assert first == again
    other = bootstrap(m, params.model_copy(update={"bootstrap_seed": 12}))
    assert other["map50"] != first["map50"]
    point = metrics(m)
    for key in METRICS:
        iv = first[key]
        assert isinstance(iv, Interval) and iv.point == pytest.approx(point[key])
        assert iv.low <= iv.point <= iv.high, key
        assert iv.n_valid == 300


def test_patient_clustering_moves_images_together():
    """Four images per patient, all read well or all badly: resampling images pretends there is more
    independent information than there is, so its CI is much narrower than the patient bootstrap's."""
    rng = np.random.default_rng(0)
    refs, preds, patient_of = [], [], {}
    for p in range(24):
        good = p % 2 == 0
        for k in range(4):
            image = f"p{p}i{k}"
            patient_of[image] = f"p{p}"
            for lv in range(6):
                box = (10, 10 + 30 * lv, 50, 30 + 30 * lv)
                refs.append((image, "compression" if lv % 3 == 0 else "normal", *box))
                if good or lv < 2:
                    preds.append((image, refs[-1][1], *box, rng.uniform(0.3, 1)))
    pred, ref = pd.DataFrame(preds, columns=[*COLS, "score"]), pd.DataFrame(refs, columns=COLS)
    params = EvaluateParams(bootstrap_resamples=400)
    by_patient = bootstrap(match(pred, ref, patient_of), params)["recall"]
    by_image = bootstrap(match(pred, ref, None), params)["recall"]
    assert by_patient.point == by_image.point
    assert (by_patient.high - by_patient.low) > 1.5 * (by_image.high - by_image.low)


def test_subset_equals_matching_the_subset():
    pred, ref, patient_of = random_boxes(3, n_images=30, n_patients=10)
    m = match(pred, ref, patient_of)
    keep = np.isin(m.image_ids, [i for i, p in patient_of.items() if p in ("pt01", "pt04", "pt07")])
    sub = m.subset(keep)
    direct = match(pred[pred["image_id"].isin(sub.image_ids)], ref[ref["image_id"].isin(sub.image_ids)], patient_of)
    assert list(sub.patient_ids) == ["pt01", "pt04", "pt07"] == list(direct.patient_ids)
    assert_same(metrics(sub), metrics(direct))


def test_resample_weights():
    w = resample_weights(94, 2000, 3)
    assert w.shape == (2000, 94) and (w.sum(1) == 94).all()
    assert np.array_equal(w, resample_weights(94, 2000, 3))


# ---------------------------------------------------------------------------------------------- paired differences
def test_paired_difference_identical_sources():
    pred, ref, patient_of = random_boxes(1, n_images=30, n_patients=12)
    params = EvaluateParams(bootstrap_resamples=300)
    diff = paired_difference(match(pred, ref, patient_of), match(pred.copy(), ref, patient_of), params)
    assert isinstance(diff, Difference)
    assert (diff.point, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_clearly_better_model():
    pred, ref, patient_of = random_boxes(2, n_images=40, n_patients=20, miss=0.0, wrong_class=0.0, fp_rate=0.0,
                                         dup=0.0, jitter=0.02)  # fmt: skip
    worse, _, _ = random_boxes(2, n_images=40, n_patients=20, miss=0.4, wrong_class=0.3, fp_rate=2.0, jitter=0.2)
    params = EvaluateParams(bootstrap_resamples=400)
    better, weaker = match(pred, ref, patient_of), match(worse, ref, patient_of)
    for metric in ("map50", "map50_95", "sensitivity"):
        diff = paired_difference(better, weaker, params, metric=metric)
        assert diff.point == pytest.approx(metrics(better)[metric] - metrics(weaker)[metric], abs=1e-12)
        assert diff.point > 0.1 and diff.low > 0, metric
        assert diff.p_value < 0.01 and diff.p_value >= 1 / 401


def test_paired_difference_needs_same_reference():
    pred, ref, patient_of = random_boxes(1, n_images=10)
    with pytest.raises(ValueError, match="same reference"):
        paired_difference(match(pred, ref, patient_of), match(pred, ref.iloc[1:], patient_of), EvaluateParams())


# ------------------------------------------------------------------------------------------------- reader study
def test_reader_single_point_and_matched_points_on_model_curve():
    pred, ref, patient_of = random_boxes(4, n_images=60, n_patients=30, fp_rate=1.5)
    reader_boxes, _, _ = random_boxes(4, n_images=60, n_patients=30, miss=0.2, wrong_class=0.15, fp_rate=0.3)
    model, reader = match(pred, ref, patient_of), match(reader_boxes.drop(columns="score"), ref, patient_of)
    out = matched_operating_points(model, reader)
    assert out["reader_operating_points"] == 1
    r = metrics(reader, conf=0.0)
    assert out["reader_sensitivity"] == pytest.approx(r["sensitivity"]) and out["reader_ppv"] == pytest.approx(r["ppv"])

    scores = np.unique(model.pred_score[model.pred_class == CLASS_IDS["compression"]])[::-1]  # descending
    curve = [metrics(model, conf=t) for t in scores]
    sens = np.array([c["sensitivity"] for c in curve])
    ppv = np.array([c["ppv"] for c in curve])
    # Sensitivity match: the highest threshold reaching the reader's sensitivity.
    i = int(np.flatnonzero(scores == out["model_conf_at_reader_sensitivity"])[0])
    assert sens[i] >= out["reader_sensitivity"] and (i == 0 or sens[i - 1] < out["reader_sensitivity"])
    assert out["model_ppv_at_reader_sensitivity"] == pytest.approx(ppv[i])
    assert out["ppv_gain_at_reader_sensitivity"] == pytest.approx(ppv[i] - out["reader_ppv"])
    # PPV match: the lowest threshold whose PPV still reaches the reader's.
    j = int(np.flatnonzero(scores == out["model_conf_at_reader_ppv"])[0])
    assert ppv[j] >= out["reader_ppv"] and (ppv[j + 1 :] < out["reader_ppv"]).all()
    assert out["model_sensitivity_at_reader_ppv"] == pytest.approx(sens[j])

    boot = bootstrap_operating_points(model, reader, EvaluateParams(bootstrap_resamples=100))
    assert isinstance(boot["ppv_gain_at_reader_sensitivity"], Difference)
    assert isinstance(boot["reader_sensitivity"], Interval)
    assert boot["reader_sensitivity"].low <= out["reader_sensitivity"] <= boot["reader_sensitivity"].high


def test_unreachable_operating_point_is_nan():
    pred, ref, patient_of = random_boxes(4, n_images=20)
    perfect = ref.assign(score=1.0)
    weak = pred[pred["label"] == "normal"]  # the model never calls compression
    out = matched_operating_points(match(weak, ref, patient_of), match(perfect, ref, patient_of))
    assert out["reader_sensitivity"] == 1.0
    assert np.isnan(out["model_ppv_at_reader_sensitivity"]) and np.isnan(out["model_conf_at_reader_sensitivity"])
    silent = match(ref[ref["label"] == "normal"].assign(score=1.0), ref, patient_of)  # never calls compression
    out = matched_operating_points(match(pred, ref, patient_of), silent)
    assert out["reader_sensitivity"] == 0.0 and np.isnan(out["reader_ppv"])
    assert out["model_conf_at_reader_sensitivity"] == pred.loc[pred["label"] == "compression", "score"].max()


# ------------------------------------------------------------------------------------------------------ subgroups
def test_subgroup_table_flags_small_groups():
    pred, ref, patient_of = random_boxes(6, n_images=60, n_patients=24, fp_rate=0.5)
    images = pd.DataFrame({"image_id": list(patient_of), "patient_key": list(patient_of.values())})
    number = images["patient_key"].str[2:].astype(int)
    images["site"] = np.where(number < 20, "dev", "ext")  # ext: 4 patients
    images["manufacturer"] = "SIEMENS"
    images["field_strength"] = np.where(number % 2 == 0, 1.5, 3.0)
    params = EvaluateParams(bootstrap_resamples=50, min_subgroup_patients=10, min_subgroup_class_patients=3)
    table = subgroup_table(pred, ref, images, params)
    assert table.iloc[0]["subgroup"] == "all"
    assert set(table["subgroup"]) == {"all", "site", "manufacturer", "field_strength"}
    assert len(table) == (1 + 2 + 1 + 2) * len(METRICS)
    ext = table[(table["subgroup"] == "site") & (table["value"] == "ext")]
    assert ext["too_small"].all() and ext["reason"].str.contains("4 patients < 10").all()
    assert ext["point"].notna().any()  # the point estimate is still reported
    everyone = table[table["subgroup"] == "all"].set_index("metric")
    assert not everyone.loc["map50", "too_small"]
    assert everyone.loc["map50", "point"] == pytest.approx(metrics(match(pred, ref, patient_of))["map50"])
    strict = subgroup_table(pred, ref, images, params.model_copy(update={"min_subgroup_class_patients": 10_000}))
    lesion = strict[(strict["subgroup"] == "all") & (strict["metric"] == "sensitivity")].iloc[0]
    assert lesion["too_small"] and "patients with compression" in lesion["reason"]
    assert "patients with normal" not in lesion["reason"]
    # The flag counts patients holding a compression reference, not boxes.
    everyone_all = table[table["subgroup"] == "all"].iloc[0]
    with_compression = {patient_of[i] for i in ref.loc[ref["label"] == "compression", "image_id"]}
    assert everyone_all["n_patients_compression"] == len(with_compression)


# ------------------------------------------------------------------------------------------------ score_files
def write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def covered(pred: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Predictions on images the reference has (score_files refuses others)."""
    return pred[pred["image_id"].isin(ref["image_id"])]


def test_score_files_patient_key_and_json(tmp_path):
    pred, ref, patient_of = random_boxes(8, n_images=30, n_patients=12)
    pred = covered(pred, ref)
    ref = ref.assign(patient_key=ref["image_id"].map(patient_of))
    params = EvaluateParams(bootstrap_resamples=200)
    result = score_files(write(tmp_path / "p.csv", pred.assign(source="model")), write(tmp_path / "r.csv", ref), params)
    assert result.clustered_by == "patient_key" and not result.reader
    assert result.n_patients == len(set(ref["patient_key"]))
    data = json.loads(json.dumps(result.to_json()))
    assert set(data["map50"]) >= {"point", "low", "high"}
    assert data["map50"]["point"] == pytest.approx(metrics(match(pred, ref, patient_of))["map50"])
    assert set(METRICS) <= set(data)
    text = result.table()
    assert "mAP50" in text and "lesion PPV" in text and "95% CI" in text


def test_score_files_without_patient_key_clusters_images(tmp_path):
    pred, ref, _ = random_boxes(8, n_images=20, n_patients=5)
    pred = covered(pred, ref)
    result = score_files(write(tmp_path / "p.csv", pred), write(tmp_path / "r.csv", ref), EvaluateParams(
        bootstrap_resamples=50))  # fmt: skip
    assert result.clustered_by == "image"
    assert result.n_patients == result.n_images == ref["image_id"].nunique()
    assert any("each image is resampled on its own" in n for n in result.notes)


def test_score_files_reader_without_score(tmp_path):
    pred, ref, _ = random_boxes(9, n_images=20)
    pred = covered(pred, ref)
    result = score_files(
        write(tmp_path / "reader.csv", pred.drop(columns="score")),
        write(tmp_path / "r.csv", ref),
        EvaluateParams(bootstrap_resamples=50),
    )
    assert result.reader and np.isfinite(result.intervals["map50"].point)
    assert "one operating point" in result.table() and "r(1+p)/2" in result.table()


def test_score_files_keeps_ids_as_text(tmp_path):
    ref = pd.DataFrame([("007", "normal", 0, 0, 10, 10), ("NA", "compression", 0, 20, 10, 30)], columns=COLS)
    pred = ref.assign(score=[0.9, 0.8])
    result = score_files(write(tmp_path / "p.csv", pred), write(tmp_path / "r.csv", ref), EvaluateParams(
        bootstrap_resamples=10))  # fmt: skip
    assert result.n_images == 2 and result.intervals["map50"].point == pytest.approx(0.995)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.drop(columns="y_max"), r"p\.csv: missing column\(s\) y_max"),
        (
            lambda p: p.assign(label=["normal", "stenosis", *p["label"][2:]]),
            r"(?s)p\.csv: 1 problem.*line 3, column 'label': unknown label 'stenosis'",
        ),
        (lambda p: p.assign(x_max=[5.0, *p["x_max"][1:]]), r"line 2, column 'x_max': x_max \(5\) <= x_min \(10\)"),
        (lambda p: p.assign(y_min=["top", *p["y_min"][1:]]), r"line 2, column 'y_min': 'top' is not a finite number"),
        (lambda p: p.assign(score=[1.5, *p["score"][1:]]), r"line 2, column 'score': 1.5 is outside \[0, 1\]"),
        (lambda p: p.assign(image_id=["zz", *p["image_id"][1:]]), r"image_id\(s\) have no reference boxes.*'zz'"),
    ],
)
def test_score_files_input_errors(tmp_path, edit, message):
    ref = pd.DataFrame([("a", "normal", 10, 0, 20, 10), ("a", "compression", 10, 20, 20, 30)] * 2, columns=COLS)
    pred = edit(ref.assign(score=0.9))
    with pytest.raises(BoxFileError, match=message):
        score_files(write(tmp_path / "p.csv", pred), write(tmp_path / "r.csv", ref), EvaluateParams())


def test_score_files_reference_errors(tmp_path):
    ref = pd.DataFrame([("a", "normal", 10, 0, 20, 10), ("a", "compression", 10, 20, 20, 30)], columns=COLS)
    pred = write(tmp_path / "p.csv", ref.assign(score=0.9))
    with pytest.raises(BoxFileError, match=r"r\.csv: image 'a' has more than one patient_key"):
        score_files(pred, write(tmp_path / "r.csv", ref.assign(patient_key=["x", "y"])), EvaluateParams())
    with pytest.raises(BoxFileError, match=r"r\.csv: missing column\(s\) label"):
        score_files(pred, write(tmp_path / "r.csv", ref.drop(columns="label")), EvaluateParams())
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BoxFileError, match="empty file"):
        score_files(pred, tmp_path / "empty.csv", EvaluateParams())
    with pytest.raises(BoxFileError, match="file not found"):
        score_files(tmp_path / "nope.csv", tmp_path / "r.csv", EvaluateParams())


def test_many_problems_are_summarised():
    frame = pd.DataFrame([("a", "bad", 0, 0, 1, 1)] * 30, columns=COLS)
    with pytest.raises(BoxFileError, match=r"(?s)30 problem\(s\).*and 20 more"):
        match(frame.assign(score=0.5), frame)


# ---------------------------------------------------------------------------------------------------------- params
def test_params_reject_unknown_keys_and_off_grid_iou():
    with pytest.raises(ValueError, match="extra"):
        EvaluateParams(bootstrap_resample=10)
    with pytest.raises(ValueError, match="iou_threshold must be one of"):
        EvaluateParams(iou_threshold=0.6 + 0.01)
    assert EvaluateParams(iou_threshold=0.75).iou_index == 5


def test_batched_resamples_equal_one_at_a_time(monkeypatch):
    """The bootstrap scores resamples in chunks of array rows: chunking and batching change no figure."""
    import pipelines.evaluate.scoring as scoring

    pred, ref, patient_of = random_boxes(7, n_images=30, n_patients=12, score_decimals=1)  # ties included
    m = match(pred, ref, patient_of)
    weights = resample_weights(m.n_patients, 25, 3)
    batched = scoring.score_resamples(m, weights, 0.25, 0)
    monkeypatch.setattr(scoring, "_CELLS_PER_CHUNK", 1)  # one resample a chunk
    chunked = scoring.score_resamples(m, weights, 0.25, 0)
    np.testing.assert_array_equal(batched, chunked)
    for row, w in zip(batched, weights, strict=True):
        single = metrics(m, w, conf=0.25)
        np.testing.assert_allclose(row, [single[k] for k in METRICS], rtol=0, atol=1e-12)


def test_ap_rows_equal_ultralytics_compute_ap():
    from ultralytics.utils.metrics import compute_ap

    import pipelines.evaluate.scoring as scoring

    rng = np.random.default_rng(0)
    tp = rng.integers(0, 2, size=(40, 17)).astype(float).cumsum(1)
    n = np.arange(1, 18, dtype=float)[None, :].repeat(40, 0)
    recall, precision = tp / (tp[:, -1:] + 3), tp / n
    expected = [compute_ap(r, p)[0] for r, p in zip(recall, precision, strict=True)]
    np.testing.assert_allclose(scoring._ap_rows(recall, precision), expected, rtol=0, atol=1e-12)
