"""Annotation rows are checked against the shared `readers:` section (allowed ids and levels), not a copy of it."""

from __future__ import annotations

import pandas as pd

from pipelines.contracts import ANNOTATION_COLUMNS
from pipelines.ingest.annotations import ANN_BAD_READER, ImageRef, check_annotations
from pipelines.settings import ReadersParams

IMAGE = ImageRef("I0123456789abcdef", "P0123456789abcdef", rows=100, columns=80)


def _rows(*readers: tuple[str, str]) -> pd.DataFrame:
    rows = [["1.2.3", rid, level, "normal", "10", "20", "30", "40"] for rid, level in readers]
    return pd.DataFrame(rows, columns=list(ANNOTATION_COLUMNS))


def _check(df: pd.DataFrame, readers: ReadersParams) -> list[str]:
    result = check_annotations(df, lambda uid: IMAGE.image_id, {IMAGE.image_id: IMAGE}, set(), readers)
    return [m["reason"] for m in result.manifest]


def test_reader_levels_and_ids_come_from_the_readers_section() -> None:
    df = _rows(("expert_1", "expert"), ("prof_1", "professor"), ("dr who", "mid"))
    assert _check(df, ReadersParams()) == ["", ANN_BAD_READER, ANN_BAD_READER]
    custom = ReadersParams(levels=["expert", "professor", "mid"], id_pattern=r"^[a-z_ 0-9]+$")
    assert _check(df, custom) == ["", "", ""]
