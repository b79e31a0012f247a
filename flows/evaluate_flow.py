"""Prefect flow: the final model and the reader groups on the internal and external test sets, with patient-bootstrap
CIs, a paired model-minus-readers comparison and subgroups; logged to an MLflow evaluation run linked to training."""

from __future__ import annotations

import json
import math
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tracking import lineage_tags, setup_mlflow
from pipelines import runtime
from pipelines.config import Params
from pipelines.evaluate.run import evaluate_test_sets, write_evaluation


@task(name="evaluate-test-sets", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> dict[str, Any]:
    """Predict on each test set, score model and readers against the expert reference, write the report files;
    return metrics.json."""
    runtime.configure_ultralytics(params.paths.state_dir)
    metrics, predictions = evaluate_test_sets(params)
    write_evaluation(params.paths.reports_dir / "evaluation", metrics, predictions)
    return metrics


def _flat(metrics: dict[str, Any]) -> dict[str, float]:
    """Headline figures as MLflow metrics: <set>_<source>_<metric>[_low|_high]."""
    flat: dict[str, float] = {}
    for name, result in metrics["sets"].items():
        sources = {"model": result["model"], **{f"{g}_readers": m for g, m in result["reader_groups"].items()}}
        for source, figures in sources.items():
            for key, item in figures.items():
                for part, suffix in (("point", ""), ("low", "_low"), ("high", "_high")):
                    value = item.get(part)
                    if isinstance(value, float) and math.isfinite(value):
                        flat[f"{name}_{source}_{key}{suffix}"] = value
        for group, diff in result["model_minus_group"].items():
            for part in ("point", "low", "high", "p_value"):
                value = diff.get(part)
                if isinstance(value, float) and math.isfinite(value):
                    flat[f"{name}_model_minus_{group}_map50_{part}"] = value
    return flat


@flow(name="cordwatch-evaluate")
def evaluate_flow(params: Params) -> dict[str, Any]:
    """Evaluate the final model; write reports/evaluation/{metrics.json,report.md}; log an MLflow evaluation run."""
    import mlflow

    metrics = evaluate_task(params)
    report_dir = params.paths.reports_dir / "evaluation"
    setup_mlflow(params)
    train_run = params.paths.models_dir / "train_run.json"
    train_run_id = json.loads(train_run.read_text())["mlflow_run_id"] if train_run.is_file() else ""
    with mlflow.start_run(run_name=f"evaluate-{params.profile}") as run:
        mlflow.set_tags(
            {
                **lineage_tags(params, params.paths.ingested_dir, metrics["synthetic"]),
                "cordwatch.stage": "evaluate",
                "cordwatch.train_run_id": train_run_id,
            }
        )
        mlflow.log_params({f"evaluate.{k}": v for k, v in params.evaluate.model_dump(mode="json").items()})
        mlflow.log_metrics(_flat(metrics))
        mlflow.log_artifact(str(report_dir / "metrics.json"))
        mlflow.log_artifact(str(report_dir / "report.md"))
        for png in sorted(report_dir.glob("pr_*.png")):
            mlflow.log_artifact(str(png), artifact_path="pr_curves")
        metrics["mlflow_run_id"] = run.info.run_id
    get_run_logger().info("evaluation report: %s", report_dir / "report.md")
    return metrics
