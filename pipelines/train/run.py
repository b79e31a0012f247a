"""The train stage's I/O edge: read the ingested tables and the splits, train every fold and the final model, write
`models/final.pt` and `reports/train/summary.json`.

The flow (`flows/train_flow.py`, which adds MLflow tracking as a hook), the CLI (so DVC) and the accelerator driver
(`python -m pipelines.driver`) all call `run_train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from pipelines import runtime
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.io import files_fingerprint, write_json
from pipelines.progress import Progress, ProgressFn
from pipelines.train.core import FoldResult, TrainHooks, TrainPlan, TrainSummary, train_cross_validated

if TYPE_CHECKING:
    from pipelines.config import Params

STAGE = "train"


class TrainProgress(TrainHooks):
    """Training events as `Progress`: epochs done of all planned, each running model's epoch and last mAP50.

    A model counts as all its planned epochs once it ends (early stopping, or reused from an earlier run), so the
    count reaches the total and the time left stays honest.
    """

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.epochs = 0
        self.total = 0
        self.done: dict[str, int] = {}
        self.running: dict[str, str] = {}
        self.trained: set[str] = set()  # models with an epoch in this run (the others were reused as they were)

    def on_train_start(self, plan: TrainPlan) -> None:
        self.epochs, self.total = plan.epochs, plan.epochs * len(plan.models)
        self.done = dict.fromkeys(plan.models, 0)
        ways = f", {plan.parallel} at a time" if plan.parallel > 1 else ""
        epochs = f"{plan.epochs} epoch{'s' if plan.epochs != 1 else ''}"
        self._send(event=f"{len(plan.models)} models x {epochs} on {plan.images} images{ways}")

    def on_fold_start(self, name: str) -> None:
        self.running[name] = f"{name} starting"
        self._send()

    def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        self.done[name] = max(self.done.get(name, 0), min(epoch, self.epochs))
        self.trained.add(name)
        map50 = metrics.get("metrics_mAP50")
        figure = f" mAP50 {map50:.3f}" if map50 is not None else ""
        self.running[name] = f"{name} epoch {epoch}/{self.epochs}{figure}"
        self._send()

    def on_fold_end(self, result: FoldResult) -> None:
        self.done[result.name] = self.epochs
        self.running.pop(result.name, None)
        n = result.epochs
        how = f"{n} epoch{'s' if n != 1 else ''}" if result.name in self.trained else "reused from an earlier run"
        self._send(event=f"{result.name} done: mAP50 {result.metrics.get('map50', float('nan')):.3f} ({how})")

    def _send(self, event: str = "") -> None:
        done = sum(self.done.values())
        self.progress(Progress(STAGE, done, self.total, "epoch", " | ".join(self.running.values()), event))


def run_train(params: Params, *, hooks: Sequence[TrainHooks] = (), progress: ProgressFn | None = None) -> TrainSummary:
    """Train the folds and the final model of the active profile; write the final weights and the summary.

    Args:
        params: the whole params (train section, profile, paths).
        hooks: plug-ins told of every training event (e.g. `flows.tracking.MLflowTrainTracker`).
        progress: called with a `Progress` after every epoch of every model.

    Returns:
        The summary also written to `reports/train/summary.json`.
    """
    paths = params.paths
    runtime.configure_ultralytics(paths.state_dir)
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    trained_on = files_fingerprint(paths.data_files)  # before training: the data this model learns from
    plugins = [*hooks, *([TrainProgress(progress)] if progress is not None else [])]
    summary = train_cross_validated(
        params.train,
        params.profile,
        paths.ingested_dir,
        splits,
        images,
        annotations,
        paths.state_dir / "yolo",
        paths.models_dir / "runs",
        paths.final_weights,
        hooks=plugins,
        reference_level=params.readers.reference_level,
        execution=params.execution,
        state_dir=paths.state_dir,
    )
    # For registration's data-contract gate: validate records the fingerprint of the data it checked.
    write_json(paths.summary_file(STAGE), {**summary.report(), "data_fingerprint": trained_on})
    return summary
