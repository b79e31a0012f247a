"""Prefect flow: cross-validated YOLO11 training, each fold an MLflow child run under one parent run.

Folds run one after another by default: on 2 CPU cores torch already uses both, so concurrent folds would only
contend. `train.parallel_folds: N` trains N folds at once in worker processes (one GPU holds several yolo11n
folds; the 16-core H100 machine trained the paper profile's five side by side); a fold's per-epoch figures then
reach its MLflow run when the fold ends, from its results.csv.
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tracking import lineage_tags, setup_mlflow
from pipelines import runtime
from pipelines.config import Params
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.io import write_json
from pipelines.train.core import FoldResult, TrainSummary, train_cross_validated


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


@task(name="train-folds", cache_policy=NO_CACHE)
def train_task(params: Params) -> tuple[TrainSummary, str]:
    """Train every fold and the final model, logging to MLflow; return the summary and the parent run id."""
    import mlflow
    from mlflow.entities import Metric, Param

    runtime.configure_ultralytics(params.paths.state_dir)
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    synthetic = bool(images["is_synthetic"].any())
    setup_mlflow(params)
    prof = params.train.profile(params.profile)
    fold_runs: dict[str, str] = {}

    with mlflow.start_run(run_name=f"train-{params.profile}") as parent:
        mlflow.set_tags({**lineage_tags(params, paths.ingested_dir, synthetic), "cordwatch.stage": "train"})
        mlflow.log_params({"model": params.train.model, "final_model": params.train.final_model, **prof.model_dump()})
        validation = paths.reports_dir / "validation"
        if (validation / "index.html").is_file():  # the Data Docs of the data this model was trained on
            mlflow.log_artifacts(str(validation), artifact_path="data_validation")

        def child_for(name: str) -> str:
            if name not in fold_runs:
                run = mlflow.start_run(run_name=name, nested=True, parent_run_id=parent.info.run_id)
                fold_runs[name] = run.info.run_id
                mlflow.set_tags({"cordwatch.stage": "train", "cordwatch.fold": name})
                mlflow.end_run()
            return fold_runs[name]

        client = mlflow.MlflowClient()

        def log_epoch(name: str, epoch: int, metrics: dict[str, float]) -> None:
            # One batch (one store transaction) per epoch: per-metric calls cost ~20 ms each on SQLite.
            now = int(time.time() * 1000)
            batch = [Metric(key, value, now, epoch) for key, value in metrics.items()]
            client.log_batch(child_for(name), metrics=batch, synchronous=True)

        def log_fold(result: FoldResult) -> None:
            run_id = child_for(result.name)
            now = int(time.time() * 1000)
            finals = [Metric(f"final_{k}", v, now, 0) for k, v in _finite(result.metrics).items()]
            params_ = [Param("epochs_trained", str(result.epochs)), Param("resumed", str(result.resumed))]
            client.log_batch(run_id, metrics=finals, params=params_)
            client.log_artifact(run_id, str(result.weights), artifact_path="weights")
            for extra in ("results.csv", "args.yaml", "results.png", "BoxPR_curve.png", "confusion_matrix.png"):
                if (result.run_dir / extra).is_file():
                    client.log_artifact(run_id, str(result.run_dir / extra), artifact_path="ultralytics")
            client.set_terminated(run_id)

        summary = train_cross_validated(
            params.train,
            params.profile,
            paths.ingested_dir,
            splits,
            images,
            annotations,
            paths.state_dir / "yolo",
            paths.models_dir,
            log=log_epoch,
            on_fold=log_fold,
        )
        mlflow.log_metrics({f"cv_{k}": v for k, v in _finite(summary.cv).items()})
        mlflow.log_param("final_source", summary.final_source)
        mlflow.log_artifact(str(paths.models_dir / "final.pt"), artifact_path="model")
        return summary, parent.info.run_id


@flow(name="cordwatch-train")
def train_flow(params: Params) -> TrainSummary:
    """K-fold training on the development centre, then the final model; reports/train/summary.json for DVC."""
    summary, run_id = train_task(params)
    write_json(params.paths.reports_dir / "train" / "summary.json", summary.report())
    (params.paths.models_dir / "train_run.json").write_text(json.dumps({"mlflow_run_id": run_id}) + "\n")
    get_run_logger().info(summary.line())
    return summary
