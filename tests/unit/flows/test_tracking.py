"""MLflow tracking as a plug-in, against a temporary SQLite store: fake fold results, no training."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from flows.tracking import (
    MAX_KEY,
    MLflowTrainTracker,
    flatten_metrics,
    log_evaluation,
    metric_key,
)
from pipelines.train.core import FoldResult, TrainPlan, TrainSummary
from tests.conftest import REPO

# ultralytics' results.csv header (padded names, learning-rate columns the tracker leaves out)
RESULTS_HEADER = (
    "                  epoch,         train/box_loss,         train/cls_loss,   metrics/precision(B),"
    "      metrics/recall(B),       metrics/mAP50(B),    metrics/mAP50-95(B),           val/box_loss,"
    "                 lr/pg0"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Params whose MLflow store and artifacts live in one temporary folder for the module (the SQLite schema is
    created once)."""
    from pipelines.config import PathsParams, load_params

    root = tmp_path_factory.mktemp("mlflow")
    params = load_params(REPO / "params.yaml", "ci")
    return params.model_copy(update={"paths": PathsParams.under(root)})


def _client(params):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=params.paths.mlflow_uri)


def _fold(tmp_path: Path, name: str, epochs: int, map50: float) -> FoldResult:
    """A finished model as ultralytics leaves it: weights, results.csv, args.yaml."""
    run_dir = tmp_path / "runs" / name
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "weights" / "best.pt").write_bytes(b"weights of " + name.encode())
    rows = [
        f"{e},{1.5 / e:.4f},{0.9 / e:.4f},0.5,0.6,{map50 * e / epochs:.4f},{0.5 * map50 * e / epochs:.4f},1.1,0.01"
        for e in range(1, epochs + 1)
    ]
    (run_dir / "results.csv").write_text("\n".join([RESULTS_HEADER, *rows]) + "\n")
    (run_dir / "args.yaml").write_text("epochs: 3\n")
    metrics = {"map50": map50, "map50_95": map50 / 2, "precision": 0.5, "recall": 0.6, "ap50_normal": float("nan")}
    return FoldResult(name, run_dir / "weights" / "best.pt", run_dir, epochs, metrics)


def _epoch(map50: float) -> dict[str, float]:
    return {"train_box_loss": 1.0, "metrics_mAP50": map50, "metrics_mAP50-95": map50 / 2}


def test_parent_and_child_runs_with_live_and_replayed_epochs(store, tmp_path: Path) -> None:
    (store.paths.report_dir("validation")).mkdir(parents=True, exist_ok=True)
    (store.paths.report_dir("validation") / "index.html").write_text("<html>data docs</html>")
    fold0, fold1 = _fold(tmp_path, "fold0", 3, 0.8), _fold(tmp_path, "fold1", 3, 0.9)
    fold1.resumed = True  # reused from an earlier run: no live epoch at all
    final = tmp_path / "final.pt"
    final.write_bytes(b"final")
    tracker = MLflowTrainTracker(store)

    tracker.on_train_start(TrainPlan(("fold0", "fold1"), epochs=3, parallel=2, images=40, synthetic=True))
    tracker.on_fold_start("fold0")
    tracker.on_fold_start("fold1")
    tracker.on_epoch_end("fold0", 1, _epoch(0.3))
    tracker.on_epoch_end("fold0", 1, _epoch(0.3))  # the same epoch twice is logged once
    tracker.on_epoch_end("fold0", 2, _epoch(0.6))
    tracker.on_fold_end(fold0)  # epoch 3 arrives only from results.csv
    tracker.on_fold_end(fold1)
    summary = TrainSummary([fold0, fold1], fold1, "best fold (fold1)", {"map50_mean": 0.85, "map50_sd": 0.07}, final)
    tracker.on_train_end(summary)

    client = _client(store)
    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "train-ci"
    assert parent.data.tags["cordwatch.stage"] == "train"
    assert (
        parent.data.tags["cordwatch.synthetic_data"] == "true"
        and "SYNTHETIC" in parent.data.tags["mlflow.note.content"]
    )
    assert "mlflow.user" in parent.data.tags  # MLflow's own context tags, as mlflow.start_run adds them
    assert parent.data.params["models"] == "fold0,fold1" and parent.data.params["final_source"] == "best fold (fold1)"
    assert parent.data.params["epochs"] == str(store.train.profile("ci").epochs)
    assert parent.data.metrics == {"cv_map50_mean": 0.85, "cv_map50_sd": 0.07}
    assert {a.path for a in client.list_artifacts(tracker.run_id)} == {"data_validation", "model"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "model")] == ["model/final.pt"]

    experiment = parent.info.experiment_id
    children = {
        r.info.run_name: r for r in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tracker.run_id}'")
    }
    assert set(children) == {"fold0", "fold1"}
    for name, child in children.items():
        assert child.info.status == "FINISHED" and child.data.tags["cordwatch.fold"] == name
        history = client.get_metric_history(child.info.run_id, "metrics_mAP50")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]  # every epoch exactly once
        assert "lr_pg0" not in child.data.metrics  # learning rates are not epoch figures
        assert {"train_box_loss", "train_cls_loss", "metrics_mAP50-95", "val_box_loss"} <= set(child.data.metrics)
        assert child.data.metrics["final_map50"] == (0.8 if name == "fold0" else 0.9)
        assert "final_ap50_normal" not in child.data.metrics  # NaN is left out
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"weights", "ultralytics"}
        extras = {a.path for a in client.list_artifacts(child.info.run_id, "ultralytics")}
        assert extras == {"ultralytics/results.csv", "ultralytics/args.yaml"}
    live = client.get_metric_history(children["fold0"].info.run_id, "metrics_mAP50")
    assert {m.step: m.value for m in live}[1] == 0.3  # the live value, not the CSV's
    assert children["fold0"].data.params == {"epochs_trained": "3", "resumed": "False"}
    assert children["fold1"].data.params["resumed"] == "True"


def test_a_failed_training_closes_its_runs(store, tmp_path: Path) -> None:
    tracker = MLflowTrainTracker(store)
    tracker.on_train_start(TrainPlan(("fold0", "fold1"), epochs=2, parallel=1, images=10, synthetic=False))
    tracker.on_fold_start("fold0")
    tracker.on_epoch_end("fold0", 1, _epoch(0.2))
    tracker.on_train_failed(RuntimeError("CUDA out of memory"))
    client = _client(store)
    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "FAILED" and "CUDA out of memory" in parent.data.tags["cordwatch.error"]
    note = parent.data.tags["mlflow.note.content"]  # the run's description, without the SYNTHETIC note
    assert parent.data.tags["cordwatch.synthetic_data"] == "false" and "SYNTHETIC" not in note
    assert note.startswith("Cross-validated YOLO11 training")
    assert client.get_run(tracker.children["fold0"]).info.status == "FAILED"

    stopped = MLflowTrainTracker(store)
    stopped.on_train_start(TrainPlan(("fold0",), epochs=2, parallel=1, images=10, synthetic=False))
    stopped.on_fold_start("fold0")
    stopped.on_train_failed(KeyboardInterrupt())
    assert client.get_run(stopped.run_id).info.status == "KILLED"
    MLflowTrainTracker(store).on_train_failed(RuntimeError("before start"))  # nothing to close: no error


# --------------------------------------------------------------------------------------------- evaluation


def _figure(point: float, **rest: float) -> dict[str, float]:
    return {"point": point, **rest}


METRICS = {
    "synthetic": True,
    "params": {"bootstrap_resamples": 200},
    "cv": {"map50_mean": 0.9},
    "sets": {
        "external_test": {
            "n_patients": 12,
            "ci_method": "bca",
            "model": {"map50": _figure(0.91, low=0.85, high=0.95), "recall": _figure(float("nan"), low=0.1)},
            "reader_groups": {"mid": {"map50": _figure(0.88, low=0.8, high=0.93)}},
            "readers": {"mid_1": {"map50": _figure(0.87)}},
            "model_minus_group": {"mid": _figure(0.03, low=-0.01, high=0.07, p_value=0.04)},
            "mrmc": {"mid": {"map50": _figure(0.03, low=-0.2, high=0.26, p_value=0.6, df=3.7)}, "junior": None},
            "operating_point_comparison": {
                "mid_1": {"sensitivity_at_reader_ppv": _figure(0.05, low=0.0, high=0.1, p_value=0.05)}
            },
            "notes": {"reader_map50": "a convention"},
            "flags": {"point": True},  # a bool is not a figure
            "subgroups": [
                {"subgroup": "site", "value": "ext", "n_patients": 12, "model_map50": 0.9, "flag": None},
                {"subgroup": "field_strength", "value": "1.5", "n_patients": 5, "model_map50": None, "flag": "small"},
            ],
        },
        "internal_test": {"model": {"map50": _figure(0.95, low=math.inf, high=0.99)}},
    },
}


def test_flatten_names_every_figure_by_its_key_path() -> None:
    flat = flatten_metrics(METRICS)
    assert flat == {
        "external_test_model_map50": 0.91,
        "external_test_model_map50_low": 0.85,
        "external_test_model_map50_high": 0.95,
        "external_test_model_recall_low": 0.1,  # the NaN point is left out, its finite bound is kept
        "external_test_reader_groups_mid_map50": 0.88,
        "external_test_reader_groups_mid_map50_low": 0.8,
        "external_test_reader_groups_mid_map50_high": 0.93,
        "external_test_readers_mid_1_map50": 0.87,
        "external_test_model_minus_group_mid": 0.03,
        "external_test_model_minus_group_mid_low": -0.01,
        "external_test_model_minus_group_mid_high": 0.07,
        "external_test_model_minus_group_mid_p_value": 0.04,
        "external_test_mrmc_mid_map50": 0.03,
        "external_test_mrmc_mid_map50_low": -0.2,
        "external_test_mrmc_mid_map50_high": 0.26,
        "external_test_mrmc_mid_map50_p_value": 0.6,
        "external_test_mrmc_mid_map50_df": 3.7,
        "external_test_operating_point_comparison_mid_1_sensitivity_at_reader_ppv": 0.05,
        "external_test_operating_point_comparison_mid_1_sensitivity_at_reader_ppv_low": 0.0,
        "external_test_operating_point_comparison_mid_1_sensitivity_at_reader_ppv_high": 0.1,
        "external_test_operating_point_comparison_mid_1_sensitivity_at_reader_ppv_p_value": 0.05,
        "internal_test_model_map50": 0.95,  # an infinite bound is left out
        "internal_test_model_map50_high": 0.99,
    }
    assert list(flat) == list(flatten_metrics(METRICS))  # same order every time


def test_metric_names_stay_within_mlflows_rules() -> None:
    assert metric_key(["external_test", "readers", "dr smith:1", "map50"], "_low") == (
        "external_test_readers_dr_smith_1_map50_low"
    )
    long = ["external_test", "x" * 300, "map50"]
    key = metric_key(long, "_p_value")
    assert len(key) == MAX_KEY and key.endswith("_p_value") and key == metric_key(long, "_p_value")
    assert key != metric_key(["external_test", "x" * 299 + "y", "map50"], "_p_value")  # the hash keeps them apart
    from mlflow.utils.validation import _validate_metric_name

    _validate_metric_name(key)


def test_log_evaluation_run(store) -> None:
    import mlflow

    paths = store.paths
    paths.evaluation_dir.mkdir(parents=True, exist_ok=True)
    paths.evaluation_metrics.write_text("{}")
    paths.evaluation_report.write_text("# report\n")
    (paths.evaluation_dir / "pr_external_test_compression.png").write_bytes(b"png")
    run_id = log_evaluation(store, METRICS, train_run_id="abc123")

    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate-ci"
    assert run.data.tags["cordwatch.stage"] == "evaluate" and run.data.tags["cordwatch.train_run_id"] == "abc123"
    assert run.data.metrics == flatten_metrics(METRICS)
    assert run.data.params["evaluate.bootstrap_resamples"] == str(store.evaluate.bootstrap_resamples)
    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"metrics.json", "report.md", "pr_curves", "subgroups"}
    mlflow.set_tracking_uri(paths.mlflow_uri)
    table = mlflow.load_table("subgroups/external_test.json", run_ids=[run_id])
    assert list(table["subgroup"]) == ["site", "field_strength"] and list(table["flag"])[1] == "small"
    assert not any(k.startswith("external_test_subgroups") for k in run.data.metrics)
    assert pd.isna(table["model_map50"].iloc[1])
