"""K-fold YOLO11 training through ultralytics, resumable per fold, with tracking and progress as plug-ins.

We never rewrite the YOLO trainer: overrides go to `YOLO.train`, and per-epoch figures leave through ultralytics'
`on_fit_epoch_end` callback. `train_cross_validated` announces its events (start, fold start, epoch end, fold end,
end, failure) to `TrainHooks` the caller plugs in, as MONAI's engines do for their handlers: MLflow tracking in
the flow (`flows/tracking.py`), a progress bar in `run_train`, nothing in tests. Folds trained in worker processes
send their events back through a queue, so hooks see every epoch live, in the parent process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import multiprocessing
import os
import queue
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.contracts import CLASS_NAMES, CV
from pipelines.labels import reference_boxes
from pipelines.settings import ExecutionParams
from pipelines.train.params import TrainParams, TrainProfile
from pipelines.train.yolo_data import build_view

logger = logging.getLogger(__name__)  # not `log`: that is the epoch logger's parameter name here

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
    """All folds, their spread, and the final model (copied to `weights`)."""

    folds: list[FoldResult]
    final: FoldResult
    final_source: str
    cv: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None

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
            f"-> {self.weights or self.final.weights}"
        )


@dataclass(frozen=True)
class TrainPlan:
    """What a training run is about to do, announced to hooks before the first fold.

    Attributes:
        models: names of the models it trains, in order (folds, then `final_all_development` if trained).
        epochs: epochs per model (early stopping may end a model sooner).
        parallel: models trained at once (worker processes when > 1).
        images: development images.
        synthetic: the images are the synthetic cohort's.
    """

    models: tuple[str, ...]
    epochs: int
    parallel: int
    images: int
    synthetic: bool


class TrainHooks:
    """Events of `train_cross_validated`, for plug-ins (tracking, progress). Every method here does nothing.

    Events arrive in the parent process, in this order: `on_train_start`; per model `on_fold_start`, its
    `on_epoch_end`s (only epochs trained in this call: a resumed model starts after its checkpoint, a reused one
    has none) and `on_fold_end`; then `on_train_end`, or `on_train_failed` if anything raised. With parallel folds
    the events of different models interleave.
    """

    def on_train_start(self, plan: TrainPlan) -> None:
        """Before the first model."""

    def on_fold_start(self, name: str) -> None:
        """A model (fold or final) begins, resumes or is reused."""

    def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        """A model finished epoch `epoch` (1-based); `metrics` are losses and validation figures."""

    def on_fold_end(self, result: FoldResult) -> None:
        """A model is trained (or was reused)."""

    def on_train_end(self, summary: TrainSummary) -> None:
        """Every model is trained and the final weights are in place."""

    def on_train_failed(self, error: BaseException) -> None:
        """Training raised `error` (it is re-raised after the hooks ran)."""


class _Dispatch(TrainHooks):
    """Sends each event to every hook in order."""

    def __init__(self, hooks: Sequence[TrainHooks]) -> None:
        self.hooks = list(hooks)

    def on_train_start(self, plan: TrainPlan) -> None:
        for hook in self.hooks:
            hook.on_train_start(plan)

    def on_fold_start(self, name: str) -> None:
        for hook in self.hooks:
            hook.on_fold_start(name)

    def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.on_epoch_end(name, epoch, metrics)

    def on_fold_end(self, result: FoldResult) -> None:
        for hook in self.hooks:
            hook.on_fold_end(result)

    def on_train_end(self, summary: TrainSummary) -> None:
        for hook in self.hooks:
            hook.on_train_end(summary)

    def on_train_failed(self, error: BaseException) -> None:
        for hook in self.hooks:
            hook.on_train_failed(error)


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


def epoch_history(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """A run's per-epoch figures from its `results.csv`, with the keys the live callback sends.

    For epochs no live callback saw (a model reused, or the epochs before a resume); ultralytics' learning-rate
    columns and timings are left out, as in the live callback.
    """
    csv = run_dir / "results.csv"
    if not csv.is_file():
        return []
    history = pd.read_csv(csv)
    history.columns = [c.strip() for c in history.columns]
    keep = [c for c in history.columns if c.startswith(("train/", "metrics/", "val/"))]
    return [(int(row["epoch"]), _clean_epoch_figures({c: row[c] for c in keep})) for row in history.to_dict("records")]


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
    runs_dir = runs_dir.resolve()  # ultralytics puts a relative `project` under its own runs_dir setting
    with fold_lock(runs_dir, name):
        return _train_one_locked(name, data_yaml, runs_dir, params, prof, log)


class FoldBusyError(RuntimeError):
    """Another live process is training this fold (a second run started while the first still trains it)."""


@contextmanager
def fold_lock(runs_dir: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on `runs_dir/.NAME.lock` while a fold trains: two runs never train one fold at once.
    The kernel releases it when its holder dies, however it dies (no stale lock after a SIGKILL)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    handle = (runs_dir / f".{name}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FoldBusyError(f"fold {name} is being trained by another process (pid {holder}); wait for it") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _train_one_locked(
    name: str,
    data_yaml: Path,
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    log: EpochLogger | None,
) -> FoldResult:
    from ultralytics import YOLO

    run_dir = runs_dir / name
    marker = run_dir / DONE_MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text())
        weights = run_dir / saved["weights"]  # relative, so a run pulled from a DVC remote elsewhere still resolves
        return FoldResult(name, weights, run_dir, saved["epochs"], saved["metrics"], resumed=True)
    last = run_dir / "weights" / "last.pt"
    resumed = last.is_file() and not _all_epochs_saved(last)
    if last.is_file() and not resumed:
        # Killed after its last epoch was saved, before its marker (final validation, plots): ultralytics refuses to
        # resume a finished run, so train the fold again; seeded and deterministic, it gives the same weights.
        logger.warning("%s: killed after its last epoch, before it was recorded; training it again", name)
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


def _all_epochs_saved(last: Path) -> bool:
    """Whether the checkpoint `last.pt` holds a finished run: its final epoch (or stripped, epoch -1, as ultralytics
    leaves a run it completed). Nothing is left to resume from it."""
    from ultralytics.nn.tasks import torch_safe_load

    checkpoint, _ = torch_safe_load(str(last))
    epoch = int(checkpoint.get("epoch", -1))
    return epoch < 0 or epoch + 1 >= int(checkpoint.get("train_args", {}).get("epochs", 0))


# Set in each worker process by `_init_worker`: where its fold's events go (a queue read by the parent), and the
# device group this worker trains on (each worker takes one group for its life, so two folds never share a GPU).
_EVENTS: Any = None
_DEVICE: str | None = None


def _init_worker(events: Any, threads: int, parent: int, devices: Any) -> None:
    """Worker set-up: the event queue, its device group, its share of the CPU threads (torch would otherwise take
    every core), and a watch on the parent: a worker whose parent died (a SIGKILL leaves spawned workers running)
    exits instead of training on beside a re-run."""
    global _EVENTS, _DEVICE
    import torch

    torch.set_num_threads(threads)
    _EVENTS = events
    _DEVICE = devices.get()
    watch_parent(parent)


def watch_parent(parent: int, interval_s: float = 1.0) -> None:
    """Exit this process (status 70) within `interval_s` once `parent` is no longer its parent."""

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _train_in_worker(
    name: str,
    data_yaml: Path,
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    train: Callable[..., FoldResult],
) -> FoldResult:
    """One fold in a worker process; its start and epochs go to the parent as they happen, then an end marker
    (the queue is FIFO per process, so once the parent sees the marker it has every epoch of the fold)."""
    events = _EVENTS
    events.put(("start", name))
    if _DEVICE is not None and params.device != _DEVICE:
        params = params.model_copy(update={"device": _DEVICE})
    try:
        return train(name, data_yaml, runs_dir, params, prof, log=lambda *event: events.put(("epoch", *event)))
    finally:
        events.put(("end", name))


def _train_folds_in_processes(
    views: dict[str, Path],
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    hooks: TrainHooks,
) -> list[FoldResult]:
    """Train folds `fold_concurrency(params)` at a time in spawned processes (ultralytics keeps global state, so
    threads would share it), each worker on its own device group; each fold keeps its own resume checkpoint. Events
    are relayed to `hooks` here, in the parent, while the folds train."""
    workers = min(fold_concurrency(params), len(views))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: torch and the tracking clients in the parent hold threads and locks a fork would copy
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    devices = context.Queue()
    groups = params.device_groups()
    for slot in range(workers):
        devices.put(groups[slot % len(groups)])
    ended: set[str] = set()

    def relay(block_until: str | None = None) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                kind, *event = events.get(timeout=0.2) if block_until else events.get_nowait()
            except queue.Empty:
                if block_until is None or block_until in ended or time.monotonic() > deadline:
                    return
                continue
            if kind == "start":
                hooks.on_fold_start(event[0])
            elif kind == "epoch":
                hooks.on_epoch_end(*event)
            else:
                ended.add(event[0])
            if block_until is not None and block_until in ended:
                return

    done: dict[str, FoldResult] = {}
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(events, threads, os.getpid(), devices)
    ) as pool:
        # `train_one` travels by name, so a worker runs the function the parent holds (tests substitute a fake)
        futures: dict[Future[FoldResult], str] = {
            pool.submit(_train_in_worker, name, data_yaml, runs_dir, params, prof, train_one): name
            for name, data_yaml in views.items()
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            relay()
            for future in finished:
                result = future.result()
                relay(block_until=result.name)  # its last epochs may still be in the queue
                done[result.name] = result
                hooks.on_fold_end(result)
    events.close()
    devices.close()
    return [done[name] for name in views]


def fold_concurrency(params: TrainParams) -> int:
    """Folds trained side by side: one per GPU group when `gpus_per_fold` splits the GPUs, else `parallel_folds`."""
    return len(params.device_groups()) if params.gpus_per_fold is not None and params.gpu_ids else params.parallel_folds


@dataclass(frozen=True)
class FoldJob:
    """One fold as a Dask task: everything a worker needs, picklable (`train` travels by name)."""

    name: str
    data_yaml: Path
    runs_dir: Path
    params: TrainParams
    prof: TrainProfile
    train: Callable[..., FoldResult]
    state_dir: Path


def _train_fold_job(job: FoldJob) -> FoldResult:
    from pipelines import runtime

    runtime.configure_ultralytics(job.state_dir)  # a worker on another machine starts with ultralytics' defaults
    return job.train(job.name, job.data_yaml, job.runs_dir, job.params, job.prof)


def _train_folds_on_dask(
    views: dict[str, Path],
    runs_dir: Path,
    params: TrainParams,
    prof: TrainProfile,
    hooks: TrainHooks,
    execution: ExecutionParams,
    state_dir: Path,
) -> list[FoldResult]:
    """Train the folds as Prefect task runs on Dask (`execution.engine: dask`), fold i on device group i mod the
    groups. Workers write to `runs_dir`, so a real cluster needs it on a shared file system. Epochs cannot stream
    back from a task: each fold's epoch history is replayed to `hooks` from its `results.csv` when it is done."""
    from pipelines.execution import dask_map

    groups = params.device_groups()
    jobs = []
    for i, (name, data_yaml) in enumerate(views.items()):
        fold_params = params.model_copy(update={"device": groups[i % len(groups)]})
        jobs.append(FoldJob(name, data_yaml, runs_dir, fold_params, prof, train_one, state_dir))
    for name in views:
        hooks.on_fold_start(name)
    # one fold per chunk: a fold is hours on a GPU, and chunks of several would serialise folds on one worker
    one_each = execution.model_copy(update={"chunks_per_worker": max(len(jobs), 1)})
    results = dask_map(_train_fold_job, jobs, one_each, name="train-folds")
    for result in results:
        for epoch, metrics in epoch_history(result.run_dir):
            hooks.on_epoch_end(result.name, epoch, metrics)
        hooks.on_fold_end(result)
    return results


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


FINAL_ALL = "final_all_development"


def train_cross_validated(
    params: TrainParams,
    profile: str,
    ingested_dir: Path,
    splits: pd.DataFrame,
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    work_dir: Path,
    runs_dir: Path,
    final_weights: Path,
    hooks: Sequence[TrainHooks] = (),
    *,
    reference_level: str,
    execution: ExecutionParams | None = None,
    state_dir: Path | None = None,
) -> TrainSummary:
    """Train one model per fold (validated on that fold), then the final model; copy it to `final_weights`.

    Args:
        params: the train section; `profile` picks its sizes.
        profile: active profile name.
        ingested_dir: the ingested dataset (images are symlinked from there).
        splits, images, annotations: the tables of the split and ingest stages.
        work_dir: where fold views are built (derived, disposable).
        runs_dir: ultralytics runs, one folder per model (`<runs_dir>/fold0`, ...), each resumable.
        final_weights: where the final model's weights go (e.g. `models/final.pt`).
        hooks: plug-ins told of every event (see `TrainHooks`).
        reference_level: whose boxes are the training labels (`readers.reference_level`).
        execution: where the folds train (`execution:`); None or `local`: here, in worker processes when parallel.
        state_dir: the project's state, from which a Dask worker sets ultralytics up (default: `work_dir`'s parent).
    """
    events = _Dispatch(hooks)
    prof = params.profile(profile)
    reference = reference_boxes(annotations, reference_level)
    cv = splits[splits["split"] == CV]
    folds = sorted(cv["fold"].unique().tolist())
    chosen = folds if prof.folds is None else [f for f in folds if f in prof.folds]
    views = {}
    for fold in chosen:
        parts = {"train": cv.loc[cv["fold"] != fold, "image_id"], "val": cv.loc[cv["fold"] == fold, "image_id"]}
        views[f"fold{fold}"] = build_view(work_dir / f"fold{fold}", ingested_dir, images, reference, parts)
    on_dask = execution is not None and execution.engine == "dask" and len(views) > 1
    parallel = on_dask or (fold_concurrency(params) > 1 and len(views) > 1)
    models = (*views, *([FINAL_ALL] if params.final_model == "all_development" else []))
    dev_images = images[images["image_id"].isin(set(cv["image_id"]))]
    synthetic = bool("is_synthetic" in images and dev_images["is_synthetic"].any())
    plan = TrainPlan(
        models, prof.epochs, min(fold_concurrency(params), len(views)) if parallel else 1, len(dev_images), synthetic
    )
    events.on_train_start(plan)
    try:
        if on_dask:
            assert execution is not None
            state = state_dir or work_dir.parent
            results = _train_folds_on_dask(views, runs_dir, params, prof, events, execution, state)
        elif parallel:
            results = _train_folds_in_processes(views, runs_dir, params, prof, events)
        else:
            results = []
            for name, data_yaml in views.items():
                events.on_fold_start(name)
                result = train_one(name, data_yaml, runs_dir, params, prof, events.on_epoch_end)
                results.append(result)
                events.on_fold_end(result)
        if params.final_model == "best_fold":
            final = max(results, key=lambda r: r.metrics["map50"])
            source = f"best fold ({final.name}, mAP50 {final.metrics['map50']:.3f})"
        else:
            ids = cv["image_id"]
            data_yaml = build_view(work_dir / "all", ingested_dir, images, reference, {"train": ids, "val": ids})
            events.on_fold_start(FINAL_ALL)
            final = train_one(FINAL_ALL, data_yaml, runs_dir, params, prof, events.on_epoch_end)
            events.on_fold_end(final)
            source = "all development data"
        final_weights.parent.mkdir(parents=True, exist_ok=True)
        staged = final_weights.with_name(f".{final_weights.name}.{os.getpid()}.tmp")
        shutil.copyfile(final.weights, staged)
        os.replace(staged, final_weights)  # a killed copy never leaves a truncated final model behind
        summary = TrainSummary(results, final, source, cv_summary(results), final_weights)
        events.on_train_end(summary)
    except BaseException as exc:  # KeyboardInterrupt too: a tracking run must not stay "running" forever
        events.on_train_failed(exc)
        raise
    return summary
