"""The evaluate stage's edge without a model: `run_evaluate` over stand-in predictions writes every report file and
tells its progress."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipelines.evaluate.run as run
from pipelines.progress import Progress

SETS = {"internal_test": 4, "external_test": 6}  # patients (one image each)


@pytest.fixture
def project(params, tmp_path: Path):
    """Ingested tables and splits of two small test sets: expert reference, two mid and two junior readers."""
    rng = np.random.default_rng(0)
    images, boxes, splits = [], [], []
    for split, n in SETS.items():
        for i in range(n):
            image_id, patient = f"{split[:3]}{i}", f"{split[:3]}p{i}"
            images.append(
                {"image_id": image_id, "patient_key": patient, "site": "ext" if split == "external_test" else "dev",
                 "manufacturer": "GE" if i % 2 else "SIEMENS", "field_strength": 1.5 if i % 3 else 3.0,
                 "rows": 200, "columns": 100, "is_synthetic": True, "image_path": f"images/{image_id}.png"}
            )  # fmt: skip
            splits.append({"image_id": image_id, "patient_key": patient, "split": split, "fold": -1})
            for level in range(4):  # four levels an image, every third compressed
                label = "compression" if (i + level) % 3 == 0 else "normal"
                box = np.array([20.0, 20.0 + 40 * level, 60.0, 50.0 + 40 * level])
                for reader, reader_level in (("exp_1", "expert"), ("mid_1", "mid"), ("mid_2", "mid"),
                                             ("jun_1", "junior"), ("jun_2", "junior")):  # fmt: skip
                    if reader_level != "expert" and rng.random() < 0.15:
                        continue  # a reader misses a level now and then
                    jitter = 0 if reader_level == "expert" else rng.normal(0, 2, 4)
                    x0, y0, x1, y1 = box + jitter
                    boxes.append(
                        {"image_id": image_id, "patient_key": patient, "reader_id": reader,
                         "reader_level": reader_level, "label": label, "class_id": int(label == "compression"),
                         "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1, "severity": None}
                    )  # fmt: skip
    ingested = params.paths.ingested_dir
    ingested.mkdir(parents=True)
    pd.DataFrame(images).to_parquet(ingested / "images.parquet")
    pd.DataFrame(boxes).to_parquet(ingested / "annotations.parquet")
    pd.DataFrame(splits).to_parquet(params.paths.splits_file)
    evaluate = params.evaluate.model_copy(update={"bootstrap_resamples": 50, "min_subgroup_patients": 2})
    return params.model_copy(update={"evaluate": evaluate})


def test_run_evaluate_writes_the_reports_and_tells_its_progress(project, monkeypatch) -> None:
    calls: list[tuple[int, str]] = []
    annotations = pd.read_parquet(project.paths.ingested_dir / "annotations.parquet")

    def fake_predict(weights, image_paths, imgsz, device="cpu", progress=None, **kwargs) -> pd.DataFrame:
        """The expert's boxes with falling scores, two images at a time."""
        ids = [Path(p).stem for p in image_paths]
        calls.append((len(ids), device))
        ref = annotations[(annotations["reader_id"] == "exp_1") & annotations["image_id"].isin(ids)]
        out = ref[["image_id", "label", "x_min", "y_min", "x_max", "y_max"]].assign(source="model")
        out["score"] = np.linspace(0.95, 0.3, len(out))
        for done in range(2, len(ids) + 2, 2):
            if progress is not None:
                progress(min(done, len(ids)), len(ids))
        return out[["image_id", "source", "label", "x_min", "y_min", "x_max", "y_max", "score"]]

    monkeypatch.setattr(run, "predict_boxes", fake_predict)
    updates: list[Progress] = []
    metrics = run.run_evaluate(project, weights=Path("stand-in.pt"), progress=updates.append)

    paths = project.paths
    assert calls == [(4, project.train.device), (6, project.train.device)]  # one prediction call per test set
    assert json.loads(paths.evaluation_metrics.read_text()) == json.loads(json.dumps(metrics))
    assert set(metrics["sets"]) == set(SETS) and metrics["synthetic"] is True
    ext = metrics["sets"]["external_test"]
    assert ext["n_patients"] == 6 and ext["model"]["map50"]["point"] > 0.9  # the expert's own boxes
    assert "SYNTHETIC" in paths.evaluation_report.read_text()
    predictions = pd.read_parquet(paths.evaluation_dir / "predictions.parquet")
    assert len(predictions) == (annotations["reader_id"] == "exp_1").sum()
    assert {p.name for p in paths.evaluation_dir.glob("pr_*.png")} == {
        f"pr_{s}_{c}.png" for s in SETS for c in ("normal", "compression")
    }

    assert {u.stage for u in updates} == {"evaluate"} and {u.total for u in updates} == {10}
    assert [u.done for u in updates if "predicting" in u.detail] == [0, 2, 4, 4, 6, 8, 10]
    assert updates[1].detail == "internal_test: predicting 2/4"
    events = [u.event for u in updates if u.event]
    assert events[0] == "internal_test: scoring the model and 4 readers, 50 resamples"
    assert events[1].startswith("internal_test: scored in ") and events[3].startswith("external_test: scored in ")
    assert updates[-1].done == 10
