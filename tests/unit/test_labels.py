"""The shared label code: the reference standard's boxes and YOLO label lines (ingest, train and evaluate use it)."""

from __future__ import annotations

import pandas as pd

from pipelines.labels import reference_boxes, yolo_lines


def _boxes(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"image_id": i, "reader_id": r, "reader_level": lvl, "class_id": c, "x_min": 10, "y_min": 20, "x_max": 30}
            for i, r, lvl, c in rows
        ]
    ).assign(y_max=60)


def test_reference_is_one_reader_of_the_level_per_image() -> None:
    ann = _boxes(
        [
            ("I1", "expert_2", "expert", 1),
            ("I1", "expert_1", "expert", 0),  # two experts read I1: the first by id is the reference
            ("I1", "expert_1", "expert", 1),
            ("I1", "mid_1", "mid", 1),
            ("I2", "expert_2", "expert", 0),  # only expert_2 read I2
            ("I3", "mid_1", "mid", 0),  # no expert read: no reference boxes
        ]
    )
    ref = reference_boxes(ann, "expert")
    assert sorted(zip(ref["image_id"], ref["reader_id"], strict=True)) == [
        ("I1", "expert_1"),
        ("I1", "expert_1"),
        ("I2", "expert_2"),
    ]
    assert list(ref.columns) == list(ann.columns)
    assert set(reference_boxes(ann, "mid")["image_id"]) == {"I1", "I3"}


def test_yolo_lines_are_normalised_centre_and_size() -> None:
    boxes = _boxes([("I1", "expert_1", "expert", 1)])
    # box 10..30 x 20..60 in a 100 rows x 80 columns image: centre (20/80, 40/100), size (20/80, 40/100)
    assert yolo_lines(boxes, rows=100, columns=80) == "1 0.250000 0.400000 0.250000 0.400000\n"
    assert yolo_lines(boxes.iloc[:0], rows=100, columns=80) == ""
