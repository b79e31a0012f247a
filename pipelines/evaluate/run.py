"""The evaluate stage's I/O edge: predict on each test set, score model and readers, write the report files.

`run_evaluate` is called by the Prefect flow (`flows/evaluate_flow.py`, which logs the result to MLflow), the CLI
(so DVC) and the accelerator driver (`python -m pipelines.driver`), so a result computed off-line on a GPU is the
same computation the flow runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines import runtime
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE, TEST_SETS
from pipelines.evaluate.plots import plot_pr_curves
from pipelines.evaluate.predict import predict_boxes
from pipelines.evaluate.report import render_markdown
from pipelines.evaluate.study import evaluate_set
from pipelines.io import write_atomic, write_json, write_parquet_atomic
from pipelines.progress import Progress, ProgressFn
from pipelines.settings import PathsParams

if TYPE_CHECKING:  # the whole params arrive from the caller; importing config at run time would be a cycle
    from pipelines.config import Params

STAGE = "evaluate"


def evaluate_test_sets(
    params: Params, weights: Path | None = None, *, progress: ProgressFn | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score `weights` (default `models/final.pt`) and the readers on every non-empty test set.

    Args:
        params: the whole params.
        weights: the model to evaluate (default: the final model).
        progress: told of each test set's prediction (images done of all test images) and scoring.

    Returns:
        The content of `metrics.json` and the model's predictions (the prediction contract); PR curves are written
        to `reports/evaluation/`.
    """
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    synthetic = bool(images["is_synthetic"].any())
    imgsz = params.train.profile(params.profile).imgsz
    weights = weights or paths.final_weights
    out: dict[str, Any] = {"sets": {}, "params": params.evaluate.model_dump(mode="json")}
    train_summary = paths.summary_file("train")
    if train_summary.is_file():
        out["cv"] = json.loads(train_summary.read_text())["cv"]
    subsets = {}
    for name in TEST_SETS:
        ids = set(splits.loc[splits["split"] == name, "image_id"])
        subset = images[images["image_id"].isin(ids)].reset_index(drop=True)
        if not subset.empty:
            subsets[name] = subset
    total = sum(len(s) for s in subsets.values())
    before = 0

    def tell(done: int, detail: str, event: str = "") -> None:
        if progress is not None:
            progress(Progress(STAGE, done, total, "image", detail, event))

    all_boxes = []
    for name, subset in subsets.items():
        tell(before, f"{name}: predicting {len(subset)} images")
        boxes = predict_boxes(
            weights,
            [paths.ingested_dir / p for p in subset["image_path"]],
            imgsz,
            device=params.train.device,
            progress=lambda done, n, name=name, start=before: tell(start + done, f"{name}: predicting {done}/{n}"),
        )
        before += len(subset)
        all_boxes.append(boxes)
        reads = annotations[annotations["image_id"].isin(set(subset["image_id"]))]
        readers = reads.loc[reads["reader_level"] != params.readers.reference_level, "reader_id"].nunique()
        resamples = params.evaluate.bootstrap_resamples
        tell(before, f"{name}: scoring", f"{name}: scoring the model and {readers} readers, {resamples} resamples")
        start = time.perf_counter()
        result = evaluate_set(name, boxes, annotations, subset, params.evaluate, params.readers.reference_level)
        out["sets"][name] = result.to_json()
        plot_pr_curves(result.matched, paths.evaluation_dir, name, params.evaluate.iou_threshold, synthetic)
        tell(before, f"{name}: scored", f"{name}: scored in {time.perf_counter() - start:.1f} s")
    out["synthetic"] = synthetic
    predictions = pd.concat(all_boxes, ignore_index=True) if all_boxes else pd.DataFrame()
    return out, predictions


def write_evaluation(paths: PathsParams, metrics: dict[str, Any], predictions: pd.DataFrame) -> None:
    """`metrics.json`, `report.md` (the study's table side by side) and `predictions.parquet` in the evaluation
    folder."""
    write_json(paths.evaluation_metrics, metrics)
    write_atomic(paths.evaluation_report, render_markdown(metrics, metrics["synthetic"]).encode())
    write_parquet_atomic(predictions, paths.evaluation_dir / "predictions.parquet")


def run_evaluate(params: Params, weights: Path | None = None, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Evaluate the final model (or `weights`) on the test sets; write `reports/evaluation/` (metrics.json,
    report.md, predictions.parquet, PR curves); return metrics.json's content."""
    runtime.configure_ultralytics(params.paths.state_dir)
    metrics, predictions = evaluate_test_sets(params, weights, progress=progress)
    write_evaluation(params.paths, metrics, predictions)
    return metrics
