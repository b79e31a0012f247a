"""Prefect flow: read studies (a folder or a DICOMweb PACS), detect, triage, explain, write results.

Thin: one task calls `pipelines.predict.run.run_predict`. The input path can name a patient (exports are often
foldered by name), and Prefect keeps every flow run's parameters in its database, outside the output folder; so the
flow's parameters are the params and the output folder only, and what to read comes from `OUT/request.json`, which
the CLI writes there first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.io import write_json
from pipelines.predict.run import run_predict
from pipelines.progress import ProgressReporter

REQUEST_FILE = "request.json"


def write_request(
    out_dir: Path, *, source: Path | None, pacs_url: str | None, mode: str | None, model_uri: str | None
) -> None:
    """What the flow reads, kept in the output folder (the one place identity may go)."""
    write_json(
        out_dir / REQUEST_FILE,
        {"source": str(source) if source else None, "pacs_url": pacs_url, "mode": mode, "model_uri": model_uri},
    )


@task(name="predict-studies", cache_policy=NO_CACHE)
def predict_task(params: Params, out_dir: Path) -> dict[str, Any]:
    """run_predict on the request in out_dir; returns summary.json's run part (counts, model, timings)."""
    request = json.loads((out_dir / REQUEST_FILE).read_text())
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_predict(
            params,
            Path(request["source"]) if request["source"] else None,
            out_dir=out_dir,
            mode=request["mode"],
            model_uri=request["model_uri"],
            pacs_url=request["pacs_url"],
            progress=reporter,
        )


@flow(name="cordwatch-predict")
def predict_flow(params: Params, out_dir: Path) -> dict[str, Any]:
    """Predict the requested studies; log counts (never identifiers)."""
    summary = predict_task(params, out_dir)
    get_run_logger().info(
        "%d studies, %d images: %d suspected, %d explained, %d with problems",
        summary["studies"], summary["images"], summary["suspected"], summary["explained"], summary["failed"],
    )  # fmt: skip
    return summary
