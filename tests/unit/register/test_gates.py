"""Registration gates: each verdict and its reason, from metrics.json-shaped figures."""

from __future__ import annotations

import pytest

from pipelines.register import gates


def _metrics(low: float = 0.75, point: float = 0.82, groups: list[tuple[str, str, float, bool]] | None = None) -> dict:
    rows = [{"metric": "map50", "subgroup": "all", "value": "all", "point": point, "too_small": False}]
    for subgroup, value, p, small in groups or []:
        rows.append({"metric": "map50", "subgroup": subgroup, "value": value, "point": p, "too_small": small})
    rows.append({"metric": "recall", "subgroup": "site", "value": "ext", "point": 0.1, "too_small": False})
    return {
        "sets": {"external_test": {"model": {"map50": {"point": point, "low": low, "high": 0.9}}, "subgroups": rows}}
    }


def test_external_floor() -> None:
    ok = gates.external_floor(_metrics(low=0.75), 0.70)
    assert ok.passed and ok.status == "pass" and "0.750 at or above the floor 0.700" in ok.reason
    bad = gates.external_floor(_metrics(low=0.65), 0.70)
    assert not bad.passed and bad.status == "fail" and "below" in bad.reason
    with pytest.raises(ValueError, match="no external test set"):
        gates.external_floor({"sets": {}}, 0.7)


def test_subgroups_judge_only_large_enough_groups() -> None:
    groups = [("manufacturer", "Philips", 0.80, False), ("manufacturer", "Canon", 0.50, True)]
    ok = gates.subgroups(_metrics(groups=groups), 0.10)
    assert ok.passed and "1 subgroups within 0.100" in ok.reason and "1 too small to judge" in ok.reason
    groups.append(("field_strength", "1.5", 0.70, False))
    bad = gates.subgroups(_metrics(groups=groups), 0.10)
    assert not bad.passed and "field_strength=1.5 0.700" in bad.reason and "Canon" not in bad.reason


def test_non_inferiority_to_champion() -> None:
    assert gates.non_inferior(None, 0.02, None).passed
    ok = gates.non_inferior({"point": 0.01, "low": -0.015, "high": 0.03}, 0.02, "3")
    assert ok.passed and "minus champion 3: +0.010" in ok.reason
    bad = gates.non_inferior({"point": -0.01, "low": -0.05, "high": 0.03}, 0.02, "3")
    assert not bad.passed


def test_data_contracts_must_cover_the_trained_data() -> None:
    assert gates.data_contracts({"success": True}, "abc", "abc").passed
    assert not gates.data_contracts(None, "abc", None).passed
    failed = gates.data_contracts({"success": False, "failed_expectations": [1, 2]}, "abc", "abc")
    assert not failed.passed and "2 expectations" in failed.reason
    other = gates.data_contracts({"success": True}, "abc", "def")
    assert not other.passed and "trained on abc" in other.reason


def test_dirty_tree_warns_or_fails_by_policy() -> None:
    assert gates.clean_tree(False, "fail").status == "pass"
    assert gates.clean_tree(True, "warn").status == "warn"
    assert gates.clean_tree(True, "fail").status == "fail"


def test_training_tree_state_is_read_from_the_training_runs_lineage_tag() -> None:
    from pipelines.register.run import training_tree_dirty

    key = "cordwatch.lineage.git_dirty"
    assert training_tree_dirty({key: "False"}) is False  # Lineage.as_tags writes str(bool)
    assert training_tree_dirty({key: "True"}) is True
    assert training_tree_dirty({key: "true"}) is True
    assert training_tree_dirty({key: ""}) is None and training_tree_dirty({}) is None
