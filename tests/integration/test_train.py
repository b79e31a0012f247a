"""Training for real on the ci profile (tiny images, 1-2 epochs): MLflow run tree, reports, resume after a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import PathsParams
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(ci_project: Path) -> Path:
    """The session's ci-profile project (tests/integration/conftest.py), run through every stage."""
    return ci_project


def test_mlflow_run_tree_and_reports(project: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cordwatch")
    assert experiment.artifact_location == (project / "mlruns").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    parents = [
        r for r in runs if r.data.tags.get("cordwatch.stage") == "train" and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1
    parent = parents[0]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"fold0", "fold1"}  # the ci profile trains two folds
    tags = parent.data.tags
    assert tags["cordwatch.synthetic_data"] == "true" and "SYNTHETIC" in tags["mlflow.note.content"]
    assert len(tags["cordwatch.lineage.params_hash"]) == 16
    for key in ("cv_map50_mean", "cv_map50_sd", "cv_map50_min", "cv_map50_max", "cv_study_map50_min"):
        assert key in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"model", "data_validation"}
    for child in children.values():
        history = client.get_metric_history(child.info.run_id, "metrics_mAP50")
        assert [m.step for m in history] == [1]  # one epoch, relayed live from the worker process, logged once
        assert {"final_map50", "final_precision", "train_box_loss"} <= set(child.data.metrics)
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"weights", "ultralytics"}
    paths = PathsParams.under(project)
    summary = json.loads(paths.summary_file("train").read_text())
    assert set(summary["folds"]) == {"fold0", "fold1"}
    assert summary["cv"]["study_map50_min"] == 0.917
    assert paths.final_weights.is_file()
    assert json.loads(paths.train_run_file.read_text()) == {"mlflow_run_id": parent.info.run_id}
    for stage in ("synth", "ingest", "split", "validation", "train"):  # every run function wrote its summary
        assert paths.summary_file(stage).is_file(), stage
    # ultralytics and MLflow wrote nothing of their own in the working directory
    assert not (project / "runs").exists()
    assert sorted(p.name for p in project.glob("*.db")) == ["mlflow.db"]


def test_killed_fold_resumes_from_its_checkpoint(project: Path, tmp_path: Path) -> None:
    from pipelines import runtime
    from pipelines.config import load_params
    from pipelines.labels import reference_boxes
    from pipelines.train.core import train_one
    from pipelines.train.yolo_data import build_view

    params = load_params(project / "params.yaml")
    runtime.configure_ultralytics(params.paths.state_dir)
    images = pd.read_parquet(project / "data/ingested/images.parquet")
    ann = pd.read_parquet(project / "data/ingested/annotations.parquet")
    splits = pd.read_parquet(project / "data/splits.parquet")
    cv = splits[splits["split"] == "cv"]
    data_yaml = build_view(
        tmp_path / "view",
        project / "data/ingested",
        images,
        reference_boxes(ann, "expert"),
        {"train": cv.loc[cv["fold"] != 0, "image_id"], "val": cv.loc[cv["fold"] == 0, "image_id"]},
    )
    prof = params.train.profile("ci").model_copy(update={"epochs": 2})

    def die_after_first_epoch(name: str, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt  # as if the machine went away after epoch 1 was saved

    with pytest.raises(KeyboardInterrupt):
        train_one("resume_me", data_yaml, tmp_path / "runs", params.train, prof, log=die_after_first_epoch)
    assert (tmp_path / "runs" / "resume_me" / "weights" / "last.pt").is_file()
    result = train_one("resume_me", data_yaml, tmp_path / "runs", params.train, prof)
    assert result.resumed
    assert len(pd.read_csv(tmp_path / "runs" / "resume_me" / "results.csv")) == 2  # epoch 1 kept, epoch 2 added
    again = train_one("resume_me", data_yaml, tmp_path / "runs", params.train, prof)
    assert again.resumed and again.metrics == result.metrics  # a finished fold is reused, not retrained


def test_evaluation_report_metrics_and_linked_mlflow_run(project: Path) -> None:
    import mlflow

    metrics = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert metrics["synthetic"] is True
    assert set(metrics["sets"]) == {"internal_test", "external_test"}
    ext = metrics["sets"]["external_test"]
    splits = pd.read_parquet(project / "data/splits.parquet")
    assert ext["n_patients"] == splits.loc[splits["split"] == "external_test", "patient_key"].nunique()
    for key in ("map50", "map50_95", "precision", "recall", "sensitivity"):
        assert {"point", "low", "high"} <= set(ext["model"][key])
    assert set(ext["reader_groups"]) == {"mid", "junior"}
    assert set(ext["readers"]) == {"mid_1", "mid_2", "junior_1", "junior_2"}
    mid = ext["reader_groups"]["mid"]["map50"]
    assert 0.5 < mid["point"] <= 1.0 and mid["low"] <= mid["point"] <= mid["high"]  # simulated readers are good
    diff = ext["model_minus_group"]["mid"]
    assert 0 < diff["p_value"] <= 1 and diff["low"] <= diff["point"] <= diff["high"]
    assert {row["subgroup"] for row in ext["subgroups"]} >= {"all", "site", "manufacturer", "field_strength"}
    predictions = pd.read_parquet(project / "reports" / "evaluation" / "predictions.parquet")
    assert list(predictions.columns) == ["image_id", "source", "label", "x_min", "y_min", "x_max", "y_max", "score"]

    report = (project / "reports" / "evaluation" / "report.md").read_text()
    assert "SYNTHETIC DATA" in report and "Du et al. 2026" in report
    assert "| external mAP50 (95% CI) | 0.944 " in report  # the study's figure beside this run's

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cordwatch")
    runs = client.search_runs([experiment.experiment_id])
    train = [
        r for r in runs if r.data.tags.get("cordwatch.stage") == "train" and "mlflow.parentRunId" not in r.data.tags
    ]
    evaluation = [r for r in runs if r.data.tags.get("cordwatch.stage") == "evaluate"]
    assert len(evaluation) == 1 and evaluation[0].data.tags["cordwatch.train_run_id"] == train[0].info.run_id
    assert "external_test_model_map50" in evaluation[0].data.metrics
    assert "external_test_model_minus_group_mid_p_value" in evaluation[0].data.metrics
    assert "external_test_reader_groups_mid_map50_low" in evaluation[0].data.metrics
    assert {a.path for a in client.list_artifacts(evaluation[0].info.run_id)} >= {
        "metrics.json",
        "report.md",
        "pr_curves",
        "subgroups",
    }
    curves = {a.path for a in client.list_artifacts(evaluation[0].info.run_id, "pr_curves")}
    assert curves == {
        f"pr_curves/pr_{s}_{c}.png" for s in ("internal_test", "external_test") for c in ("normal", "compression")
    }


def test_sequential_folds_and_all_development_final_model(project: Path, tmp_path: Path) -> None:
    """Folds one after another in this process (the module's project trained them in worker processes, the
    default) give the same layout and epoch history, live to hooks and progress; `all_development` trains the
    final model on every development fold (train and val are then the same images)."""
    import hashlib

    from pipelines.config import load_params
    from pipelines.progress import Progress
    from pipelines.train.core import FoldResult, TrainHooks
    from pipelines.train.run import run_train

    params = load_params(project / "params.yaml")
    assert params.train.parallel_folds == 2  # so the CLI run of the fixture took the worker-process path
    train = params.train.model_copy(update={"parallel_folds": 1, "final_model": "all_development"})
    # a fresh models and reports folder: the fixture's finished folds would otherwise be reused
    paths = params.paths.model_copy(update={"models_dir": tmp_path / "models", "reports_dir": tmp_path / "reports"})
    params = params.model_copy(update={"train": train, "paths": paths})
    splits = pd.read_parquet(paths.splits_file)
    logged: dict[str, list[int]] = {}
    finished: list[str] = []
    updates: list[Progress] = []

    class Hooks(TrainHooks):
        def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
            assert "metrics_mAP50" in metrics and "train_box_loss" in metrics
            logged.setdefault(name, []).append(epoch)

        def on_fold_end(self, result: FoldResult) -> None:
            finished.append(result.name)

    summary = run_train(params, hooks=[Hooks()], progress=updates.append)
    assert [f.name for f in summary.folds] == ["fold0", "fold1"]
    assert logged == {"fold0": [1], "fold1": [1], "final_all_development": [1]}  # live, from the callback
    assert finished == ["fold0", "fold1", "final_all_development"]
    assert summary.final.name == "final_all_development" and summary.final_source == "all development data"
    cv_ids = set(splits.loc[splits["split"] == "cv", "image_id"])
    view = paths.state_dir / "yolo" / "all" / "images"
    assert {p.stem for p in (view / "train").iterdir()} == cv_ids == {p.stem for p in (view / "val").iterdir()}
    assert json.loads(paths.summary_file("train").read_text())["final_source"] == "all development data"

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest(paths.final_weights) == digest(summary.final.weights)
    for fold in summary.folds:
        assert (fold.run_dir / "cordwatch_done.json").is_file() and len(pd.read_csv(fold.run_dir / "results.csv")) == 1
    # progress: 3 models x 1 epoch, each epoch with its fold and last validation mAP50
    assert {u.total for u in updates} == {3} and updates[-1].done == 3
    assert any(u.detail.startswith("fold1 epoch 1/1 mAP50 ") for u in updates)
    assert [u.event.split(":")[0] for u in updates if "done" in u.event] == [
        "fold0 done",
        "fold1 done",
        "final_all_development done",
    ]


def test_accelerator_driver_without_prefect_mlflow_or_great_expectations(project: Path, tmp_path: Path) -> None:
    """`python -m pipelines.driver` on a copy of the trained project, in a Python where prefect, mlflow and
    great_expectations cannot be imported (as on the lent GPU machines): finished steps are reused, the evaluation
    runs through the same run function, progress is printed, and the archive holds what comes back."""
    import shutil
    import subprocess
    import sys
    import tarfile

    root = tmp_path / "root"
    for part in ("data", "models"):
        shutil.copytree(project / part, root / part, symlinks=True)
    blocked = (
        "import runpy, sys\n"
        "for name in ('prefect', 'mlflow', 'great_expectations'):\n"
        "    sys.modules[name] = None  # import raises ImportError, as if not installed\n"
        "sys.argv = ['pipelines.driver', *sys.argv[1:]]\n"
        "runpy.run_module('pipelines.driver', run_name='__main__', alter_sys=True)\n"
    )
    args = ["--root", str(root), "--out", str(tmp_path / "out"), "--params", str(REPO / "params.yaml")]
    args += ["--profile", "ci", "--device", "cpu", "--parallel", "2", "--progress-every", "0"]
    done = subprocess.run(
        [sys.executable, "-c", blocked, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for step in ("synth", "ingest", "split", "train"):
        assert f"[{step}] reused" in out
    assert "[validate] skipped: great-expectations is not installed here" in out
    assert "evaluate: external_test: scoring the model and 4 readers" in out
    assert "external_test: predicting" in out and "[evaluate] " in out
    assert "| external mAP50 (95% CI) | 0.944 " in out  # the report, printed at the end
    paths = PathsParams.under(root)
    assert json.loads(paths.evaluation_metrics.read_text())["synthetic"] is True
    with tarfile.open(tmp_path / "out" / "paper_report.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"params.yaml", "reports/evaluation/metrics.json", "reports/driver_timings.json"} <= names
    assert {"runs/fold0/results.csv", "runs/fold1/results.csv", "models/final.pt"} <= names
