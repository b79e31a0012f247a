"""Compare the feature store's closed windows with a reference, per segment; store every comparison; list alerts.

`monitor_windows` is the analysis half of issue 12's `cordwatch monitor` (the command, the Prefect flow and its
`cordwatch.drift.detected` event, and the reference stored at registration are still to come): each closed window
of `STORE/features.parquet` not yet analysed is compared with the reference overall and per site, scanner and
field strength (`monitoring.windows`, `monitoring.drift`); each comparison goes to the Evidently workspace
(`monitoring.dashboard`) and to `reports/monitoring/` as HTML and JSON; each alert becomes a row of
`STORE/alerts.parquet` naming the window, the segment and what moved. Windows already analysed are recorded in
`STORE/windows.json` and never analysed twice.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.collect import read_store
from monitoring.dashboard import ALL_SITES, SUMMARY_SERIES, add_window, open_workspace
from monitoring.drift import compare
from monitoring.features import IMAGE_NUMERICAL, META_CATEGORICAL, META_NUMERICAL, OUTPUT_NUMERICAL
from monitoring.windows import columns_of, ordered, segments, windows
from pipelines.io import write_atomic, write_parquet_atomic

ALERTS_FILE = "alerts.parquet"
DONE_FILE = "windows.json"
NUMERICAL = (*META_NUMERICAL, *IMAGE_NUMERICAL, *OUTPUT_NUMERICAL)


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
    embedding = columns_of(reference, ["emb_"])
    ws = open_workspace(workspace)
    alerts: list[dict[str, Any]] = []
    for window in windows(rows, size=size, period_s=period_s) if len(rows) else []:
        key = f"{window.start}-{window.stop}"
        if key in done:
            continue
        current = window.rows(rows)
        when = dt.datetime.fromtimestamp(window.closed_at)
        sites = sorted(current["meta_site"].dropna().unique(), key=str)
        for tag, ref_rows, cur_rows in segments(reference, current):
            result = compare(
                ref_rows, cur_rows, numerical=NUMERICAL, categorical=META_CATEGORICAL, embedding=embedding,
                summaries=list(SUMMARY_SERIES), alpha=alpha, timestamp=when,
                tags=[f"segment:{tag}", *([tag] if tag != "all" else [])],
                metadata={"window": str(window.index), "studies": str(len(cur_rows))},
            )  # fmt: skip
            site = tag.split(":", 1)[1] if tag.startswith("site:") else ALL_SITES
            add_window(ws, result, site=site)
            if tag == "all" and len(sites) == 1:  # a one-site window also shows on that site's own dashboard
                add_window(ws, result, site=str(sites[0]))
            if result.snapshot is not None:
                stem = reports / f"window{window.index:05d}-{tag.replace(':', '-')}"
                stem.parent.mkdir(parents=True, exist_ok=True)
                result.snapshot.save_html(str(stem.with_suffix(".html")))  # str: a Path is silently ignored
                write_atomic(stem.with_suffix(".json"), result.snapshot.json().encode())
            if result.alert:
                alerts.append(
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
        done.add(key)
        write_atomic(done_path, json.dumps(sorted(done)).encode())
    if alerts:
        kept = pd.read_parquet(store / ALERTS_FILE) if (store / ALERTS_FILE).is_file() else pd.DataFrame()
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(alerts)], ignore_index=True), store / ALERTS_FILE)
    return alerts
