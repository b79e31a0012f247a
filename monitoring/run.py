"""The monitor stage: new studies' features kept, closed windows compared with the model's reference, alerts.

`run_monitor` is what `cordwatch monitor` (its Prefect flow, `flows/monitor_flow.py`) and any driver call: the
quick read of new studies (a folder or a DICOMweb PACS) keeps one feature row per study (`monitoring.collect`),
then `monitor_windows` analyses what closed. The reference is the one registration stored with the model
(`pipelines.predict.reference`), so the model URI is all monitoring needs. Emitting the Prefect event per alert is
the flow's part (the driver runs without Prefect).

`monitor_windows`: each closed window of `STORE/features.parquet` not yet analysed is compared with the reference
overall and per site, scanner and field strength (`monitoring.windows`, `monitoring.drift`); each comparison goes
to the Evidently workspace (`monitoring.dashboard`) and to `reports/monitoring/windows/` as HTML and JSON; each
alert becomes a row of `STORE/alerts.parquet` naming the window, the segment and what moved. Windows already
analysed are recorded in `STORE/windows.json` and never analysed twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from monitoring.collect import IMAGES_FILE, PREDICTIONS_FILE, collect_features, read_store
from monitoring.dashboard import ALL_SITES, SUMMARY_SERIES, add_window, open_workspace
from monitoring.drift import DriftResult, compare
from monitoring.shadow import agreement
from monitoring.windows import columns_of, ordered, segments, windows
from pipelines.io import write_atomic, write_json, write_parquet_atomic
from pipelines.predict.features import IMAGE_NUMERICAL, META_CATEGORICAL, META_NUMERICAL, OUTPUT_NUMERICAL
from pipelines.predict.model import ModelError, ModelRef, resolve_model
from pipelines.progress import ProgressFn

if TYPE_CHECKING:
    from pipelines.config import Params

STAGE = "monitor"
ALERTS_FILE = "alerts.parquet"
DONE_FILE = "windows.json"
NUMERICAL = (*META_NUMERICAL, *IMAGE_NUMERICAL, *OUTPUT_NUMERICAL)
NEW_SEGMENT_NUMERICAL = (*IMAGE_NUMERICAL, *OUTPUT_NUMERICAL)  # a segment the reference never had: its header
# facts differ by definition (and alert as new categories); what its images and outputs look like is the question
log = logging.getLogger(__name__)


def analyse_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    alpha: float,
    report: bool = True,
    timestamp: dt.datetime | None = None,
    index: int = 0,
) -> list[tuple[str, pd.DataFrame, DriftResult]]:
    """Each segment of one window (`all`, site, scanner, field strength) against the reference: (tag, the
    segment's rows, result). The window's `alpha` is split over its segments (Bonferroni), so a window with no
    change alerts with probability at most `alpha`, however many segments it has. `report`: build the Evidently
    snapshots too (the decisions do not depend on them; `benchmarks/drift.py` measures without).

    The embedding test runs on `all` and on segments the reference never had: its null is a bootstrap of 100
    random scorers, so its smallest attainable level is about 1 %, not the Bonferroni share; run on every segment it
    would dominate the false alarms (measured: 1 window in 6 on a 40-study reference)."""
    parts = list(segments(reference, current))
    embedding = columns_of(reference, ["emb_"])
    out = []
    for tag, ref_rows, cur_rows, seen in parts:
        result = compare(
            ref_rows, cur_rows, numerical=NUMERICAL if seen else NEW_SEGMENT_NUMERICAL, categorical=META_CATEGORICAL,
            tested_categorical=None if seen else (), embedding=embedding if tag == "all" or not seen else (),
            summaries=list(SUMMARY_SERIES), alpha=alpha / len(parts), report=report, timestamp=timestamp,
            tags=[f"segment:{tag}", *([tag] if tag != "all" else [])],
            metadata={"window": str(index), "studies": str(len(cur_rows))},
        )  # fmt: skip
        out.append((tag, cur_rows, result))
    return out


def monitor_windows(
    store: Path,
    reference: pd.DataFrame,
    *,
    workspace: Path,
    reports: Path,
    size: int,
    period_s: float | None = None,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Analyse the new closed windows; returns the alerts raised (also appended to `STORE/alerts.parquet`)."""
    rows = ordered(read_store(store))
    done_path = store / DONE_FILE
    done = set(json.loads(done_path.read_text())) if done_path.is_file() else set()
    ws = open_workspace(workspace)
    alerts: list[dict[str, Any]] = []
    for window in windows(rows, size=size, period_s=period_s) if len(rows) else []:
        raised: list[dict[str, Any]] = []
        key = f"{window.start}-{window.stop}"
        if key in done:
            continue
        current = window.rows(rows)
        sites = sorted(current["meta_site"].dropna().unique(), key=str)
        analysed = analyse_window(
            reference, current, alpha=alpha, timestamp=dt.datetime.fromtimestamp(window.closed_at), index=window.index,
        )  # fmt: skip
        for tag, cur_rows, result in analysed:
            site = tag.split(":", 1)[1] if tag.startswith("site:") else ALL_SITES
            add_window(ws, result, site=site)
            if len(sites) == 1 and not tag.startswith("site:"):  # a one-site window: its overall, scanner and
                add_window(ws, result, site=str(sites[0]))  # field comparisons show on that site's dashboard too
            if result.snapshot is not None:
                stem = reports / f"window{window.index:05d}-{tag.replace(':', '-')}"
                stem.parent.mkdir(parents=True, exist_ok=True)
                result.snapshot.save_html(str(stem.with_suffix(".html")))  # str: a Path is silently ignored
                write_atomic(stem.with_suffix(".json"), result.snapshot.json().encode())
            if result.alert:
                raised.append(
                    {
                        "window": window.index,
                        "closed_at": window.closed_at,
                        "segment": tag,
                        "sites": ";".join(map(str, sites)),
                        "studies": len(cur_rows),
                        "reasons": "; ".join(result.reasons()),
                        "new_categories": json.dumps(result.new_categories),
                        "embedding_score": result.embedding_score,
                    }
                )
        append_alerts(store / ALERTS_FILE, raised)  # before the window counts as done: a kill loses no alert
        alerts += raised
        done.add(key)
        write_atomic(done_path, json.dumps(sorted(done)).encode())
    return alerts


def append_alerts(path: Path, alerts: list[dict[str, Any]]) -> None:
    """Add alerts to the alerts table (drift and performance alerts share it)."""
    if alerts:
        kept = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(alerts)], ignore_index=True), path)


def reference_of(params: Params, model_uri: str | None = None) -> tuple[Any, pd.DataFrame]:
    """The model (`monitor.model_uri`, else `predict.model_uri`) and the reference registration stored with it."""
    model = resolve_model(model_uri or params.monitor.model_uri or params.predict.model_uri, params)
    if model.reference is None or not model.reference.is_file():
        raise ModelError(
            f"{model.name} version {model.version} carries no monitoring reference (a weights file, or a version "
            "registered before monitoring existed): register the model again with `cordwatch register`"
        )
    return model, pd.read_parquet(model.reference)


def run_monitor(
    params: Params,
    source: Path | None = None,
    *,
    pacs_url: str | None = None,
    model_uri: str | None = None,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Keep the features of the new studies of `source` (or the PACS), analyse the windows that closed, write
    `reports/monitoring/summary.json`; returns that summary, with this run's alerts.

    Raises:
        ModelError: the model cannot be found or carries no reference.
        PredictInputError: source missing or empty.
        PacsError: the PACS cannot be reached.
    """
    settings, paths = params.monitor, params.paths
    model, reference = reference_of(params, model_uri)
    store = paths.monitoring_dir
    reports = paths.report_dir("monitoring")
    reads = out_dir or reports / "reads"
    challenger = shadow_model(params, model)
    counts = collect_features(
        params, source, pacs_url=pacs_url, store=store, out_dir=reads, model=model, challenger=challenger,
        progress=progress,
    )  # fmt: skip
    alerts = monitor_windows(
        store, reference, workspace=store / "workspace", reports=reports / "windows", size=settings.window_size,
        period_s=settings.window_days * 86400 if settings.window_days else None, alpha=settings.alpha,
    )  # fmt: skip
    for alert in alerts:
        log.warning("drift alert: window %s, %s (sites %s): %s", alert["window"], alert["segment"],
                    alert["sites"], alert["reasons"])  # fmt: skip
    summary = {
        "stage": STAGE,
        "model": model.to_json(),
        "challenger": counts.get("shadow") or None,
        "reference_studies": len(reference),
        "studies_read": counts["studies"],
        "new_rows": counts["new_rows"],
        "already_kept": counts.get("already_kept", 0) + counts.get("skipped_already_read", 0),
        "failed": counts["failed"],
        "studies_kept": counts["studies_kept"],
        "alerts": alerts,
        "store": str(store),
        "workspace": str(store / "workspace"),
        "reports": str(reports / "windows"),
    }
    shadow = agreement(read_store(store, PREDICTIONS_FILE), read_store(store, IMAGES_FILE))
    if shadow:
        summary["shadow"] = shadow
        write_json(reports / "shadow.json", {"definition": SHADOW_DEFINITION, "sites": shadow})
    write_json(reports / "summary.json", summary)
    return summary


SHADOW_DEFINITION = (
    "studies both models read; study agreement: both positive or both negative (any compression box); kappa: "
    "Cohen's; box F1: challenger boxes matched one-to-one to the champion's, same class and image, IoU >= 0.5"
)


def shadow_model(params: Params, champion: ModelRef) -> ModelRef | None:
    """The challenger to read in shadow, or None (not configured, alias not set, or the champion itself)."""
    uri = params.monitor.challenger_uri
    if not uri:
        return None
    try:
        challenger = resolve_model(uri, params)
    except ModelError as exc:
        log.info("no shadow challenger: %s", exc)
        return None
    if challenger.weights_sha256 == champion.weights_sha256:
        return None
    return challenger
