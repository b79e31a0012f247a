"""Windows and segments of the feature store: what each drift comparison looks at.

A window is a run of consecutive studies (in the order they were monitored), closed by count (`size` studies) or
by time (`period_s` seconds), whichever comes first; the last, still-open window is left for the next run. Each
window is compared with the reference overall and per segment (site, manufacturer, field strength), each segment
against the reference rows of the same segment; a site or scanner the reference never saw is compared with the
whole reference (and its new categories alert), unlike Evidently's `GroupBy`, which takes its labels from the
current data only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

SEGMENT_COLUMNS = {"site": "meta_site", "scanner": "meta_manufacturer", "field": "meta_field_strength"}


@dataclass(frozen=True)
class Window:
    """Rows [start, stop) of the store, in monitoring order."""

    index: int
    start: int
    stop: int
    opened_at: float
    closed_at: float

    def rows(self, store: pd.DataFrame) -> pd.DataFrame:
        return store.iloc[self.start : self.stop]


def windows(store: pd.DataFrame, *, size: int, period_s: float | None = None) -> list[Window]:
    """Closed windows over the store sorted by `monitored_at` (the open tail is not returned)."""
    if size < 1:
        raise ValueError("a window holds at least one study")
    times = store["monitored_at"].to_numpy(dtype=float) if len(store) else []
    out: list[Window] = []
    start = 0
    for i in range(len(store)):
        full = i + 1 - start >= size
        expired = period_s is not None and times[i] - times[start] >= period_s
        if expired and i > start:  # the study that expired the window opens the next one
            out.append(Window(len(out), start, i, float(times[start]), float(times[i - 1])))
            start = i
            full = i + 1 - start >= size
        if full:
            out.append(Window(len(out), start, i + 1, float(times[start]), float(times[i])))
            start = i + 1
    return out


def segments(reference: pd.DataFrame, current: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame, bool]]:
    """(tag, reference rows, current rows, seen) for `all` and every site, scanner and field strength in the window.

    A tag reads `site:ext`, `scanner:SIEMENS`, `field:3.0`. A segment the reference has (`seen`) is compared with
    the reference rows of the same segment, however few: comparing one scanner's studies with a reference that
    mixes scanners would find the scanner itself (its model, software, field strength) every time. A segment the
    reference never had is compared with the whole reference (`seen` False: the caller then tests what the images
    and outputs look like, not the header facts that make the segment new, which alert as new categories).
    """
    yield "all", reference, current, True
    for name, column in SEGMENT_COLUMNS.items():
        for value in sorted(current[column].dropna().unique(), key=str):
            ref_rows = reference[reference[column] == value]
            seen = len(ref_rows) > 0
            yield f"{name}:{value}", ref_rows if seen else reference, current[current[column] == value], seen


def ordered(store: pd.DataFrame) -> pd.DataFrame:
    """The store in monitoring order (stable for equal times)."""
    return store.sort_values("monitored_at", kind="stable").reset_index(drop=True)


def columns_of(store: pd.DataFrame, prefixes: Sequence[str]) -> list[str]:
    return [c for c in store.columns if c.startswith(tuple(prefixes))]
