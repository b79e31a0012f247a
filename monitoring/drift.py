"""Is a window of studies different from the reference? Column drift and new categories with Evidently 0.7, and
embedding drift with Evidently's classifier method.

One call compares one segment (all studies, or one site, scanner or field strength) of one window with the
reference. Decisions, and why:
- Every column's test is set explicitly (`ks` for numbers, `chisquare` for categories), never left to Evidently:
  its default switches silently from p-values to distances at 1,000 reference rows, which would change the
  scores' meaning and the dashboard's series.
- A window alerts when a column's p-value is below `alpha / number of columns` (Bonferroni): with twenty columns
  tested at 0.05 each, two windows in three would alert on no change at all.
- Categories never seen in the reference (a new scanner model, a new software version) are found with pandas
  (Evidently has no metric naming them) and alert by themselves.
- Embeddings: Evidently's `ModelDriftMethod` (a classifier told to separate reference from current; ROC AUC, with
  its bootstrap below 1,000 reference rows) called directly: its `EmbeddingsDrift` metric spends about a minute
  drawing a TSNE plot per report (docs/dev-notes/evidently-0.7.md, section 7).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float  # a p-value: smaller is more different
    threshold: float  # the Bonferroni-corrected level the score is compared with
    drifted: bool


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

    @property
    def drifted_columns(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    @property
    def alert(self) -> bool:
        return bool(self.drifted_columns or self.new_categories or self.embedding_drifted)

    def reasons(self) -> list[str]:
        """What moved, readably: the alert's text."""
        out = [f"{c.column} ({c.method} p={c.score:.2g} < {c.threshold:.2g})" for c in self.drifted_columns]
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


def embedding_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]) -> tuple[float, bool]:
    """Evidently's classifier embedding-drift method (its defaults: threshold 0.55 on ROC AUC, bootstrap when the
    reference has fewer than 1,000 rows)."""
    from evidently.metrics.embeddings import ModelDriftMethod

    method = ModelDriftMethod(bootstrap=len(reference) < 1000)
    score, drifted, _ = method(current[list(columns)].copy(), reference[list(columns)].copy())
    return float(score), bool(drifted)


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numerical: Sequence[str],
    categorical: Sequence[str],
    embedding: Sequence[str] = (),
    summaries: Sequence[str] = (),
    alpha: float = 0.05,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> DriftResult:
    """Compare a window (current) with the reference on the given columns.

    Columns constant in both samples are skipped (no test can move); categorical columns are also checked for
    values new to the reference. `summaries`: numerical columns whose mean in the window the snapshot also
    records (`MeanValue`), for the dashboard's series (SNR, positive rate, confidence).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, MeanValue, ValueDrift

    result = DriftResult(len(reference), len(current))
    if current.empty or reference.empty:
        return result
    result.new_categories = new_categories(reference, current, categorical)
    both = pd.concat([reference, current])
    testable_num = [c for c in numerical if both[c].notna().any() and both[c].nunique(dropna=True) > 1]
    testable_cat = [c for c in categorical if both[c].nunique(dropna=True) > 1]
    n_tests = len(testable_num) + len(testable_cat)
    if n_tests:
        level = alpha / n_tests
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
        metrics.append(
            DriftedColumnsCount(
                columns=testable_num + testable_cat, num_method="ks", num_threshold=level,
                cat_method="chisquare", cat_threshold=level, drift_share=1.0 / n_tests,
            )
        )  # fmt: skip
        metrics += [MeanValue(column=c) for c in summaries if c in cols]
        snapshot = Report(metrics).run(
            current_data=cur_ds,
            reference_data=ref_ds,
            timestamp=timestamp or dt.datetime.now(),
            tags=list(tags),
            metadata=dict(metadata or {}),
        )
        for entry in snapshot.dict()["metrics"]:
            config = entry["config"]
            if not config["type"].endswith(":ValueDrift"):
                continue
            score = float(entry["value"])
            score = 1.0 if math.isnan(score) else score
            result.columns.append(ColumnDrift(config["column"], config["method"], score, level, drifted=score < level))
        result.snapshot = snapshot
    if embedding and len(current) >= 2:
        result.embedding_score, result.embedding_drifted = embedding_drift(reference, current, embedding)
    return result
