"""Prefect flow: the final model and the reader groups on the internal and external test sets, with patient-bootstrap
CIs, a paired model-minus-readers comparison and subgroups; logged to an MLflow evaluation run linked to training."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.reports import write_json
from flows.tracking import lineage_tags, setup_mlflow
from pipelines import runtime
from pipelines.config import Params
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.evaluate.plots import plot_pr_curves
from pipelines.evaluate.predict import predict_boxes
from pipelines.evaluate.report import render_markdown
from pipelines.evaluate.study import evaluate_set
from pipelines.io import write_parquet_atomic

TEST_SETS = ("internal_test", "external_test")


@task(name="evaluate-test-sets", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> dict[str, Any]:
    """Predict on each test set and score model and readers against the expert reference; return metrics.json."""
    runtime.configure_ultralytics(params.paths.state_dir)
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    imgsz = params.train.profile(params.profile).imgsz
    weights = paths.models_dir / "final.pt"
    out: dict[str, Any] = {"sets": {}, "params": params.evaluate.model_dump(mode="json")}
    train_summary = paths.reports_dir / "train" / "summary.json"
    if train_summary.is_file():
        out["cv"] = json.loads(train_summary.read_text())["cv"]
    all_boxes = []
    for name in TEST_SETS:
        ids = set(splits.loc[splits["split"] == name, "image_id"])
        subset = images[images["image_id"].isin(ids)].reset_index(drop=True)
        if subset.empty:
            continue
        boxes = predict_boxes(
            weights, [paths.ingested_dir / p for p in subset["image_path"]], imgsz, device=params.train.device
        )
        all_boxes.append(boxes)
        result = evaluate_set(name, boxes, annotations, subset, params.evaluate, params.train.reference_reader_level)
        out["sets"][name] = result.to_json()
        plot_pr_curves(
            result.matched,
            paths.reports_dir / "evaluation",
            name,
            params.evaluate.iou_threshold,
            synthetic=bool(images["is_synthetic"].any()),
        )
    out["synthetic"] = bool(images["is_synthetic"].any())
    report_dir = paths.reports_dir / "evaluation"
    predictions = pd.concat(all_boxes, ignore_index=True) if all_boxes else pd.DataFrame()
    write_parquet_atomic(predictions, report_dir / "predictions.parquet")
    return out


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
    write_json(report_dir / "metrics.json", metrics)
    report = render_markdown(metrics, metrics["synthetic"])
    (report_dir / "report.md").write_text(report, encoding="utf-8")
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
