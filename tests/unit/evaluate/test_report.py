"""The report states its conventions where the figures appear: reader mAP50, P floors, ceiling CIs, subgroups."""

from __future__ import annotations

import pytest

from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.report import CEILING_MARK, READER_MARK, format_p, render_markdown
from pipelines.evaluate.study import evaluate_set
from tests.unit.evaluate.test_study import _annotations, _images, _model


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ({"p_value": 1 / 2001, "n_valid": 2000}, "< 0.001"),  # the bootstrap's floor: never printed as 0.0005
        ({"p_value": 1 / 201, "n_valid": 200}, "<= 0.005"),  # a floor above 0.001 says it is a bound
        ({"p_value": 0.0312, "n_valid": 2000}, "0.031"),
        ({"p_value": 0.0004, "df": 12.0}, "< 0.001"),  # an MRMC P (t distribution) has no floor
        ({"p_value": 0.147, "df": 4.1}, "0.147"),
        ({"p_value": None}, "n/a"),
        (None, "n/a"),
        ({"point": None, "p_value": 0.0094, "n_valid": 105}, "n/a"),  # undefined on the sample: no P
    ],
)
def test_format_p(item, text) -> None:
    assert format_p(item) == text


def test_undefined_point_says_it_was_not_reached() -> None:
    from pipelines.evaluate.report import _ci

    assert _ci({"point": None, "low": -0.58, "high": -0.18, "n_valid": 105}) == (
        "n/a: not reached on this set (in 105 resamples)"
    )
    assert _ci({"point": None, "n_valid": 0}) == "n/a"


def test_report_marks_conventions_and_ceilings() -> None:
    params = EvaluateParams(bootstrap_resamples=200, min_subgroup_patients=1)
    result = evaluate_set("external_test", _model(), _annotations(), _images(), params)
    metrics = {"sets": {"external_test": result.to_json()}, "params": params.model_dump(mode="json")}
    text = render_markdown(metrics, synthetic=True)
    assert "SYNTHETIC DATA" in text
    # Every reader mAP50 carries the convention mark, and the footnote gives the convention.
    assert "0.995 (" in text and f"{READER_MARK} |" in text
    assert "r(1+p)/2" in text
    # mid2 reads exactly as the expert: its mAP50 CI collapses at 0.995 and is marked and explained.
    mid2_row = next(line for line in text.splitlines() if line.startswith("| reader mid2 |"))
    assert CEILING_MARK in mid2_row and "rule of three" in text
    assert "MRMC" in text and "like for like" in text
    # Each reader's matched point names the model threshold it was read at (mid2's sensitivity: 0.50, by hand).
    mid2_points = next(line for line in text.splitlines() if line.startswith("| mid2 |"))
    assert "| 0.500 |" in mid2_points and "| 0.800 |" in mid2_points
    assert "comparisons with the overall figure" in text and "unreliable" in text
