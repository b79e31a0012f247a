"""Study triage from detections: levels by position, suspicion, priority, and when auto mode explains."""

from __future__ import annotations

import pytest

from pipelines.predict.triage import Finding, boxes_to_explain, explain_reason, level_positions, study_triage

NAMES = ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"]


def _box(row: float) -> tuple[float, float, float, float]:
    return (40.0, row, 60.0, row + 10.0)


def test_levels_are_ranked_from_the_top_and_named_only_when_all_six_are_seen() -> None:
    rows = [120.0, 20.0, 60.0, 40.0, 100.0, 80.0]  # shuffled
    six = level_positions([_box(r) for r in rows], NAMES)
    assert [p["name"] for p in six] == ["C7-T1", "C2-C3", "C4-C5", "C3-C4", "C6-C7", "C5-C6"]
    assert [p["index"] for p in six] == [6, 1, 3, 2, 5, 4]
    five = level_positions([_box(r) for r in rows[:5]], NAMES)
    assert all(p["name"] is None for p in five)  # a name would be a guess
    assert sorted(p["index"] for p in five) == [1, 2, 3, 4, 5]
    assert all(p["of"] == 5 for p in five)


def test_triage_suspects_compression_and_sorts_levels_by_confidence() -> None:
    findings = [
        Finding(0, "normal", 0.9, _box(20)),
        Finding(0, "compression", 0.55, _box(40)),
        Finding(1, "compression", 0.8, _box(40)),  # the same level on another slice: one entry, highest confidence
        Finding(1, "compression", 0.7, _box(60)),
    ]
    levels = [{"index": 1, "of": 6, "name": "C2-C3"}, {"index": 2, "of": 6, "name": "C3-C4"}]
    levels += [{"index": 2, "of": 6, "name": "C3-C4"}, {"index": 3, "of": 6, "name": "C4-C5"}]
    triage = study_triage(findings, levels, (0.25, 0.6))
    assert triage["compression_suspected"] is True
    assert triage["priority"] == 0.8
    assert [(lv["level"], lv["confidence"], lv["image"]) for lv in triage["levels"]] == [
        ("C3-C4", 0.8, 1),
        ("C4-C5", 0.7, 1),
    ]
    assert triage["uncertain"] is True  # 0.55 lies in [0.25, 0.6)
    assert explain_reason("auto", triage) == "positive"


@pytest.mark.parametrize(
    ("confidences", "suspected", "uncertain", "auto_reason"),
    [
        ([0.95, 0.9], False, False, None),  # confident normal study: quick read only
        ([0.95, 0.4], False, True, "uncertain"),  # a normal box in the band: explained
        ([], False, False, None),  # nothing detected
    ],
)
def test_auto_mode_explains_only_uncertain_or_positive_studies(
    confidences: list[float], suspected: bool, uncertain: bool, auto_reason: str | None
) -> None:
    findings = [Finding(0, "normal", c, _box(20 + 20 * k)) for k, c in enumerate(confidences)]
    levels = level_positions([f.box for f in findings], NAMES)
    triage = study_triage(findings, levels, (0.25, 0.6))
    assert (triage["compression_suspected"], triage["uncertain"], triage["priority"]) == (suspected, uncertain, 0.0)
    assert explain_reason("auto", triage) == auto_reason
    assert explain_reason("quick", triage) is None
    assert explain_reason("xai", triage) == "mode xai"


def test_unnamed_levels_are_reported_by_image_and_position() -> None:
    findings = [Finding(1, "compression", 0.5, _box(40))]
    triage = study_triage(findings, [{"index": 2, "of": 4, "name": None}], (0.25, 0.6))
    assert triage["levels"][0]["level"] == "image 2 level 2 of 4"


def test_auto_maps_only_the_boxes_a_reader_would_question() -> None:
    labels = ["normal", "normal", "compression", "normal", "compression"]
    confidences = [0.95, 0.4, 0.9, 0.25, 0.3]
    assert boxes_to_explain("auto", labels, confidences, (0.25, 0.6)) == [1, 2, 3, 4]  # not the confident normal
    assert boxes_to_explain("auto", labels, confidences, (0.5, 0.6)) == [2, 4]
    assert boxes_to_explain("xai", labels, confidences, (0.25, 0.6)) is None  # every box
