"""The pyfunc detector: loads from the registry in a fresh process, predicts the boxes `cordwatch evaluate` does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import mlflow
import pandas as pd
import pydicom
import pytest

from pipelines import runtime
from pipelines.evaluate.predict import predict_boxes
from pipelines.imaging import normalise
from pipelines.register.pyfunc import OUTPUT_COLUMNS, log_detector, project_imports_kept
from pipelines.synth import SynthParams, generate_cohort

CLIP = (0.5, 99.5)


@pytest.fixture(autouse=True)
def _keep_project_imports():
    """Loading a pyfunc in this process puts the model's copy of `pipelines/` first on sys.path: undo it, so later
    tests (and the processes they spawn) import the project, not a deleted copy."""
    with project_imports_kept():
        yield


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


@pytest.fixture(scope="module")
def registry(setup, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite registry holding the detector as version 1 of cordwatch-detector; returns its URI."""
    weights = setup[0]
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=(root / "artifacts").as_uri())
    path_before = list(sys.path)
    with mlflow.start_run(experiment_id=exp):
        info = log_detector(weights, imgsz=64, conf=0.001, clip_percentiles=CLIP)
    assert sys.path == path_before  # logging loads the model, which would put its code copy first on sys.path
    mlflow.register_model(info.model_uri, "cordwatch-detector")
    return uri


def test_registered_pyfunc_predicts_evaluates_boxes_in_a_fresh_process(setup, registry: str, tmp_path: Path) -> None:
    weights, dicoms, pngs = setup
    uri = registry

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mlflow_models_serve_answers_invocations_on_loopback(setup, registry: str, tmp_path: Path) -> None:
    """`mlflow models serve --env-manager local` runs uvicorn through PATH: the venv's bin must be on it."""
    dicoms = setup[1]
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "MLFLOW_REGISTRY_URI": registry}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/cordwatch-detector/1"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"server did not answer: {(tmp_path / 'serve.log').read_text()[-2000:]}")
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(dicoms[0])]]}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        rows = answer["predictions"]
        assert rows and set(rows[0]) == set(OUTPUT_COLUMNS)
        assert {r["image"] for r in rows} == {0}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_pixels_in_give_the_same_boxes_as_the_dicom_path(setup, registry: str) -> None:
    dicoms = setup[1]
    mlflow.set_tracking_uri(registry)
    mlflow.set_registry_uri(registry)
    model = mlflow.pyfunc.load_model("models:/cordwatch-detector/1")
    by_path = model.predict(pd.DataFrame({"path": [str(dicoms[1])]}))
    stored = pydicom.dcmread(dicoms[1]).pixel_array
    by_pixels = model.predict(pd.DataFrame({"pixels": [stored.tolist()]}))
    assert len(by_path) > 0
    pd.testing.assert_frame_equal(by_path, by_pixels)
    with pytest.raises(Exception, match="neither a path nor pixels"):
        model.predict(pd.DataFrame({"path": [""]}))


def test_logged_input_example_is_self_contained_and_predicts(registry: str) -> None:
    from mlflow.models import Model

    mlflow.set_tracking_uri(registry)
    mlflow.set_registry_uri(registry)
    local = mlflow.artifacts.download_artifacts("models:/cordwatch-detector/1")
    example = Model.load(local).load_input_example(local)
    assert list(example.columns) == ["pixels"]
    out = mlflow.pyfunc.load_model(local).predict(example)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    # Models from code: the model holds its entry file and weights, no pickled object; the signature's conf param.
    assert not list(Path(local).rglob("*.pkl"))
    flavor = Model.load(local).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (Path(local) / "detector_entry.py").is_file()
    assert [p.name for p in Model.load(local).signature.params.params] == ["conf"]
