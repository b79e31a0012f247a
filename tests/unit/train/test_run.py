"""The train stage's edge without ultralytics: `run_train` over a fake trainer, its events, files and progress."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

import pipelines.train.core as core
from pipelines.progress import Progress
from pipelines.train.core import FoldResult, TrainHooks, TrainPlan, TrainSummary
from pipelines.train.run import TrainProgress, run_train

FOLDS = 3


@pytest.fixture
def project(params, tmp_path: Path):
    """An ingested dataset of 12 development images (3 folds) and 2 external ones, with expert boxes."""
    ingested = params.paths.ingested_dir
    (ingested / "images").mkdir(parents=True)
    rows, boxes, splits = [], [], []
    for i in range(14):
        image_id, patient = f"img{i:02d}", f"p{i:02d}"
        (ingested / "images" / f"{image_id}.png").write_bytes(b"png")
        external = i >= 12
        rows.append(
            {"image_id": image_id, "patient_key": patient, "site": "ext" if external else "dev", "rows": 100,
             "columns": 80, "is_synthetic": True, "image_path": f"images/{image_id}.png"}
        )  # fmt: skip
        boxes.append(
            {"image_id": image_id, "patient_key": patient, "reader_id": "expert_1", "reader_level": "expert",
             "label": "normal", "class_id": 0, "x_min": 10.0, "y_min": 10.0, "x_max": 30.0, "y_max": 20.0}
        )  # fmt: skip
        split, fold = ("external_test", -1) if external else ("cv", i % FOLDS)
        splits.append({"image_id": image_id, "patient_key": patient, "site": rows[-1]["site"], "split": split,
                       "fold": fold, "has_compression": False})  # fmt: skip
    pd.DataFrame(rows).to_parquet(ingested / "images.parquet")
    pd.DataFrame(boxes).to_parquet(ingested / "annotations.parquet")
    pd.DataFrame(splits).to_parquet(params.paths.splits_file)
    paths = params.paths.model_copy(update={"models_dir": tmp_path / "models"})
    profiles = {
        **params.train.profiles,
        "ci": params.train.profiles["ci"].model_copy(update={"epochs": 2, "folds": None}),
    }
    train = params.train.model_copy(update={"parallel_folds": 1, "profiles": profiles})
    return params.model_copy(update={"paths": paths, "train": train})


class Recorder(TrainHooks):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, plan: TrainPlan) -> None:
        self.events.append(("start", plan.models, plan.epochs, plan.images, plan.synthetic))

    def on_fold_start(self, name: str) -> None:
        self.events.append(("fold_start", name))

    def on_epoch_end(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append(("epoch", name, epoch, metrics["metrics_mAP50"]))

    def on_fold_end(self, result: FoldResult) -> None:
        self.events.append(("fold_end", result.name))

    def on_train_end(self, summary: TrainSummary) -> None:
        self.events.append(("end", summary.final.name))

    def on_train_failed(self, error: BaseException) -> None:
        self.events.append(("failed", str(error)))


def fake_train_one(name, data_yaml, runs_dir, params, prof, log=None) -> FoldResult:
    """Stands in for ultralytics: checks the view it was given, 'trains' prof.epochs epochs, leaves weights."""
    view = data_yaml.parent
    train_ids = {p.stem for p in (view / "images" / "train").iterdir()}
    val_ids = {p.stem for p in (view / "images" / "val").iterdir()}
    assert len(val_ids) == 4 and len(train_ids) == 8 and not train_ids & val_ids  # fold = 4 of 12 images
    assert (view / "labels" / "val" / f"{sorted(val_ids)[0]}.txt").read_text().startswith("0 ")
    map50 = {"fold0": 0.7, "fold1": 0.9, "fold2": 0.8}[name]
    for epoch in range(1, prof.epochs + 1):
        if log is not None:
            log(name, epoch, {"metrics_mAP50": map50 * epoch / prof.epochs})
    run_dir = runs_dir / name
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "weights" / "best.pt").write_bytes(name.encode())
    metrics = {"map50": map50, "map50_95": 0.5, "precision": 0.6, "recall": 0.7, "ap50_normal": map50}
    metrics["ap50_compression"] = float("nan")  # no compression box in this set
    return FoldResult(name, run_dir / "weights" / "best.pt", run_dir, prof.epochs, metrics)


def test_run_train_writes_final_weights_and_summary_and_tells_every_hook(project, monkeypatch) -> None:
    monkeypatch.setattr(core, "train_one", fake_train_one)
    recorder, updates = Recorder(), []
    summary = run_train(project, hooks=[recorder], progress=updates.append)

    paths = project.paths
    assert paths.final_weights.read_bytes() == b"fold1"  # the best fold's weights
    report = json.loads(paths.summary_file("train").read_text())
    assert report["final_source"] == "best fold (fold1, mAP50 0.900)"
    assert report["folds"]["fold0"] == {
        "map50": 0.7,
        "map50_95": 0.5,
        "precision": 0.6,
        "recall": 0.7,
        "ap50_normal": 0.7,
    }  # fmt: skip  (NaN left out: strict JSON)
    assert report["cv"]["map50_mean"] == pytest.approx(0.8) and report["cv"]["study_map50_min"] == 0.917
    assert summary.weights == paths.final_weights and str(paths.final_weights) in summary.line()

    assert recorder.events[0] == ("start", ("fold0", "fold1", "fold2"), 2, 12, True)
    assert recorder.events[1:5] == [
        ("fold_start", "fold0"),
        ("epoch", "fold0", 1, 0.35),
        ("epoch", "fold0", 2, 0.7),
        ("fold_end", "fold0"),
    ]
    assert recorder.events[-1] == ("end", "fold1")

    assert all(u.stage == "train" and u.total == 6 and u.unit == "epoch" for u in updates)
    assert [u.done for u in updates if "epoch" in u.detail] == [1, 2, 3, 4, 5, 6]
    assert "fold1 epoch 2/2 mAP50 0.900" in [u.detail for u in updates]
    events = [u.event for u in updates if u.event]
    assert events[0] == "3 models x 2 epochs on 12 images"
    assert "fold2 done: mAP50 0.800 (2 epochs)" in events
    assert updates[-1].done == 6


@pytest.mark.slow  # two spawned processes that import torch: ~10 s
def test_folds_in_worker_processes_report_every_epoch_live(project, monkeypatch) -> None:
    """Two folds at a time in spawned processes: their starts and epochs reach the parent's hooks as they happen,
    every epoch of a fold before its end."""
    monkeypatch.setattr(core, "train_one", fake_train_one)  # passed to the workers by name
    project = project.model_copy(update={"train": project.train.model_copy(update={"parallel_folds": 2})})
    recorder, updates = Recorder(), []
    summary = run_train(project, hooks=[recorder], progress=updates.append)
    assert [f.name for f in summary.folds] == ["fold0", "fold1", "fold2"]
    assert project.paths.final_weights.read_bytes() == b"fold1"
    for name in ("fold0", "fold1", "fold2"):
        mine = [e for e in recorder.events if e[0] in ("fold_start", "epoch", "fold_end") and e[1] == name]
        assert mine[0] == ("fold_start", name) and mine[-1] == ("fold_end", name)
        assert [e[2] for e in mine if e[0] == "epoch"] == [1, 2]  # live, each once, before the fold's end
    assert recorder.events[-1] == ("end", "fold1")
    done = [u.done for u in updates]
    assert done == sorted(done) and done[-1] == 6 and any("fold2 epoch 2/2" in u.detail for u in updates)


def test_final_model_on_all_development_data(project, monkeypatch) -> None:
    trained: list[str] = []

    def fake(name, data_yaml, runs_dir, params, prof, log=None) -> FoldResult:
        trained.append(name)
        if name != core.FINAL_ALL:
            return fake_train_one(name, data_yaml, runs_dir, params, prof, log)
        ids = {p.stem for p in (data_yaml.parent / "images" / "train").iterdir()}
        assert ids == {p.stem for p in (data_yaml.parent / "images" / "val").iterdir()} and len(ids) == 12
        (runs_dir / name / "weights").mkdir(parents=True)
        (runs_dir / name / "weights" / "best.pt").write_bytes(b"all")
        return FoldResult(name, runs_dir / name / "weights" / "best.pt", runs_dir / name, 2, {"map50": 0.99})

    monkeypatch.setattr(core, "train_one", fake)
    project = project.model_copy(update={"train": project.train.model_copy(update={"final_model": "all_development"})})
    recorder = Recorder()
    summary = run_train(project, hooks=[recorder])
    assert trained == ["fold0", "fold1", "fold2", core.FINAL_ALL]
    assert recorder.events[0][1] == ("fold0", "fold1", "fold2", core.FINAL_ALL)
    assert ("fold_end", core.FINAL_ALL) in recorder.events
    assert summary.final_source == "all development data" and project.paths.final_weights.read_bytes() == b"all"


def test_a_failure_is_announced_and_leaves_no_final_weights(project, monkeypatch) -> None:
    def broken(name, *args, **kwargs) -> FoldResult:
        raise RuntimeError(f"{name}: out of memory")

    monkeypatch.setattr(core, "train_one", broken)
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="out of memory"):
        run_train(project, hooks=[recorder])
    assert recorder.events[-1] == ("failed", "fold0: out of memory")
    assert not project.paths.final_weights.exists() and not project.paths.summary_file("train").exists()


def test_progress_counts_a_reused_model_as_done() -> None:
    updates: list[Progress] = []
    hooks = TrainProgress(updates.append)
    hooks.on_train_start(TrainPlan(("fold0", "fold1"), epochs=10, parallel=2, images=100, synthetic=True))
    hooks.on_fold_start("fold0")
    hooks.on_fold_start("fold1")
    hooks.on_epoch_end("fold1", 4, {"metrics_mAP50": 0.5})  # resumed after epoch 3
    assert updates[-1].done == 4 and updates[-1].detail == "fold0 starting | fold1 epoch 4/10 mAP50 0.500"
    hooks.on_fold_end(FoldResult("fold0", Path("w"), Path("r"), 10, {"map50": 0.91}, resumed=True))
    assert updates[-1].done == 14 and updates[-1].event == "fold0 done: mAP50 0.910 (reused from an earlier run)"
    assert updates[-1].detail == "fold1 epoch 4/10 mAP50 0.500"
    hooks.on_fold_end(FoldResult("fold1", Path("w"), Path("r"), 7, {"map50": 0.88}, resumed=True))  # stopped early
    assert updates[-1].done == updates[-1].total == 20 and updates[-1].event == "fold1 done: mAP50 0.880 (7 epochs)"


def test_device_groups_split_the_listed_gpus_by_gpus_per_fold() -> None:
    from pipelines.train.params import TrainParams

    assert TrainParams().device_groups() == ["cpu"]
    assert TrainParams(device="0,1,2,3").device_groups() == ["0,1,2,3"]  # each fold on all four (ultralytics DDP)
    assert TrainParams(device="0,1,2,3", gpus_per_fold=1).device_groups() == ["0", "1", "2", "3"]
    assert TrainParams(device="0, 1, 2", gpus_per_fold=2).device_groups() == ["0,1"]  # GPU 2 makes no whole group
    assert TrainParams(device="cpu", gpus_per_fold=2).device_groups() == ["cpu"]
    assert core.fold_concurrency(TrainParams(device="0,1,2,3", gpus_per_fold=2, parallel_folds=1)) == 2
    assert core.fold_concurrency(TrainParams(device="cpu", gpus_per_fold=2, parallel_folds=3)) == 3
    with pytest.raises(ValueError, match=r"gpus_per_fold is 3 but train\.device lists 2 GPU"):
        TrainParams(device="0,1", gpus_per_fold=3).device_groups()


def fake_train_on_device(name, data_yaml, runs_dir, params, prof, log=None) -> FoldResult:
    """`fake_train_one`, and a note of the device it was given and the process that trained it; an epoch history
    as ultralytics writes it (`results.csv`)."""
    result = fake_train_one(name, data_yaml, runs_dir, params, prof, log)
    (result.run_dir / "device.json").write_text(json.dumps({"device": params.device, "pid": os.getpid()}))
    history = pd.DataFrame({"epoch": range(1, prof.epochs + 1), "metrics/mAP50(B)": [0.1 * e for e in range(1, 3)]})
    history.to_csv(result.run_dir / "results.csv", index=False)
    return result


def slow_fake_train_on_device(*args, **kwargs) -> FoldResult:
    time.sleep(1.5)  # a fold takes a while: the second worker (seconds to spawn) gets work too
    return fake_train_on_device(*args, **kwargs)


def _devices(project) -> dict[str, dict]:
    runs = project.paths.models_dir / "runs"
    return {f"fold{i}": json.loads((runs / f"fold{i}" / "device.json").read_text()) for i in range(FOLDS)}


@pytest.mark.slow  # two spawned processes that import torch: ~10 s
def test_each_fold_worker_trains_on_its_own_gpu_group(project, monkeypatch) -> None:
    """`device: "0,1"` with one GPU per fold: two workers, each holding one GPU for its life, so two folds never
    share a GPU (ultralytics is given the group; no GPU is needed to check who gets which)."""
    monkeypatch.setattr(core, "train_one", slow_fake_train_on_device)
    train = project.train.model_copy(update={"device": "0,1", "gpus_per_fold": 1, "parallel_folds": 1})
    recorder = Recorder()
    run_train(project.model_copy(update={"train": train}), hooks=[recorder])
    assert recorder.events[0][0] == "start"
    used = _devices(project)
    assert {u["device"] for u in used.values()} == {"0", "1"}
    by_worker: dict[int, set[str]] = {}
    for u in used.values():
        by_worker.setdefault(u["pid"], set()).add(u["device"])
    assert len(by_worker) == 2 and all(len(devices) == 1 for devices in by_worker.values())


@pytest.mark.slow  # a 2-worker Dask LocalCluster and a Prefect test server: ~25 s
def test_folds_on_dask_give_the_local_result_and_replay_each_fold_s_epochs(project, monkeypatch) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.settings import ExecutionParams

    monkeypatch.setattr(core, "train_one", fake_train_on_device)
    local = run_train(project)
    local_report = json.loads(project.paths.summary_file("train").read_text())
    shutil.rmtree(project.paths.models_dir)
    on_dask = project.model_copy(update={"execution": ExecutionParams(engine="dask", n_workers=2)})
    recorder = Recorder()
    with prefect_test_harness(server_startup_timeout=120):
        summary = run_train(on_dask, hooks=[recorder])
    assert json.loads(project.paths.summary_file("train").read_text()) == local_report
    assert [f.name for f in summary.folds] == [f.name for f in local.folds] == ["fold0", "fold1", "fold2"]
    assert project.paths.final_weights.read_bytes() == b"fold1"
    assert os.getpid() not in {u["pid"] for u in _devices(project).values()}  # trained on the cluster's workers
    for name in ("fold0", "fold1", "fold2"):
        mine = [e for e in recorder.events if e[0] in ("fold_start", "epoch", "fold_end") and e[1] == name]
        assert mine[0] == ("fold_start", name) and mine[-1] == ("fold_end", name)
        assert [e[2] for e in mine if e[0] == "epoch"] == [1, 2]  # replayed from results.csv
