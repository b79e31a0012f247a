"""Prefect flow: the final model and the reader groups on the internal and external test sets, with patient-bootstrap
CIs, a paired model-minus-readers comparison and subgroups; logged to an MLflow evaluation run linked to training.

Thin: one task calls `pipelines.evaluate.run.run_evaluate` (progress to the run logger, a bar on a terminal); the
flow logs the result with `flows.tracking.log_evaluation`.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tracking import log_evaluation
from pipelines.config import Params
from pipelines.evaluate.run import run_evaluate
from pipelines.progress import ProgressReporter


@task(name="evaluate-test-sets", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> dict[str, Any]:
    """Predict on each test set, score model and readers against the reference, write the report files; return
    metrics.json."""
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_evaluate(params, progress=reporter)


@flow(name="cordwatch-evaluate")
def evaluate_flow(params: Params) -> dict[str, Any]:
    """Evaluate the final model; write reports/evaluation/{metrics.json,report.md}; log an MLflow evaluation run."""
    metrics = evaluate_task(params)
    train_run = params.paths.train_run_file
    train_run_id = json.loads(train_run.read_text())["mlflow_run_id"] if train_run.is_file() else ""
    metrics["mlflow_run_id"] = log_evaluation(params, metrics, train_run_id)
    get_run_logger().info("evaluation report: %s", params.paths.evaluation_report)
    return metrics
