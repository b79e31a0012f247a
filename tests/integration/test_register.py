"""Registration on the ci project, as a user runs it: the version, its gates and lineage, the model card against
metrics.json, the pyfunc from the registry against evaluate's boxes, sign-off and rollback through the CLI, and the
version's page in headless Chromium against a real `mlflow server`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pydicom
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from pipelines.config import PathsParams, load_params
from pipelines.contracts import EXTERNAL_TEST
from pipelines.evaluate.report import _ci
from pipelines.ingest.deid import Pseudonymizer
from pipelines.mlflow_store import CLASSIC_VIEW
from pipelines.register.registry import APPROVED, CHALLENGER, CHAMPION, REQUIRED_GATES, Registry
from pipelines.register.run import champion_predictions, external_set
from tests.integration.conftest import PSEUDONYM_KEY
from tests.servers import browse, environ, mlflow_server, postgresql

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "cordwatch-detector"


def _client(project: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _cli(project: Path, *args: str, params: str = "params.yaml"):
    cwd = Path.cwd()
    os.chdir(project)
    try:
        return CliRunner().invoke(app, [*args, "--params", str(project / params)])
    finally:
        os.chdir(cwd)


def test_registered_version_carries_gates_lineage_headline_and_card(ci_project: Path, tmp_path: Path) -> None:
    paths = PathsParams.under(ci_project)
    summary = json.loads(paths.summary_file("register").read_text())
    assert summary["version"] == "1" and summary["passed"]  # gates relaxed for the ci model (conftest)
    client = _client(ci_project)
    version = client.get_model_version(NAME, "1")
    tags = version.tags
    assert {f"cordwatch.gate.{g}" for g in REQUIRED_GATES} <= set(tags)
    assert tags["cordwatch.gates"] == "pass" and tags["cordwatch.gates.champion_version"] == ""
    train_run = json.loads(paths.train_run_file.read_text())["mlflow_run_id"]
    assert tags["cordwatch.train_run_id"] == train_run
    evaluation = client.search_runs(
        [client.get_experiment_by_name("cordwatch").experiment_id], "tags.`cordwatch.stage` = 'evaluate'"
    )
    assert tags["cordwatch.evaluation_run_id"] == evaluation[0].info.run_id
    validation = json.loads(paths.summary_file("validation").read_text())
    assert tags["cordwatch.data_fingerprint"] == validation["data_fingerprint"]
    assert tags["cordwatch.gate.data_contracts"].startswith("pass: contracts passed on the training data")
    assert len(tags["cordwatch.lineage.params_hash"]) == 16
    metrics = json.loads(paths.evaluation_metrics.read_text())
    ext = metrics["sets"][EXTERNAL_TEST]["model"]["map50"]
    assert tags["cordwatch.external.map50"] == f"{ext['point']:.3f} ({ext['low']:.3f}-{ext['high']:.3f})"
    assert Registry(client, NAME).aliases() == {CHALLENGER: "1", APPROVED: "1"}
    # The experiment opens in the classic view; the version's description points at its card.
    experiment = client.get_experiment_by_name("cordwatch")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "model_card/model_card.html" in version.description and "SYNTHETIC" in version.description

    # The card, as logged, quotes metrics.json's own figures (formatted as the evaluation report does).
    card_dir = Path(client.download_artifacts(version.run_id, "model_card", str(tmp_path)))
    card = (card_dir / "model_card.md").read_text()
    assert _ci(ext) in card
    for group, figure in metrics["sets"][EXTERNAL_TEST]["model_minus_group"].items():
        assert _ci(figure, signed=True) in card, group
    assert "SYNTHETIC DATA" in card and "## Registration gates" in card
    html = (card_dir / "model_card.html").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    assert (card_dir / "data_validation" / "index.html").is_file()
    assert {p.name for p in (card_dir / "plots").glob("*.png")} >= {"cv_folds_map50.png"}


def test_registry_pyfunc_gives_evaluates_boxes_from_the_source_dicoms(ci_project: Path, tmp_path: Path) -> None:
    """`models:/cordwatch-detector@challenger` in a fresh process with no checkout on sys.path, on the synthetic
    DICOMs the external test images were ingested from: the boxes `cordwatch evaluate` scored. Asked for evaluate's own
    low threshold (the `conf` parameter; the registered default is the operating point), so every box is compared."""
    params = load_params(ci_project / "params.yaml")
    images, _, _, _ = external_set(params)
    wanted = set(images["image_id"].head(6))
    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    dicoms = {}
    for path in sorted((params.paths.synth_dir / "dicom").rglob("*.dcm")):
        image_id = pseudo.image(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        if image_id in wanted:
            dicoms[image_id] = str(path)
    assert set(dicoms) == wanted
    ids = sorted(dicoms)
    uri = f"sqlite:///{ci_project / 'mlflow.db'}"
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "assert not any('pipelines' in p for p in sys.path)\n"
        f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
        "m = mlflow.pyfunc.load_model('models:/cordwatch-detector@challenger')\n"
        f"out = m.predict(pd.DataFrame({{'path': {[dicoms[i] for i in ids]!r}}}), params={{'conf': 0.001}})\n"
        "print(out.to_json(orient='records'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = pd.DataFrame(json.loads(done.stdout.strip().splitlines()[-1]))
    got["image_id"] = [ids[i] for i in got["image"]]
    evaluated = pd.read_parquet(params.paths.evaluation_dir / "predictions.parquet")
    evaluated = evaluated[evaluated["image_id"].isin(wanted)]
    assert len(evaluated) > 20  # a real comparison: many boxes, not an empty set on both sides
    key = ["image_id", "x_min", "y_min"]
    got = got.sort_values(key).reset_index(drop=True)
    evaluated = evaluated.sort_values(key).reset_index(drop=True)
    assert len(got) == len(evaluated)
    assert list(got["class"]) == list(evaluated["label"])
    for column in ("x_min", "y_min", "x_max", "y_max"):
        assert (got[column] - evaluated[column]).abs().max() < 1e-3
    assert (got["confidence"] - evaluated["score"]).abs().max() < 1e-4


def test_logged_requirements_install_here_without_the_internet(ci_project: Path, tmp_path: Path) -> None:
    """The model's requirements.txt pins what is installed here: pip resolves it with no index at all."""
    client = _client(ci_project)
    source = client.get_model_version_download_uri(NAME, "1")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path)))
    requirements = (local / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "ultralytics", "pydicom", "numpy", "pandas"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r", str(local / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Would install" not in done.stdout  # everything already satisfied, nothing fetched


def test_sign_off_rollback_and_refusals_through_the_cli(ci_project: Path, tmp_path: Path) -> None:
    with prefect_test_harness(server_startup_timeout=120):
        refused = _cli(ci_project, "approve", "1", "--reviewer", "", "--note", "ok")
        assert refused.exit_code == 1 and "needs the reviewer's name" in refused.output
        unknown = _cli(ci_project, "approve", "7", "--reviewer", "Dr A", "--note", "ok")
        assert unknown.exit_code == 1 and "has no version 7" in unknown.output
        done = _cli(ci_project, "approve", "1", "--reviewer", "Dr A", "--note", "gates pass; card read")
        assert done.exit_code == 0, done.output
        assert "cordwatch-detector@champion: version 1 (was none), approved by Dr A" in done.output

        # Version 2: the same model again, compared with champion 1 on its stored external predictions.
        again = _cli(ci_project, "register")
        assert again.exit_code == 0, again.output
        assert "non_inferior_to_champion: minus champion 1: +0.000" in again.output
        # Version 3: strict gates (a floor the ci model cannot reach): registered, never eligible.
        raw = yaml.safe_load((ci_project / "params.yaml").read_text())
        raw["registry"]["gates"]["min_external_map50_lower"] = 0.99
        (ci_project / "strict.yaml").write_text(yaml.safe_dump(raw))
        strict = _cli(ci_project, "register", params="strict.yaml")
        assert strict.exit_code == 0 and "version 3: FAILED a gate" in strict.output
        registry = Registry(_client(ci_project), NAME)
        assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "3", APPROVED: "2"}
        failed = _cli(ci_project, "approve", "3", "--reviewer", "Dr A", "--note", "try")
        assert failed.exit_code == 1 and "failed gate(s): external_map50_floor" in failed.output

        assert _cli(ci_project, "approve", "2", "--reviewer", "Dr B", "--note", "retrained").exit_code == 0
        back = _cli(ci_project, "rollback", "--reviewer", "Dr C", "--note", "v2 misses levels at site ext")
        assert back.exit_code == 0 and "version 1 (was 2), rolled back by Dr C" in back.output
        table = _cli(ci_project, "models", "--audit")
        assert table.exit_code == 0
        assert "approved by Dr A" in table.output and "FAIL (external_map50_floor fail" in table.output
        assert "rollback" in table.output and "v2 misses levels at site ext" in table.output

    # The champion's boxes predicted anew with its own weights equal those it stored at registration.
    params = load_params(ci_project / "params.yaml")
    images, _, _, fingerprint = external_set(params)
    stored, how = champion_predictions(params, registry, "1", images, fingerprint)
    assert how.startswith("its predictions stored")
    fresh, how = champion_predictions(params, registry, "1", images, "another-set")
    assert how.startswith("predicted now")
    key = ["image_id", "score"]
    stored, fresh = stored.sort_values(key).reset_index(drop=True), fresh.sort_values(key).reset_index(drop=True)
    assert len(stored) == len(fresh) and (stored["score"] - fresh["score"]).abs().max() < 1e-5


def test_unreachable_registry_is_one_clear_line(ci_project: Path) -> None:
    raw = yaml.safe_load((ci_project / "params.yaml").read_text())
    raw["paths"]["mlflow_uri"] = "http://127.0.0.1:9"  # discard port: nothing listens
    (ci_project / "unreachable.yaml").write_text(yaml.safe_dump(raw))
    result = _cli(ci_project, "approve", "1", "--reviewer", "Dr A", "--note", "x", params="unreachable.yaml")
    assert result.exit_code == 2
    assert "the registry at http://127.0.0.1:9 is unreachable" in result.output


def test_version_page_and_card_in_headless_chromium(ci_project: Path, tmp_path: Path) -> None:
    """A real `mlflow server` on the project's store: the registered version's page renders its description with
    the card's link, and the card's HTML is served from the artifact store."""
    version = _client(ci_project).get_model_version(NAME, "1")
    with mlflow_server(tmp_path / "server", f"sqlite:///{ci_project / 'mlflow.db'}") as server:
        shot = tmp_path / "version.png"
        dom = browse(f"{server.uri}/#/models/{NAME}/versions/1?{CLASSIC_VIEW}", screenshot=shot)
        assert "Model card" in dom and "model_card/model_card.html" in dom
        assert "Model registry" in dom  # the classic view's sidebar (the GenAI view has no registry entry)
        assert shot.stat().st_size > 10_000
        # The description's link opens the card in the run's artifact viewer (an HTML artifact renders in a frame).
        link = re.search(r'href="(#/experiments/[^"]+model_card\.html[^"]*)"', dom)
        assert link is not None
        viewer = browse(f"{server.uri}/{link.group(1)}", screenshot=tmp_path / "card.png")
        assert 'class="mlflow-html-iframe"' in viewer and "model_card.html" in viewer
        url = f"{server.uri}/get-artifact?path=model_card/model_card.html&run_uuid={version.run_id}"
        with urllib.request.urlopen(url, timeout=30) as response:
            card = response.read().decode()
        assert "Model card: cordwatch-detector version 1" in card and "Registration gates" in card


def test_the_same_registry_code_on_postgresql_behind_the_auth_server(ci_project: Path, tmp_path: Path) -> None:
    """One URI setting: `cordwatch register`, `approve` and `models` against `mlflow server --app-name
    cordwatch-auth` on PostgreSQL. The pipeline's login registers and moves challenger / approved-candidate but
    cannot approve (the server refuses, nothing is written); the reviewer's login, from a 0600 file, can."""
    raw = yaml.safe_load((ci_project / "params.yaml").read_text())
    with (
        postgresql() as pg,
        mlflow_server(tmp_path / "server", pg.create_database("mlflow"), auth=True, registered_models=[NAME]) as server,
    ):
        raw["paths"]["mlflow_uri"] = server.uri
        (ci_project / "server.yaml").write_text(yaml.safe_dump(raw))
        assert server.pipeline is not None and server.reviewer is not None
        reviewer_file = tmp_path / "reviewer.ini"
        reviewer_file.write_text(f"[mlflow]\nusername = reviewer\npassword = {server.reviewer.password}\n")
        reviewer_file.chmod(0o600)
        pipeline = {
            "MLFLOW_TRACKING_USERNAME": server.pipeline.username,
            "MLFLOW_TRACKING_PASSWORD": server.pipeline.password,
        }
        with prefect_test_harness(server_startup_timeout=120):
            with environ(pipeline):
                registered = _cli(ci_project, "register", params="server.yaml")
                assert registered.exit_code == 0, registered.output
                assert f"{NAME} version 1: passed every gate (aliases: challenger, approved-candidate)" in (
                    registered.output
                )
                refused = _cli(
                    ci_project, "approve", "1", "--reviewer", "pipeline", "--note", "x", params="server.yaml"
                )
                assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.output
            no_login = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}
            with environ({**no_login, "CORDWATCH_MLFLOW_CREDENTIALS": str(reviewer_file)}):
                approved = _cli(ci_project, "approve", "1", "--reviewer", "Dr A", "--note", "ok", params="server.yaml")
                assert approved.exit_code == 0, approved.output
                table = _cli(ci_project, "models", "--audit", params="server.yaml")
            reviewer_file.chmod(0o644)  # (each CLI call here shares one process: clear what the last one set)
            with environ({**no_login, "CORDWATCH_MLFLOW_CREDENTIALS": str(reviewer_file)}):
                loose = _cli(ci_project, "models", params="server.yaml")
        assert "approved by Dr A" in table.output
        audit = table.output.split("audit log:")[1]
        actions = re.findall(r"^\s+\d+\s+\S+\s+(\S+)", audit, re.M)
        assert actions == ["register", "approve"]  # the refused approval left no entry
        assert loose.exit_code == 2 and "chmod 600" in loose.output
        with pg.connect("mlflow") as conn, conn.cursor() as cur:  # the versions live in PostgreSQL
            cur.execute("select count(*) from model_versions where name = %s", (NAME,))
            assert cur.fetchone()[0] == 1
        assert any(server.artifact_root.rglob("model_card.html"))  # artifacts in the server's own root
