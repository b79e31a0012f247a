"""Prefect flow: cross-validated YOLO11 training, tracked in MLflow (a parent run, a child run per model).

Thin: one task calls `pipelines.train.run.run_train` with the MLflow tracker plugged in as a hook and progress sent
to the run logger (a bar on a terminal). Folds run `train.parallel_folds` at a time in worker processes; their
epochs reach MLflow and the progress line as they end.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tracking import MLflowTrainTracker
from pipelines.config import Params
from pipelines.io import write_atomic
from pipelines.progress import ProgressReporter
from pipelines.train.core import TrainSummary
from pipelines.train.run import run_train


@task(name="train-folds", cache_policy=NO_CACHE)
def train_task(params: Params) -> tuple[TrainSummary, str]:
    """Train every fold and the final model, tracked in MLflow; return the summary and the parent run id."""
    tracker = MLflowTrainTracker(params)
    with ProgressReporter(get_run_logger().info) as reporter:
        summary = run_train(params, hooks=[tracker], progress=reporter)
    assert tracker.run_id is not None
    return summary, tracker.run_id


@flow(name="cordwatch-train")
def train_flow(params: Params) -> TrainSummary:
    """K-fold training on the development centre, then the final model; `models/train_run.json` names the MLflow
    run that trained it (evaluation links to it)."""
    summary, run_id = train_task(params)
    write_atomic(params.paths.train_run_file, (json.dumps({"mlflow_run_id": run_id}) + "\n").encode())
    get_run_logger().info(summary.line())
    return summary
