"""Is a window of studies different from the reference? Column drift and new categories with Evidently 0.7, and
embedding drift with Evidently's classifier method.

One call compares one segment (all studies, or one site, scanner or field strength) of one window with the
reference. Decisions, and why:
- Every column's test is set explicitly (`ks` for numbers, `chisquare` for categories), never left to Evidently:
  its default switches silently from p-values to distances at 1,000 reference rows, which would change the
  scores' meaning and the dashboard's series.
- A comparison alerts when a test's p-value is below `alpha / number of tests` (Bonferroni): with twenty columns
  tested at 0.05 each, two windows in three would alert on no change at all. `monitoring.run` splits its window's
  alpha over the window's segments the same way, so `alpha` bounds the false-alarm rate of a whole window.
- The decision is computed here, with Evidently's own stat test objects (`column_pvalue`); the Evidently report
  (same tests, same level: it shows the same p-values) is made only for the workspace and the kept HTML/JSON.
- Categories never seen in the reference (a new scanner model, a new software version) are found with pandas
  (Evidently has no metric naming them) and alert by themselves.
- Embeddings: Evidently's `ModelDriftMethod` (a classifier told to separate reference from current; ROC AUC, with
  its bootstrap below 1,000 reference rows, at the comparison's Bonferroni level) called directly: its
  `EmbeddingsDrift` metric spends about a minute drawing a TSNE plot per report (docs/dev-notes/evidently-0.7.md,
  section 7).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float  # a p-value: smaller is more different
    threshold: float  # the Bonferroni-corrected level the score is compared with
    drifted: bool
    change: str = ""  # by how much, readably: the median (numbers) or the commonest value's share (categories)


@dataclass
class DriftResult:
    """One segment, one window, against the reference."""

    rows_reference: int
    rows_current: int
    columns: list[ColumnDrift] = field(default_factory=list)
    new_categories: dict[str, list[str]] = field(default_factory=dict)
    embedding_score: float | None = None  # ROC AUC of reference-vs-current (0.5: indistinguishable)
    embedding_drifted: bool = False
    snapshot: Any = None  # the Evidently snapshot (for the workspace), when columns were tested
    tags: list[str] = field(default_factory=list)  # the segment's tags, as its snapshot is stored with

    @property
    def drifted_columns(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    @property
    def alert(self) -> bool:
        return bool(self.drifted_columns or self.new_categories or self.embedding_drifted)

    def reasons(self) -> list[str]:
        """What moved, readably: the alert's text."""
        out = [
            f"{c.column} {c.change} ({c.method} p={c.score:.2g} < {c.threshold:.2g})".replace("  ", " ")
            for c in self.drifted_columns
        ]
        out += [f"new {col}: {', '.join(values)}" for col, values in self.new_categories.items()]
        if self.embedding_drifted:
            out.append(f"embedding (classifier ROC AUC {self.embedding_score:.3f})")
        return out


def new_categories(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """Per column, the values in `current` the reference never had (NaN ignored)."""
    found = {}
    for column in columns:
        seen = set(reference[column].dropna().astype(str))
        values = sorted(set(current[column].dropna().astype(str)) - seen)
        if values:
            found[column] = values
    return found


def embedding_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str], *, level: float = 0.05
) -> tuple[float, bool]:
    """Evidently's classifier embedding-drift method: ROC AUC of a classifier told to separate reference from
    current on held-out rows. With fewer than 1,000 reference rows it is judged against the (1 - level) quantile of
    100 random scorers' ROC AUC (Evidently's bootstrap, so the test joins the comparison's error budget); with
    more, against Evidently's fixed 0.55."""
    from evidently.metrics.embeddings import ModelDriftMethod

    method = ModelDriftMethod(bootstrap=len(reference) < 1000, quantile_probability=1.0 - level)
    score, drifted, _ = method(current[list(columns)].copy(), reference[list(columns)].copy())
    return float(score), bool(drifted)


def column_pvalue(reference: pd.Series, current: pd.Series, method: str) -> float:
    """The p-value Evidently's `ValueDrift(method=...)` reports for a column (its own stat test objects, on the
    non-missing values); 1.0 when a side has no value."""
    from evidently.legacy.calculations.stattests import chi_stat_test, ks_stat_test
    from evidently.legacy.core import ColumnType

    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return 1.0
    test, kind = (ks_stat_test, ColumnType.Numerical) if method == "ks" else (chi_stat_test, ColumnType.Categorical)
    with np.errstate(divide="ignore"):  # a category absent from one side: chi-square is infinite, p = 0, as it should
        score = float(test(ref, cur, kind, 0.05).drift_score)
    return 1.0 if math.isnan(score) else score


def _change(reference: pd.Series, current: pd.Series, method: str) -> str:
    """How a drifted column moved: median reference -> window (numbers), or the reference's commonest value's share
    reference -> window (categories)."""
    if method == "ks":
        return f"median {reference.median():.4g} -> {current.median():.4g}"
    top = reference.value_counts(normalize=True)
    if top.empty:
        return ""
    value = top.index[0]
    return f"{value}: {top.iloc[0]:.0%} -> {(current == value).mean():.0%}"


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numerical: Sequence[str],
    categorical: Sequence[str],
    tested_categorical: Sequence[str] | None = None,
    embedding: Sequence[str] = (),
    summaries: Sequence[str] = (),
    alpha: float = 0.05,
    report: bool = True,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> DriftResult:
    """Compare a window (current) with the reference on the given columns, at family-wise level `alpha`.

    Columns constant in both samples are skipped (no test can move). The level is split over the tests made
    (Bonferroni: each column's KS or chi-square test and the embedding test). Categorical columns are also checked
    for values new to the reference, an alert by itself; `tested_categorical` (default: all of them) are also
    chi-square tested. `report`: also build the Evidently snapshot (its
    `ValueDrift` of each column at the same level, which shows the same p-values, `DriftedColumnsCount`, and the
    window's mean of each of `summaries` for the dashboard's series); the decision never depends on it, and
    without it a comparison costs milliseconds instead of about a second of plot rendering.
    """
    result = DriftResult(len(reference), len(current), tags=list(tags))
    if current.empty or reference.empty:
        return result
    result.new_categories = new_categories(reference, current, categorical)
    both = pd.concat([reference[[*numerical, *categorical]], current[[*numerical, *categorical]]])
    testable_num = [c for c in numerical if both[c].notna().any() and both[c].nunique(dropna=True) > 1]
    tested = categorical if tested_categorical is None else tested_categorical
    testable_cat = [c for c in tested if both[c].nunique(dropna=True) > 1]
    use_embedding = bool(embedding) and len(current) >= 2
    n_tests = len(testable_num) + len(testable_cat) + int(use_embedding)
    if not n_tests:
        return result
    level = alpha / n_tests
    for column, method in [(c, "ks") for c in testable_num] + [(c, "chisquare") for c in testable_cat]:
        score = column_pvalue(reference[column], current[column], method)
        drifted = score < level
        change = _change(reference[column], current[column], method) if drifted else ""
        result.columns.append(ColumnDrift(column, method, score, level, drifted, change))
    if use_embedding:
        result.embedding_score, result.embedding_drifted = embedding_drift(reference, current, embedding, level=level)
    if report and (testable_num or testable_cat):
        with np.errstate(divide="ignore"):  # its chi-square meets the same absent categories as column_pvalue
            result.snapshot = _snapshot(
                reference, current, testable_num, testable_cat, summaries, level, timestamp, tags, metadata
            )
    return result


def _snapshot(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    testable_num: list[str],
    testable_cat: list[str],
    summaries: Sequence[str],
    level: float,
    timestamp: dt.datetime | None,
    tags: Sequence[str],
    metadata: dict[str, str] | None,
) -> Any:
    """The Evidently report of one comparison, for the workspace and the HTML/JSON kept under reports/."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, MeanValue, ValueDrift

    extra = [c for c in summaries if c not in testable_num and current[c].notna().any()]
    definition = DataDefinition(
        numerical_columns=testable_num + extra, categorical_columns=testable_cat, text_columns=[],
        datetime_columns=[], unknown_columns=[], list_columns=[],
    )  # fmt: skip
    cols = testable_num + extra + testable_cat
    ref_ds = Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=definition)
    cur_ds = Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=definition)
    metrics = [ValueDrift(column=c, method="ks", threshold=level) for c in testable_num]
    metrics += [ValueDrift(column=c, method="chisquare", threshold=level) for c in testable_cat]
    n_columns = len(testable_num) + len(testable_cat)
    metrics.append(
        DriftedColumnsCount(
            columns=testable_num + testable_cat, num_method="ks", num_threshold=level,
            cat_method="chisquare", cat_threshold=level, drift_share=1.0 / n_columns,
        )
    )  # fmt: skip
    metrics += [MeanValue(column=c) for c in summaries if c in cols]
    return Report(metrics).run(
        current_data=cur_ds,
        reference_data=ref_ds,
        timestamp=timestamp or dt.datetime.now(),
        tags=list(tags),
        metadata=dict(metadata or {}),
    )
