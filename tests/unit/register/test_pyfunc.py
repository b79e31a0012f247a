"""The pyfunc detector: loads from the registry in a fresh process, predicts the boxes `cordwatch evaluate` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import pandas as pd
import pydicom
import pytest

from pipelines import runtime
from pipelines.evaluate.predict import predict_boxes
from pipelines.imaging import normalise
from pipelines.register.pyfunc import OUTPUT_COLUMNS, log_detector
from pipelines.synth import SynthParams, generate_cohort

CLIP = (0.5, 99.5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """An untrained (deterministic) YOLO11n, a few SYNTHETIC DICOM images, and their ingest-windowed PNGs."""
    root = tmp_path_factory.mktemp("pyfunc")
    runtime.configure_ultralytics(root / "state")
    from ultralytics import YOLO

    weights = root / "w.pt"
    model = YOLO("yolo11n.yaml")
    # Untrained, the Detect head's class bias keeps every score below 0.001; raise it so the model emits boxes (any
    # fixed weights serve: the test is that both paths give the same boxes, not that they are good).
    for branch in model.model.model[-1].cv3:
        branch[-1].bias.data += 6.0
    model.save(str(weights))
    cohort_dir = root / "synth"
    generate_cohort(SynthParams(), "ci", cohort_dir)
    cohort = pd.read_csv(cohort_dir / "cohort.csv")
    dicoms = [cohort_dir / p for p in cohort.loc[cohort["is_distractor"] == 0, "rel_path"].head(4)]
    pngs = root / "png"
    pngs.mkdir()
    for i, path in enumerate(dicoms):
        cv2.imwrite(str(pngs / f"img{i}.png"), normalise(pydicom.dcmread(path).pixel_array, CLIP))
    return weights, dicoms, pngs


def test_registered_pyfunc_predicts_evaluates_boxes_in_a_fresh_process(setup, tmp_path: Path) -> None:
    weights, dicoms, pngs = setup
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = log_detector(weights, imgsz=64, conf=0.001, clip_percentiles=CLIP)
    mlflow.register_model(info.model_uri, "cordwatch-detector")

    # A fresh interpreter, run from an empty folder with the project off sys.path (only the venv's packages).
    frame = tmp_path / "input.json"
    frame.write_text(json.dumps([str(p) for p in dicoms]))
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "assert not any('pipelines' in p for p in sys.path)\n"
        f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
        "m = mlflow.pyfunc.load_model('models:/cordwatch-detector/1')\n"
        f"out = m.predict(pd.DataFrame({{'path': json.load(open({str(frame)!r}))}}))\n"
        "import pipelines\n"
        "assert 'code' in pipelines.__file__, pipelines.__file__  # the copy shipped with the model\n"
        "out.to_json(sys.argv[1], orient='records')\n"
    )
    out_json = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, str(out_json)], cwd=empty, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = pd.read_json(out_json)
    assert list(got.columns) == list(OUTPUT_COLUMNS)
    assert len(got) > 0

    want = pd.concat(
        [
            predict_boxes(weights, [pngs / f"img{i}.png"], imgsz=64, conf=0.001, batch=1).assign(image=i)
            for i in range(len(dicoms))
        ]
    )
    key = ["image", "x_min", "y_min"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.rename(columns={"label": "class", "score": "confidence"}).sort_values(key).reset_index(drop=True)
    assert len(got) == len(want)
    assert (got["class"] == want["class"]).all()
    for col in ("confidence", "x_min", "y_min", "x_max", "y_max"):
        assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), abs=1e-3), col
