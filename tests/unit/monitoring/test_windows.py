"""Windows close by count or by time; segments cover every site, scanner and field strength of a window."""

from __future__ import annotations

import pandas as pd
import pytest

from monitoring.windows import ordered, segments, windows


def _store(times: list[float], sites: list[str] | None = None) -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame(
        {
            "monitored_at": times,
            "meta_site": sites or ["a"] * n,
            "meta_manufacturer": ["SIEMENS"] * n,
            "meta_field_strength": [3.0] * n,
        }
    )


def test_windows_close_by_count_and_leave_the_open_tail() -> None:
    got = windows(_store([float(t) for t in range(7)]), size=3)
    assert [(w.start, w.stop) for w in got] == [(0, 3), (3, 6)]  # study 6 waits for the next run
    with pytest.raises(ValueError):
        windows(_store([0.0]), size=0)


def test_windows_close_by_time_when_studies_arrive_slowly() -> None:
    times = [0.0, 10.0, 100.0, 101.0, 102.0, 500.0]
    got = windows(_store(times), size=10, period_s=60.0)
    assert [(w.start, w.stop) for w in got] == [(0, 2), (2, 5)]
    assert got[1].opened_at == 100.0 and got[1].closed_at == 102.0


def test_segments_include_a_site_the_reference_never_saw() -> None:
    reference = _store([0.0] * 40, ["a"] * 40)
    current = ordered(_store([2.0, 1.0, 3.0], ["a", "new", "a"]))
    tags = {tag: (len(ref), len(cur), seen) for tag, ref, cur, seen in segments(reference, current)}
    assert tags == {
        "all": (40, 3, True), "site:a": (40, 2, True), "site:new": (40, 1, False),  # unseen: the whole reference
        "scanner:SIEMENS": (40, 3, True), "field:3.0": (40, 3, True),
    }  # fmt: skip
    few = pd.concat([reference, _store([0.0] * 3, ["b"] * 3)], ignore_index=True)
    got = {tag: len(ref) for tag, ref, _, _ in segments(few, ordered(_store([1.0], ["b"])))}
    assert got["site:b"] == 3  # a seen segment keeps its own reference rows, however few
    assert list(current["monitored_at"]) == [1.0, 2.0, 3.0]
