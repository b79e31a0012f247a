"""K-fold YOLO11 training through ultralytics, resumable per fold, with tracking as a plug-in callback.

We never rewrite the YOLO trainer: overrides go to `YOLO.train`, per-epoch figures leave through ultralytics'
`on_fit_epoch_end` callback to whatever `EpochLogger` the caller plugs in (MLflow in the flow, nothing in tests).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.contracts import CLASS_NAMES
from pipelines.train.params import TrainParams, TrainProfile
from pipelines.train.yolo_data import build_view, reference_boxes

# The study's 5-fold cross-validation range of mAP50, for the side-by-side in the summary.
STUDY_CV_MAP50 = (0.917, 0.970)
DONE_MARKER = "cordwatch_done.json"

EpochLogger = Callable[[str, int, dict[str, float]], None]


@dataclass
class FoldResult:
    """Final validation figures of one trained model."""

    name: str
    weights: Path
    run_dir: Path
    epochs: int
    metrics: dict[str, float]
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "weights": str(self.weights), "run_dir": str(self.run_dir)}


@dataclass
class TrainSummary:
    """All folds, their spread, and the final model."""

    folds: list[FoldResult]
    final: FoldResult
    final_source: str
    cv: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The content of `reports/train/summary.json` (DVC metrics): CV spread, per-fold figures (finite values
        only: strict JSON has no NaN), where the final model came from."""
        folds = {f.name: {k: v for k, v in f.metrics.items() if math.isfinite(v)} for f in self.folds}
        return {"cv": self.cv, "folds": folds, "final_source": self.final_source}

    def line(self) -> str:
        c = self.cv
        return (
            f"train: {len(self.folds)} folds, CV mAP50 mean {c['map50_mean']:.3f} (SD {c['map50_sd']:.3f}, range "
            f"{c['map50_min']:.3f}-{c['map50_max']:.3f}; study 0.917-0.970); final model: {self.final_source} "
            f"-> {self.final.weights}"
        )


def _metrics_of(results: Any) -> dict[str, float]:
    """Flatten ultralytics DetMetrics into plain floats (overall and per class)."""
    out = {
        "map50": float(results.box.map50),
        "map50_95": float(results.box.map),
        "precision": float(results.box.mp),
        "recall": float(results.box.mr),
    }
    ap50 = dict(zip(results.box.ap_class_index.tolist(), results.box.ap50.tolist(), strict=True))
    for i, name in enumerate(CLASS_NAMES):
        out[f"ap50_{name}"] = float(ap50.get(i, float("nan")))
    return out


def _clean_epoch_figures(figures: dict[str, Any]) -> dict[str, float]:
    """ultralytics' names (`metrics/mAP50(B)`) as MLflow-friendly keys (`metrics_mAP50`), finite values only."""
    clean = {k.replace("(B)", "").replace("/", "_"): float(v) for k, v in figures.items()}
    return {k: v for k, v in clean.items() if math.isfinite(v)}


def _epoch_callback(name: str, log: EpochLogger) -> Callable[[Any], None]:
    def on_fit_epoch_end(trainer: Any) -> None:
        epoch = int(trainer.epoch) + 1
        if epoch > int(trainer.epochs):  # ultralytics fires it once more for the final validation of best.pt
            return
        figures = {**trainer.label_loss_items(trainer.tloss, prefix="train"), **(trainer.metrics or {})}
        log(name, epoch, _clean_epoch_figures(figures))

    return on_fit_epoch_end


def replay_epochs(result: FoldResult, log: EpochLogger) -> None:
    """Send a finished run's per-epoch figures from its `results.csv` to `log`, as the live callback would have.

    Folds trained in worker processes cannot call the parent's logger while they run; the same keys arrive once
    the fold is done (ultralytics' learning-rate columns and timings are left out, as in the live callback).
    """
    csv = result.run_dir / "results.csv"
    if not csv.is_file():
        return
    history = pd.read_csv(csv)
    history.columns = [c.strip() for c in history.columns]
    keep = [c for c in history.columns if c.startswith(("train/", "metrics/", "val/"))]
    for row in history.to_dict("records"):
        log(result.name, int(row["epoch"]), _clean_epoch_figures({c: row[c] for c in keep}))


def train_one(
    name: str,
    data_yaml: Path,
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    log: EpochLogger | None = None,
) -> FoldResult:
    """Train (or resume, or reuse) one model.

    A finished run leaves a marker and is reused as is; an unfinished one with `last.pt` resumes from that
    checkpoint (ultralytics `resume=True`), so a killed run loses at most the epoch in progress.
    """
    from ultralytics import YOLO

    runs_dir = runs_dir.resolve()  # ultralytics puts a relative `project` under its own runs_dir setting
    run_dir = runs_dir / name
    marker = run_dir / DONE_MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text())
        weights = run_dir / saved["weights"]  # relative, so a run pulled from a DVC remote elsewhere still resolves
        return FoldResult(name, weights, run_dir, saved["epochs"], saved["metrics"], resumed=True)
    last = run_dir / "weights" / "last.pt"
    resumed = last.is_file()
    model = YOLO(str(last) if resumed else params.model)
    if log is not None:
        model.add_callback("on_fit_epoch_end", _epoch_callback(name, log))
    if resumed:
        results = model.train(resume=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        results = model.train(
            data=str(data_yaml),
            project=str(runs_dir),
            name=name,
            exist_ok=True,
            epochs=prof.epochs,
            imgsz=prof.imgsz,
            batch=prof.batch,
            seed=params.seed,
            deterministic=True,
            device=params.device,
            workers=params.workers,
            patience=params.patience,
            optimizer=params.optimizer,
            nbs=params.nominal_batch or prof.batch,
            amp=False,  # CPU has no AMP; on GPU ultralytics' AMP check would download weights
            plots=True,
            verbose=False,
            **params.augment,
        )
    best = run_dir / "weights" / "best.pt"
    weights = best if best.is_file() else last
    metrics = _metrics_of(results)
    epochs = len(pd.read_csv(run_dir / "results.csv")) if (run_dir / "results.csv").is_file() else prof.epochs
    result = FoldResult(name, weights, run_dir, epochs, metrics, resumed=resumed)
    saved = {"weights": weights.relative_to(run_dir).as_posix(), "epochs": epochs, "metrics": metrics}
    marker.write_text(json.dumps(saved, indent=2))
    return result


def _train_in_worker(
    name: str, data_yaml: Path, runs_dir: Path, params: TrainParams, prof: TrainProfile, threads: int
) -> FoldResult:
    """One fold in a worker process, with its share of the CPU threads (torch would otherwise take every core)."""
    import torch

    torch.set_num_threads(threads)
    return train_one(name, data_yaml, runs_dir, params, prof)


def _train_folds_in_processes(
    views: dict[str, Path],
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    log: EpochLogger | None,
    on_fold: Callable[[FoldResult], None] | None,
) -> list[FoldResult]:
    """Train folds `params.parallel_folds` at a time in spawned processes (ultralytics keeps global state, so
    threads would share it); each fold keeps its own resume checkpoint, and its epochs reach `log` when it ends."""
    workers = min(params.parallel_folds, len(views))
    threads = max(1, (os.cpu_count() or 1) // workers)
    done: dict[str, FoldResult] = {}
    # spawn, not fork: torch and the tracking clients in the parent hold threads and locks a fork would copy
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(_train_in_worker, name, data_yaml, runs_dir, params, prof, threads): name
            for name, data_yaml in views.items()
        }
        for future in as_completed(futures):
            result = future.result()
            done[result.name] = result
            if log is not None:  # the whole history, also of a reused or resumed fold: this is a new child run
                replay_epochs(result, log)
            if on_fold is not None:
                on_fold(result)
    return [done[name] for name in views]


def cv_summary(folds: list[FoldResult]) -> dict[str, float]:
    """Mean, SD and range of each fold metric, plus the study's CV range for comparison."""
    out: dict[str, float] = {}
    for key in ("map50", "map50_95", "precision", "recall"):
        values = [f.metrics[key] for f in folds]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
    out["study_map50_min"], out["study_map50_max"] = STUDY_CV_MAP50
    return out


def train_cross_validated(
    params: TrainParams,
    profile: str,
    ingested_dir: Path,
    splits: pd.DataFrame,
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    work_dir: Path,
    models_dir: Path,
    log: EpochLogger | None = None,
    on_fold: Callable[[FoldResult], None] | None = None,
) -> TrainSummary:
    """Train one model per fold (validated on that fold), then the final model; write `models/final.pt`.

    Args:
        params: the train section; `profile` picks its sizes.
        profile: active profile name.
        ingested_dir: the ingested dataset (images are symlinked from there).
        splits, images, annotations: the tables of the split and ingest stages.
        work_dir: where fold views are built (derived, disposable).
        models_dir: ultralytics runs (`runs/<fold>`) and the final weights.
        log: per-epoch figures of each fold (fold name, epoch, metrics).
        on_fold: called with each finished fold (e.g. to close its tracking run).
    """
    prof = params.profile(profile)
    reference = reference_boxes(annotations, params.reference_reader_level)
    cv = splits[splits["split"] == "cv"]
    folds = sorted(cv["fold"].unique().tolist())
    chosen = folds if prof.folds is None else [f for f in folds if f in prof.folds]
    runs_dir = models_dir / "runs"
    views = {}
    for fold in chosen:
        parts = {"train": cv.loc[cv["fold"] != fold, "image_id"], "val": cv.loc[cv["fold"] == fold, "image_id"]}
        views[f"fold{fold}"] = build_view(work_dir / f"fold{fold}", ingested_dir, images, reference, parts)
    if params.parallel_folds > 1 and len(views) > 1:
        results = _train_folds_in_processes(views, runs_dir, params, prof, log, on_fold)
    else:
        results = []
        for name, data_yaml in views.items():
            result = train_one(name, data_yaml, runs_dir, params, prof, log)
            results.append(result)
            if on_fold is not None:
                on_fold(result)
    if params.final_model == "best_fold":
        final = max(results, key=lambda r: r.metrics["map50"])
        source = f"best fold ({final.name}, mAP50 {final.metrics['map50']:.3f})"
    else:
        ids = cv["image_id"]
        data_yaml = build_view(work_dir / "all", ingested_dir, images, reference, {"train": ids, "val": ids})
        final = train_one("final_all_development", data_yaml, runs_dir, params, prof, log)
        source = "all development data"
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final.weights, models_dir / "final.pt")
    return TrainSummary(results, final, source, cv_summary(results))
