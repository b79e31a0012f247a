"""`evaluate_set` on a three-patient table whose every figure is computed by hand below.

The set: three patients, one image each, two intervertebral levels an image (box A at y 0-10, box B at y 20-30).

    expert:  a: A normal, B compression   b: A normal, B normal   c: A compression, B normal
    model:   a: A normal .90, B compression .80
             b: A normal .70, B compression .60 (wrong class: FP), B normal .30
             c: A compression .50, B normal .95
    mid1:    a: A normal, B compression   b: A normal, B normal   c: A normal (misses the compression), B normal
    mid2:    exactly the expert

AP (ultralytics' 101-point interpolation from recall 0, precision 1; f is the interpolated envelope):
- model normal: 4 TPs of 4 references, precision 1 throughout: f = 1 on [0, 1) and 0 at 1 -> 0.99 + 0.005 = 0.995.
- model compression: .80 TP, .60 FP, .50 TP of 2 references: points (0.5, 1), (0.5, 1/2), (1, 2/3); envelope 1 up
  to recall 0.5, then 2/3: 0.49 + 0.01 * (1 + 2/3) / 2 + 0.49 * 2/3 + 0.01 * (2/3) / 2 = 0.828333...
- mid1 normal: 5 boxes, 4 TPs (one point r 1, p 0.8): f(x) = 1 - 0.2 x on [0, 1): 0.99 - 0.1 * 0.99**2 + 0.01 *
  0.802 / 2 = 0.896 (close to r (1 + p) / 2 = 0.9: the convention the report states).
- mid1 compression: 1 TP of 2 references (r 0.5, p 1): 0.49 + 0.01 / 2 = 0.495.
- mid2: 0.995 for both classes.
So model mAP50 = (0.995 + 0.828333) / 2 = 0.911667, mid1 0.6955, mid2 0.995, the mid group 0.84525, and model minus
group +0.066417.

Lesion (compression) operating points, read off the model's curve (thresholds .80, .60, .50: sensitivity .5, .5, 1;
PPV 1, 1/2, 2/3):
- mid1 (sensitivity 1/2, PPV 1): sensitivity 1/2 is first reached at .80 (PPV 1: gain 0); PPV 1 last held at .80
  (sensitivity 1/2: gain 0).
- mid2 (sensitivity 1, PPV 1): sensitivity 1 at .50 (PPV 2/3: gain -1/3); PPV 1 at .80 (sensitivity 1/2: gain -1/2).
- group mean gains: PPV -1/6, sensitivity -1/4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.study import evaluate_set

A = (0.0, 0.0, 10.0, 10.0)
B = (0.0, 20.0, 10.0, 30.0)


def _annotations() -> pd.DataFrame:
    reads = {
        ("expert1", "expert"): [("a", "normal", A), ("a", "compression", B), ("b", "normal", A), ("b", "normal", B),
                                ("c", "compression", A), ("c", "normal", B)],
        ("mid1", "mid"): [("a", "normal", A), ("a", "compression", B), ("b", "normal", A), ("b", "normal", B),
                          ("c", "normal", A), ("c", "normal", B)],
    }  # fmt: skip
    reads[("mid2", "mid")] = reads[("expert1", "expert")]
    rows = [
        (image, f"P{image}", reader, level, label, *box)
        for (reader, level), boxes in reads.items()
        for image, label, box in boxes
    ]
    return pd.DataFrame(
        rows,
        columns=["image_id", "patient_key", "reader_id", "reader_level", "label", "x_min", "y_min", "x_max", "y_max"],
    )


def _model() -> pd.DataFrame:
    rows = [("a", "normal", *A, 0.90), ("a", "compression", *B, 0.80), ("b", "normal", *A, 0.70),
            ("b", "compression", *B, 0.60), ("b", "normal", *B, 0.30), ("c", "compression", *A, 0.50),
            ("c", "normal", *B, 0.95)]  # fmt: skip
    return pd.DataFrame(rows, columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max", "score"])


def _images() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "patient_key": ["Pa", "Pb", "Pc"],
            "site": ["ext"] * 3,
            "manufacturer": ["Philips", "Philips", "Canon"],
            "field_strength": [3.0, 3.0, 1.5],
        }
    )


@pytest.fixture(scope="module", params=["bca", "percentile"])
def result(request: pytest.FixtureRequest):
    params = EvaluateParams(bootstrap_resamples=300, ci_method=request.param, min_subgroup_patients=1)
    return evaluate_set("external_test", _model(), _annotations(), _images(), params)


def test_model_and_reader_figures_by_hand(result) -> None:
    compression_ap = 0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2
    assert result.model["ap50_normal"].point == pytest.approx(0.995)
    assert result.model["ap50_compression"].point == pytest.approx(compression_ap)
    assert result.model["map50"].point == pytest.approx((0.995 + compression_ap) / 2)
    assert result.model["sensitivity"].point == pytest.approx(1.0)  # both compressions at score >= 0.25
    assert result.model["ppv"].point == pytest.approx(2 / 3)
    assert result.readers["mid1"]["ap50_normal"].point == pytest.approx(0.896)
    assert result.readers["mid1"]["ap50_compression"].point == pytest.approx(0.495)
    assert result.readers["mid1"]["map50"].point == pytest.approx(0.6955)
    assert result.readers["mid2"]["map50"].point == pytest.approx(0.995)
    assert result.groups["mid"]["map50"].point == pytest.approx((0.6955 + 0.995) / 2)
    assert result.reader_levels == {"mid1": "mid", "mid2": "mid"}


def test_model_minus_group_is_paired_and_by_hand(result) -> None:
    compression_ap = 0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2
    expected = (0.995 + compression_ap) / 2 - (0.6955 + 0.995) / 2
    diff = result.model_minus_group["mid"]
    assert diff.point == pytest.approx(expected)
    assert 0 < diff.p_value <= 1 and diff.n_valid == 300
    mrmc = result.mrmc["mid"]
    assert not isinstance(mrmc, str) and mrmc.difference == pytest.approx(expected)
    assert mrmc.n_readers == 2 and mrmc.n_cases == 3


def test_operating_points_by_hand(result) -> None:
    mid1, mid2, group = (result.operating_points[k] for k in ("mid1", "mid2", "group:mid"))
    assert mid1["reader_sensitivity"].point == pytest.approx(0.5)
    assert mid1["reader_ppv"].point == pytest.approx(1.0)
    assert mid1["model_conf_at_reader_sensitivity"].point == pytest.approx(0.8)
    assert mid1["ppv_gain_at_reader_sensitivity"].point == pytest.approx(0.0)
    assert mid1["sensitivity_gain_at_reader_ppv"].point == pytest.approx(0.0)
    assert mid2["model_conf_at_reader_sensitivity"].point == pytest.approx(0.5)
    assert mid2["ppv_gain_at_reader_sensitivity"].point == pytest.approx(2 / 3 - 1)
    assert mid2["sensitivity_gain_at_reader_ppv"].point == pytest.approx(-0.5)
    assert group["ppv_gain_at_reader_sensitivity"].point == pytest.approx(-1 / 6)
    assert group["sensitivity_gain_at_reader_ppv"].point == pytest.approx(-0.25)
    # Gains are differences with a P value; the readers' own figures are intervals.
    assert hasattr(group["ppv_gain_at_reader_sensitivity"], "p_value")
    assert not hasattr(group["reader_ppv"], "p_value")


def test_intervals_hold_their_points(result) -> None:
    for figures in (result.model, *result.readers.values(), *result.groups.values()):
        for key in ("map50", "sensitivity"):
            iv = figures[key]
            if np.isfinite(iv.low):
                assert iv.low - 1e-9 <= iv.high


def test_subgroups_and_json(result) -> None:
    sub = result.subgroups
    overall = sub[(sub["subgroup"] == "all") & (sub["metric"] == "map50")].iloc[0]
    assert overall["point"] == pytest.approx(result.model["map50"].point)
    canon = sub[(sub["value"] == "Canon") & (sub["metric"] == "map50")].iloc[0]
    # One patient, and it holds the only compression in the subgroup: flagged by patients, not boxes.
    assert canon["n_patients_compression"] == 1 and bool(canon["too_small"])
    data = result.to_json()
    assert set(data) >= {"model", "reader_groups", "readers", "model_minus_group", "mrmc", "operating_point_comparison"}
    assert data["mrmc"]["mid"]["point"] == pytest.approx(result.model_minus_group["mid"].point)
    assert data["operating_point_comparison"]["group:mid"]["ppv_gain_at_reader_sensitivity"]["p_value"] is not None
    assert "r(1+p)/2" in data["notes"]["reader_map50"]


def test_one_reader_has_no_mrmc() -> None:
    ann = _annotations()
    ann = ann[ann["reader_id"] != "mid2"]
    result = evaluate_set("t", _model(), ann, _images(), EvaluateParams(bootstrap_resamples=50))
    assert result.mrmc["mid"] == "needs at least 2 readers, the group has 1"
    assert result.to_json()["mrmc"]["mid"] == {
        "point": None,
        "not_computed": "needs at least 2 readers, the group has 1",
    }
    assert result.model_minus_group["mid"].point == pytest.approx(result.model["map50"].point - 0.6955)
