"""Run the data contracts on the ingested tables (and the splits), render Data Docs, report every failure.

One ephemeral great-expectations context per run (nothing written but the Data Docs and a summary), a pandas data
source with one dataframe asset, suite and validation definition per frame, and one Data Docs build at the end.
A Checkpoint is not used: it feeds the same batch parameters to every validation definition, and each frame here is
a different dataframe.

Offending values that may be identity (a key that is not a pseudonym, a value that looks like a name, a date or a
UID) are redacted before they reach a message, a log or the Data Docs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.io import files_fingerprint
from pipelines.settings import PathsParams, ReadersParams
from pipelines.validate.frames import Frame, Redactor, build_frames, plain
from pipelines.validate.params import ValidateParams
from pipelines.validate.suites import SUITES, load_gx

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext

log = logging.getLogger(__name__)

# The report's name under `paths.reports_dir`: Data Docs in `paths.report_dir(REPORT)`, the DVC metric in
# `paths.summary_file(REPORT)`.
REPORT = "validation"
_TABLES = ("images", "annotations", "splits")


class DataContractError(ValueError):
    """The data break their contract: training must not start. The message names every failed expectation."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation.

    Attributes:
        table: the contract: images, annotations or splits.
        suite: the validated frame / suite (e.g. "splits_per_patient").
        expectation: its name, e.g. "splits: no patient in two folds".
        description: the great-expectations call behind it, e.g. "expect_column_values_to_be_between(column=...)".
        unexpected_count: offending rows (None for table-level expectations and for one that could not run).
        element_count: rows it looked at.
        examples: up to `max_examples` offending rows as dicts of key and checked columns (identity redacted), or
            the observed value of a table-level expectation.
        error: why it could not run (e.g. a missing column), else None.
    """

    table: str
    suite: str
    expectation: str
    description: str
    unexpected_count: int | None
    element_count: int | None
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        """One readable line (plus examples) for the error message."""
        if self.error:
            what = f"could not run: {self.error}"
        elif self.unexpected_count is not None:
            what = f"{self.unexpected_count} of {self.element_count} rows"
        else:
            what = "failed"
        shown = "; ".join(json.dumps(x, default=str, sort_keys=False) for x in self.examples)
        return f"- {self.expectation} [{self.suite}]: {what}" + (f"\n    e.g. {shown}" if shown else "")


@dataclass
class ValidationReport:
    """What one validation run found.

    Attributes:
        success: every expectation held.
        failures: every failed expectation, in suite order.
        docs_index: the Data Docs entry page (`<reports>/validation/index.html`).
        summary: the deterministic content of `<reports>/validation/summary.json`.
        seconds: wall time of the run (not in the summary: it would change on every run).
    """

    success: bool
    failures: list[Failure]
    docs_index: Path
    summary: dict[str, Any]
    seconds: float = 0.0

    def message(self) -> str:
        """Every failed expectation by name, with a few offending rows each."""
        if self.success:
            return f"data contracts hold ({self._counts()}); Data Docs: {self.docs_index}"
        by_table = ", ".join(f"{t} {n}" for t in _TABLES if (n := sum(f.table == t for f in self.failures)))
        lines = [
            f"data contract violated: {len(self.failures)} expectation(s) failed ({by_table}); "
            "no model may be trained on this data.",
            *(f.line() for f in self.failures),
            f"Data Docs: {self.docs_index}",
        ]
        return "\n".join(lines)

    def _counts(self) -> str:
        tables = self.summary.get("tables", {})
        return ", ".join(f"{t}: {v['expectations']} expectations" for t, v in tables.items())

    def raise_for_failures(self) -> None:
        """Raise DataContractError naming every failed expectation; return quietly if all held."""
        if not self.success:
            raise DataContractError(self.message())


def validate_dataset(
    params: ValidateParams,
    readers: ReadersParams,
    paths: PathsParams,
    external_sites: Sequence[str],
) -> ValidationReport:
    """Validate the ingested tables (and the splits, if present) against their contracts.

    Args:
        params: the `validation` section.
        readers: the `readers` section (reference level, reader ids and levels).
        paths: reads `ingested_dir` (images.parquet, annotations.parquet) and `splits_file` (a missing file runs
            the images and annotations suites only); writes the Data Docs to `report_dir("validation")` (replaced
            whole), with `summary_file("validation")`.
        external_sites: site codes that must never be in training (params `split.external_sites`).

    Returns:
        The report; call `raise_for_failures()` to stop a flow on any failure.

    Raises:
        FileNotFoundError: images.parquet or annotations.parquet is missing (ingest has not run).
    """
    start = time.perf_counter()
    images = _read(paths.ingested_dir / IMAGES_TABLE)
    annotations = _read(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = _read(paths.splits_file) if paths.splits_file.is_file() else None
    frames = build_frames(images, annotations, splits, params, readers)

    docs_dir = paths.report_dir(REPORT)
    staging = docs_dir.with_name(f".{docs_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        failures, per_suite = _run_suites(frames, params, readers, external_sites, staging)
        summary = _summary(frames, per_suite, failures, splits is not None)
        summary["data_fingerprint"] = files_fingerprint(paths.data_files)  # what registration checks against
        summary_file = staging / paths.summary_file(REPORT).relative_to(docs_dir)
        summary_file.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _swap(staging, docs_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left if the run failed half way
    report = ValidationReport(
        success=not failures,
        failures=failures,
        docs_index=docs_dir / "index.html",
        summary=summary,
        seconds=time.perf_counter() - start,
    )
    log.info(
        "validate: %d expectations, %d failed, %.1f s; Data Docs %s",
        sum(s["expectations"] for s in per_suite.values()),
        len(failures),
        report.seconds,
        report.docs_index,
    )
    return report


def _run_suites(
    frames: list[Frame],
    params: ValidateParams,
    readers: ReadersParams,
    external_sites: Sequence[str],
    docs_root: Path,
) -> tuple[list[Failure], dict[str, dict[str, int]]]:
    """Validate each frame with its suite in one ephemeral context; build the Data Docs under `docs_root`."""
    context = _context(docs_root)
    gx = load_gx()
    redactor = Redactor(readers)
    source = context.data_sources.add_pandas("cordwatch")
    failures: list[Failure] = []
    per_suite: dict[str, dict[str, int]] = {}
    for frame in frames:
        suite = context.suites.add(SUITES[frame.name](params, readers, tuple(external_sites)))
        order = {exp.id: i for i, exp in enumerate(suite.expectations)}
        batch_definition = source.add_dataframe_asset(frame.name).add_batch_definition_whole_dataframe(frame.name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=frame.name, data=batch_definition, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame.data},
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": [k for k in frame.keys if k in frame.data.columns],
                "partial_unexpected_count": params.max_examples,
                "return_unexpected_index_query": False,
            },
        )
        _redact_result(result, redactor)
        _restore(context, frame.name, result)  # the Data Docs render the redacted copy
        # GX regroups results by column; report them in the order the suite lists its expectations.
        failed = sorted((r for r in result.results if not r.success), key=lambda r: order[r.expectation_config.id])
        failures += [_failure(frame, r, params.max_examples) for r in failed]
        per_suite[frame.name] = {"expectations": len(result.results), "failed": len(failed)}
    context.build_data_docs()
    return failures, per_suite


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `cordwatch ingest` (and `cordwatch split`) first")
    return pd.read_parquet(path)


def _context(docs_root: Path) -> AbstractDataContext:
    """An ephemeral context: stores in memory, one local Data Docs site, no progress bars, no analytics."""
    gx = load_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_root.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars per metric graph would flood flow logs
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _domain(config: Any) -> list[str | None]:
    """The column(s) an expectation's unexpected values come from, in the order GX reports them."""
    kw = config.kwargs
    if "column" in kw:
        return [kw["column"]]
    if "column_A" in kw:
        return [kw["column_A"], kw["column_B"]]
    return [None]


def _redact_result(result: ExpectationSuiteValidationResult, redactor: Redactor) -> None:
    """Redact, in place, every offending value GX put in the result (values, value counts, index rows)."""
    for r in result.results:
        for info in _exception_entries(r):
            for key in ("exception_message", "exception_traceback"):
                if isinstance(info.get(key), str):  # a pandas error can quote the offending value
                    info[key] = redactor.text(info[key])
        res = r.result
        if not res:
            continue
        cols = _domain(r.expectation_config)

        def one(value: Any, cols: list[str | None] = cols) -> Any:
            if isinstance(value, tuple | list) and len(cols) == len(value) > 1:
                return [redactor.value(c, v) for c, v in zip(cols, value, strict=True)]
            if isinstance(value, dict):
                return redactor.row(value)
            return redactor.value(cols[0], value)

        for key in ("partial_unexpected_list", "unexpected_list"):
            if isinstance(res.get(key), list):
                res[key] = [one(v) for v in res[key]]
        for key in ("partial_unexpected_index_list", "unexpected_index_list"):
            if isinstance(res.get(key), list):
                res[key] = [redactor.row(row) if isinstance(row, dict) else plain(row) for row in res[key]]
        if isinstance(res.get("partial_unexpected_counts"), list):
            res["partial_unexpected_counts"] = [
                {**c, "value": one(c.get("value"))} for c in res["partial_unexpected_counts"]
            ]


def _restore(context: AbstractDataContext, suite_name: str, result: ExpectationSuiteValidationResult) -> None:
    """Overwrite the stored result (which Data Docs render) with the redacted one."""
    store = context.validation_results_store
    for key in store.list_keys():
        if key.expectation_suite_identifier.name == suite_name:
            store.set(key, result)


def _failure(frame: Frame, r: ExpectationValidationResult, max_examples: int) -> Failure:
    config = r.expectation_config
    res = r.result or {}
    error = _error(r)
    if "partial_unexpected_index_list" in res:
        examples = _examples(res["partial_unexpected_index_list"], frame.keys, max_examples)
    elif "observed_value" in res:  # table-level expectation: show what was observed
        observed = {"observed_value": plain(res["observed_value"])}
        mismatched = (res.get("details") or {}).get("mismatched")
        examples = [{"missing": mismatched.get("missing")}] if isinstance(mismatched, dict) else [observed]
    else:
        examples = []
    return Failure(
        table=frame.table,
        suite=frame.name,
        expectation=config.description or config.type,
        description=_describe(config),
        unexpected_count=plain(res.get("unexpected_count")),
        element_count=plain(res.get("element_count")),
        examples=examples,
        error=error,
    )


def _examples(rows: list[Any], keys: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """Offending rows, key columns first, duplicates (e.g. several boxes of one image) shown once."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        ordered = {k: row[k] for k in keys if k in row} | {k: v for k, v in row.items() if k not in keys}
        fingerprint = json.dumps(ordered, default=str, sort_keys=True)
        if fingerprint not in seen:
            seen.add(fingerprint)
            out.append(ordered)
    return out[:limit]


def _exception_entries(r: ExpectationValidationResult) -> list[dict[str, Any]]:
    """GX keeps one exception entry per expectation, or one per failed metric keyed by metric id."""
    info = r.exception_info or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    return [e for e in entries if isinstance(e, dict)]


def _error(r: ExpectationValidationResult) -> str | None:
    """The exception message if the expectation could not be evaluated (e.g. its column is missing)."""
    entries = _exception_entries(r)
    messages = sorted({str(e.get("exception_message")) for e in entries if e.get("raised_exception")})
    return "; ".join(messages) or None


def _describe(config: Any) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{config.type}({args})"


def _summary(
    frames: list[Frame], per_suite: dict[str, dict[str, int]], failures: list[Failure], splits_validated: bool
) -> dict[str, Any]:
    """Counts only (no timestamps, no paths), so reruns on the same data give the same bytes for DVC metrics."""
    tables: dict[str, dict[str, Any]] = {}
    for frame in frames:
        entry = tables.setdefault(frame.table, {"rows": frame.rows, "expectations": 0, "failed": 0, "suites": {}})
        entry["expectations"] += per_suite[frame.name]["expectations"]
        entry["failed"] += per_suite[frame.name]["failed"]
        entry["suites"][frame.name] = per_suite[frame.name]
    for entry in tables.values():
        entry["success"] = entry["failed"] == 0
    return {
        "success": not failures,
        "splits_validated": splits_validated,
        "tables": tables,
        "failed_expectations": [f.expectation for f in failures],
    }


def _swap(staging: Path, final: Path) -> None:
    """Replace the Data Docs folder whole, so stale pages of an earlier run never linger next to this one."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
