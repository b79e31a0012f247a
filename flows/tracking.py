"""MLflow at the edge: training tracked as a plug-in, evaluation figures as metrics (the store, the experiment and
the tags every run carries are in `pipelines.mlflow_store`).

`MLflowTrainTracker` is to `pipelines.train.core.train_cross_validated` what MONAI's `MLFlowHandler` is to an
ignite engine: it attaches to the training's events (`TrainHooks`) and keeps all tracking out of the core. One
parent run per training, one child run per model, each epoch's figures in one batch (per-metric calls cost ~20 ms
each on SQLite). `log_evaluation` turns any `metrics.json` into MLflow metrics with `flatten_metrics`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipelines.config import Params
from pipelines.mlflow_store import EVALUATE_DESCRIPTION, TRAIN_DESCRIPTION, lineage_tags, start_run
from pipelines.train.core import FoldResult, TrainHooks, TrainPlan, TrainSummary, epoch_history

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# ultralytics files kept with each model's run
FOLD_ARTIFACTS = ("results.csv", "args.yaml", "results.png", "BoxPR_curve.png", "confusion_matrix.png")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if _is_number(v) and math.isfinite(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class MLflowTrainTracker(TrainHooks):
    """Tracks a cross-validated training in MLflow: a parent run, a child run per model, per-epoch metrics.

    Pass it to `run_train(params, hooks=[tracker])`; after training, `run_id` is the parent run's id. Epochs reach a
    model's run as they end (also from worker processes: the core relays their events); on a model's end, epochs no
    live event carried (a model reused from an earlier run, the epochs before a resume) are replayed from its
    `results.csv`, so every child run holds the model's whole history exactly once.

    Args:
        params: the whole params (paths for the store and the validation Data Docs, train settings to log).
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.children: dict[str, str] = {}
        self.logged: dict[str, set[int]] = {}
        self.open: set[str] = set()

    # --- events -----------------------------------------------------------------------------------------------
    def on_train_start(self, plan: TrainPlan) -> None:
        from mlflow.entities import Param

        params, paths = self.params, self.params.paths
        described = lineage_tags(params, paths.ingested_dir, plan.synthetic, TRAIN_DESCRIPTION)
        tags = {**described, "cordwatch.stage": "train"}
        self.client, self.run_id = start_run(params, f"train-{params.profile}", tags)
        prof = params.train.profile(params.profile)
        logged = {
            "model": params.train.model,
            "final_model": params.train.final_model,
            "parallel_folds": plan.parallel,
            "models": ",".join(plan.models),
            "development_images": plan.images,
            **prof.model_dump(),
        }
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in logged.items()])
        validation = paths.report_dir("validation")
        if (validation / "index.html").is_file():  # the Data Docs of the data this model was trained on
            self.client.log_artifacts(self.run_id, str(validation), artifact_path="data_validation")

    def on_fold_start(self, name: str) -> None:
        self._child(name)

    def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        if epoch in self.logged.get(name, set()):
            return
        self._log_epochs(name, [(epoch, metrics)])

    def on_fold_end(self, result: FoldResult) -> None:
        from mlflow.entities import Metric, Param

        client, run_id = self._client(), self._child(result.name)
        seen = self.logged.get(result.name, set())
        self._log_epochs(result.name, [(e, m) for e, m in epoch_history(result.run_dir) if e not in seen])
        now = _now_ms()
        finals = [Metric(f"final_{k}", v, now, 0) for k, v in _finite(result.metrics).items()]
        fold_params = [Param("epochs_trained", str(result.epochs)), Param("resumed", str(result.resumed))]
        client.log_batch(run_id, metrics=finals, params=fold_params)
        if result.weights.is_file():
            client.log_artifact(run_id, str(result.weights), artifact_path="weights")
        for extra in FOLD_ARTIFACTS:
            if (result.run_dir / extra).is_file():
                client.log_artifact(run_id, str(result.run_dir / extra), artifact_path="ultralytics")
        client.set_terminated(run_id, "FINISHED")
        self.open.discard(result.name)

    def on_train_end(self, summary: TrainSummary) -> None:
        from mlflow.entities import Metric, Param

        client, run_id = self._client(), self._parent()
        now = _now_ms()
        cv = [Metric(f"cv_{k}", v, now, 0) for k, v in _finite(summary.cv).items()]
        client.log_batch(run_id, metrics=cv, params=[Param("final_source", summary.final_source)])
        weights = summary.weights or summary.final.weights
        client.log_artifact(run_id, str(weights), artifact_path="model")
        client.set_terminated(run_id, "FINISHED")

    def on_train_failed(self, error: BaseException) -> None:
        if self.client is None or self.run_id is None:
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        for name in sorted(self.open):
            self.client.set_terminated(self.children[name], status)
        self.open.clear()
        self.client.set_tag(self.run_id, "cordwatch.error", f"{type(error).__name__}: {error}"[:500])
        self.client.set_terminated(self.run_id, status)

    # --- helpers ----------------------------------------------------------------------------------------------
    def _client(self) -> MlflowClient:
        if self.client is None:
            raise RuntimeError("MLflowTrainTracker: on_train_start was not called")
        return self.client

    def _parent(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MLflowTrainTracker: on_train_start was not called")
        return self.run_id

    def _child(self, name: str) -> str:
        """The model's child run, created (running) on first use."""
        if name not in self.children:
            client, parent = self._client(), self._parent()
            experiment_id = client.get_run(parent).info.experiment_id
            tags = {"mlflow.parentRunId": parent, "cordwatch.stage": "train", "cordwatch.fold": name}
            self.children[name] = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            self.open.add(name)
        return self.children[name]

    def _log_epochs(self, name: str, epochs: list[tuple[int, dict[str, float]]]) -> None:
        """Every given epoch of a model in one batch (the client splits it at MLflow's per-batch limits)."""
        from mlflow.entities import Metric

        if not epochs:
            return
        now = _now_ms()
        batch = [Metric(k, v, now, epoch) for epoch, figures in epochs for k, v in _finite(figures).items()]
        self._client().log_batch(self._child(name), metrics=batch, synchronous=True)
        self.logged.setdefault(name, set()).update(epoch for epoch, _ in epochs)


# --- evaluation -------------------------------------------------------------------------------------------------

# Parts of a figure (a dict with "point") and the suffix each gets in its metric name.
FIGURE_PARTS: tuple[tuple[str, str], ...] = (
    ("point", ""),
    ("low", "_low"),
    ("high", "_high"),
    ("p_value", "_p_value"),
    ("df", "_df"),
)
NOT_FLATTENED = frozenset({"subgroups"})  # a table, logged as such
MAX_KEY = 250  # MLflow's limit on a metric name
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def metric_key(path: list[str], suffix: str = "") -> str:
    """`["external_test", "model", "map50"]`, `"_low"` -> `external_test_model_map50_low`, within MLflow's rules.

    Characters MLflow refuses become `_`; a name over MLflow's 250 characters keeps its start, an 8-character hash
    of the whole, and its suffix, so it stays unique and the same on every run.
    """
    stem = _UNSAFE.sub("_", "_".join(path))
    if len(stem) + len(suffix) > MAX_KEY:
        digest = hashlib.sha1(stem.encode()).hexdigest()[:8]
        stem = f"{stem[: MAX_KEY - len(suffix) - len(digest) - 1]}_{digest}"
    return stem + suffix


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every figure of `metrics["sets"]` as MLflow metrics named by its key path.

    A figure is any dict with a `point` key, at any depth (model, reader groups, readers, model minus group, and any
    section added later); its `point`, `low`, `high`, `p_value` and `df` become `<path>`, `<path>_low`, ... .
    Non-finite and non-numeric values are left out; the `subgroups` table is not flattened.
    """
    flat: dict[str, float] = {}
    sources: dict[str, str] = {}

    def add(path: list[str], suffix: str, value: Any) -> None:
        if not _is_number(value) or not math.isfinite(value):
            return
        key, source = metric_key(path, suffix), ".".join(path) + suffix
        if key in flat and sources[key] != source:  # e.g. "a_b" and "a"/"b": keep the first, say so
            log.warning("metric name %s stands for both %s and %s; keeping the first", key, sources[key], source)
            return
        flat[key], sources[key] = float(value), source

    def walk(node: Mapping[str, Any], path: list[str]) -> None:
        if "point" in node:
            for part, suffix in FIGURE_PARTS:
                add(path, suffix, node.get(part))
        for key, child in node.items():
            if key not in NOT_FLATTENED and isinstance(child, Mapping):
                walk(child, [*path, str(key)])

    for name, result in (metrics.get("sets") or {}).items():
        if isinstance(result, Mapping):
            walk(result, [str(name)])
    return flat


def log_evaluation(params: Params, metrics: Mapping[str, Any], train_run_id: str = "") -> str:
    """An MLflow evaluation run: lineage tags, the evaluate settings, every figure of `metrics` (see
    `flatten_metrics`), each test set's subgroup table, and the report files in `reports/evaluation/`.

    Returns:
        The run id.
    """
    import mlflow
    import pandas as pd
    from mlflow.entities import Metric, Param

    paths = params.paths
    tags = {
        **lineage_tags(params, paths.ingested_dir, bool(metrics.get("synthetic")), EVALUATE_DESCRIPTION),
        "cordwatch.stage": "evaluate",
        "cordwatch.train_run_id": train_run_id,
    }
    client, run_id = start_run(params, f"evaluate-{params.profile}", tags)
    try:
        settings = params.evaluate.model_dump(mode="json")
        now = _now_ms()
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in flatten_metrics(metrics).items()],
            params=[Param(f"evaluate.{k}", str(v)) for k, v in settings.items()],
        )
        for name, result in (metrics.get("sets") or {}).items():
            rows = result.get("subgroups") if isinstance(result, Mapping) else None
            if rows:
                mlflow.log_table(pd.DataFrame(rows), artifact_file=f"subgroups/{name}.json", run_id=run_id)
        for report in (paths.evaluation_metrics, paths.evaluation_report):
            if report.is_file():
                client.log_artifact(run_id, str(report))
        for png in sorted(paths.evaluation_dir.glob("pr_*.png")):
            client.log_artifact(run_id, str(png), artifact_path="pr_curves")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
