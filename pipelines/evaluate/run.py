"""The evaluate stage's core without orchestration: predict on each test set, score model and readers, plot PR curves.

The Prefect task (`flows/evaluate_flow.py`) and the accelerator driver (`benchmarks/paper_gpu.py`) both call this,
so a result computed off-line on a GPU is the same computation the flow runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Params
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.evaluate.plots import plot_pr_curves
from pipelines.evaluate.predict import predict_boxes
from pipelines.evaluate.report import render_markdown
from pipelines.evaluate.study import evaluate_set
from pipelines.io import write_json, write_parquet_atomic

TEST_SETS = ("internal_test", "external_test")


def evaluate_test_sets(params: Params, weights: Path | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score `weights` (default `models/final.pt`) and the readers on every non-empty test set.

    Returns the content of `metrics.json` and the model's predictions (the prediction contract); PR curves are
    written to `reports/evaluation/`.
    """
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    synthetic = bool(images["is_synthetic"].any())
    imgsz = params.train.profile(params.profile).imgsz
    weights = weights or paths.models_dir / "final.pt"
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
        plot_pr_curves(result.matched, paths.reports_dir / "evaluation", name, params.evaluate.iou_threshold, synthetic)
    out["synthetic"] = synthetic
    predictions = pd.concat(all_boxes, ignore_index=True) if all_boxes else pd.DataFrame()
    return out, predictions


def write_evaluation(report_dir: Path, metrics: dict[str, Any], predictions: pd.DataFrame) -> None:
    """`metrics.json`, `report.md` (the study's table side by side) and `predictions.parquet` in `report_dir`."""
    write_json(report_dir / "metrics.json", metrics)
    (report_dir / "report.md").write_text(render_markdown(metrics, metrics["synthetic"]), encoding="utf-8")
    write_parquet_atomic(predictions, report_dir / "predictions.parquet")
