"""Prefect flow: keep new studies' features, compare the closed windows with the model's reference, and emit
`cordwatch.drift.detected` (`monitor.event`) per alerting site.

Thin: one task calls `monitoring.run.run_monitor`. As for predict, what to read comes from `OUT/request.json`
(an input path can name a patient; Prefect keeps flow parameters in its database). The events carry site codes or
pseudonyms, segments and what moved: never a study or patient identifier.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from flows.predict_flow import REQUEST_FILE
from monitoring.prospective import run_monitor_labels
from monitoring.run import run_monitor
from pipelines.config import Params
from pipelines.io import write_json
from pipelines.progress import ProgressReporter

LABELS_REQUEST = "labels_request.json"


@task(name="monitor-studies", cache_policy=NO_CACHE)
def monitor_task(params: Params, out_dir: Path) -> dict[str, Any]:
    """run_monitor on the request in out_dir; returns its summary (counts, alerts)."""
    request = json.loads((out_dir / REQUEST_FILE).read_text())
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_monitor(
            params,
            Path(request["source"]) if request["source"] else None,
            pacs_url=request["pacs_url"],
            model_uri=request["model_uri"],
            out_dir=out_dir,
            progress=reporter,
        )


def alert_events(alerts: list[dict[str, Any]], event: str, model: str) -> list[dict[str, Any]]:
    """One event per site an alert concerns (a retraining deployment triggers per site), listing its alerts."""
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        segment = str(alert["segment"])
        sites = [segment.split(":", 1)[1]] if segment.startswith("site:") else str(alert["sites"]).split(";")
        for site in filter(None, sites):
            by_site[site].append(alert)
    return [
        {
            "event": event,
            "resource": {"prefect.resource.id": f"cordwatch.site.{site}", "cordwatch.site": site},
            "payload": {
                "model": model,
                "alerts": [
                    {"window": int(a["window"]), "segment": a["segment"], "reasons": a["reasons"]} for a in found
                ],
            },
        }
        for site, found in sorted(by_site.items())
    ]


@flow(name="cordwatch-monitor")
def monitor_flow(params: Params, out_dir: Path) -> dict[str, Any]:
    """Monitor the requested studies; log counts and alerts (never identifiers); emit one event per alerting site."""
    summary = monitor_task(params, out_dir)
    logger = get_run_logger()
    logger.info(
        "%d studies read, %d new feature rows, %d kept in all; %d alerts",
        summary["studies_read"], summary["new_rows"], summary["studies_kept"], len(summary["alerts"]),
    )  # fmt: skip
    model = f"{summary['model']['name']}/{summary['model']['version']}"
    for event in alert_events(summary["alerts"], params.monitor.event, model):
        emit_event(**event)
        logger.warning("emitted %s for site %s", event["event"], event["resource"]["cordwatch.site"])
    return summary


def write_labels_request(reports: Path, labels_csv: Path, model_uri: str | None) -> None:
    """The labels file to read, kept beside the reports (a file name can name a patient; flow parameters are kept
    in Prefect's database)."""
    write_json(reports / LABELS_REQUEST, {"labels": str(labels_csv), "model_uri": model_uri})


@task(name="score-delayed-labels", cache_policy=NO_CACHE)
def labels_task(params: Params, reports: Path) -> dict[str, Any]:
    request = json.loads((reports / LABELS_REQUEST).read_text())
    return run_monitor_labels(params, Path(request["labels"]), model_uri=request["model_uri"])


@flow(name="cordwatch-monitor-labels")
def monitor_labels_flow(params: Params, reports: Path) -> dict[str, Any]:
    """Score delayed expert reads; emit `monitor.event` per site whose performance fell below the external CI."""
    summary = labels_task(params, reports)
    logger = get_run_logger()
    logger.info("%d labelled images scored; %d alerts", summary["labelled_images"], len(summary["alerts"]))
    model = f"{summary['model']['name']}/{summary['model']['version']}"
    for event in alert_events(summary["alerts"], params.monitor.event, model):
        emit_event(**event)
        logger.warning("emitted %s for site %s", event["event"], event["resource"]["cordwatch.site"])
    enough = labels_enough(params, summary["labelled_studies"])
    if enough is not None:
        emit_event(**enough)
        logger.warning("emitted %s: %d studies labelled since the last one", enough["event"], enough["payload"]["new"])
    return summary


def labels_enough(params: Params, labelled_studies: int) -> dict[str, Any] | None:
    """The `cordwatch.labels.enough` event when `schedule.retrain_after_labelled_studies` studies have been labelled
    since the last one (the count at that event is kept in the monitoring store); None otherwise."""
    from flows.schedule import LABELS_EVENT

    every = params.schedule.retrain_after_labelled_studies
    marker = params.paths.monitoring_dir / "labels_trigger.json"
    last = json.loads(marker.read_text())["labelled_studies"] if marker.is_file() else 0
    if not every or labelled_studies - last < every:
        return None
    write_json(marker, {"labelled_studies": labelled_studies})
    return {
        "event": LABELS_EVENT,
        "resource": {"prefect.resource.id": "cordwatch.labels"},
        "payload": {"labelled_studies": labelled_studies, "new": labelled_studies - last},
    }
