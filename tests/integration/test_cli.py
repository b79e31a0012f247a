"""The `cordwatch` CLI end to end on the ci profile, under a throwaway Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import REPO, all_output_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """The repo's params.yaml with every path in tmp_path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {
        "synth_dir": str(tmp_path / "synth"),
        "ingested_dir": str(tmp_path / "ingested"),
        "state_dir": str(tmp_path / ".state"),
        "reports_dir": str(tmp_path / "reports"),
        "splits_file": str(tmp_path / "splits.parquet"),
    }
    raw["ingest"].update(input_dir=None, annotations_csv=None)  # null: the cohort in the moved paths.synth_dir
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_help_on_every_command() -> None:
    code, out = _run("--help")
    assert code == 0 and "synth" in out and "ingest" in out
    for cmd in ("synth", "ingest"):
        code, out = _run(cmd, "--help")
        assert code == 0 and "--profile" in out


def test_synth_then_ingest_ci_profile(params_file: Path, tmp_path: Path) -> None:
    code, out = _run("synth", "--params", str(params_file), "--profile", "ci")
    assert code == 0, out
    assert "SYNTHETIC" in out
    cohort = pd.read_csv(tmp_path / "synth" / "cohort.csv")
    n_images = int((cohort["is_distractor"] == 0).sum())
    n_files = len(cohort)

    code, out = _run("ingest", "--params", str(params_file), "--profile", "ci")
    assert code == 0, out
    assert f"ingest: {n_files} files, {n_images} ok" in out and "[SYNTHETIC phantom data]" in out
    ingested = tmp_path / "ingested"
    images = pd.read_parquet(ingested / "images.parquet")
    manifest = pd.read_parquet(ingested / "manifest.parquet")
    assert len(images) == n_images and images["is_synthetic"].all()
    assert set(images["site"]) == {"dev", "ext"}
    assert images["patient_key"].nunique() == cohort.loc[cohort["is_distractor"] == 0, "patient_id"].nunique()
    assert (manifest["kind"] == "file").sum() == n_files
    assert set(manifest.loc[manifest["status"] == "quarantined", "reason"]) <= {
        "series_rule:sagittal",
        "series_rule:t2_weighted",
    }
    # Every patient identity the generator planted is absent from the dataset (raw bytes and table contents).
    tables = " ".join(pd.read_parquet(p).to_csv() for p in ingested.glob("*.parquet"))
    blob = all_output_bytes(ingested) + tables.encode()
    for pid in cohort["patient_id"].unique():
        assert str(pid).encode() not in blob
    for institution in ("Northbridge", "Lakeshore"):
        assert institution.encode() not in blob


def test_bad_params_exit_2_with_the_key_named(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ingest"]["max_file_mbb"] = 3
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    code, out = _run("ingest", "--params", str(bad))
    assert code == 2
    assert "ingest.max_file_mbb" in out and "did you mean 'max_file_mb'" in out
    code, out = _run("synth", "--params", str(REPO / "params.yaml"), "--profile", "huge")
    assert code == 2 and "available profiles: ci, demo, paper" in out


def test_missing_input_folder_is_a_clear_error(params_file: Path, tmp_path: Path) -> None:
    code, out = _run("ingest", "--params", str(params_file), "--input", str(tmp_path / "nowhere"))
    assert code == 2 and "input folder not found" in out


def test_ingest_task_retries_io_errors_only(params_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.ingest_flow as ingest_flow_module
    from pipelines.config import load_params

    params = load_params(params_file, "ci")
    params = params.model_copy(update={"ingest": params.ingest.model_copy(update={"retry_delay_s": 0.0})})
    calls: list[str] = []

    def flaky(*args, **kwargs):
        calls.append("call")
        if len(calls) == 1:
            raise OSError("share went away")
        return "done"

    monkeypatch.setattr(ingest_flow_module, "run_ingest", flaky)
    result = ingest_flow_module.ingest_task.with_options(retries=2, retry_delay_seconds=0)
    from prefect import flow

    @flow
    def wrapper() -> object:
        return result(params, Path("."), Path("."), None)

    assert wrapper() == "done" and len(calls) == 2

    calls.clear()

    def broken(*args, **kwargs):
        calls.append("call")
        raise ValueError("a bug, not I/O")

    monkeypatch.setattr(ingest_flow_module, "run_ingest", broken)
    with pytest.raises(ValueError, match="a bug"):
        wrapper()
    assert len(calls) == 1  # not retried


@pytest.mark.slow
def test_sigkill_half_way_then_restart_completes(params_file: Path, tmp_path: Path) -> None:
    """A real kill -9 in the middle of a run; the restart resumes and gives the same dataset as a clean run."""
    code, _ = _run("synth", "--params", str(params_file), "--profile", "ci")
    assert code == 0
    src, state = tmp_path / "synth" / "dicom", tmp_path / ".state-killed"
    script = (
        "import sys, time; from pathlib import Path; from pipelines.config import load_params;"
        "from pipelines.ingest import run_ingest;"
        f"p = load_params(Path({str(params_file)!r}), 'ci');"
        f"p = p.model_copy(update={{'paths': p.paths.model_copy(update={{'state_dir': Path({str(state)!r})}}),"
        "'ingest': p.ingest.model_copy(update={'workers': 1})});"
        "slow = lambda d, t: time.sleep(0.2);"
        f"run_ingest(p, Path({str(src)!r}), Path({str(tmp_path / 'killed')!r}), progress=slow)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    journal = state / "ingest" / "journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(journal.read_text().splitlines())
    assert 10 <= done_before < 46  # it really died half way

    from pipelines.config import load_params
    from pipelines.ingest import run_ingest

    p = load_params(params_file, "ci")
    p = p.model_copy(update={"paths": p.paths.model_copy(update={"state_dir": state})})
    resumed = run_ingest(p, src, tmp_path / "killed")
    assert resumed.reused >= 10
    p_clean = p.model_copy(update={"paths": p.paths.model_copy(update={"state_dir": tmp_path / ".state-clean"})})
    run_ingest(p_clean, src, tmp_path / "clean")
    for name in ("images.parquet", "annotations.parquet", "manifest.parquet"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_score_command_prints_table_and_writes_json(tmp_path: Path) -> None:
    import json

    ref = tmp_path / "ref.csv"
    ref.write_text(
        "image_id,label,x_min,y_min,x_max,y_max,patient_key\n"
        "a,normal,10,10,20,20,p1\na,compression,10,30,20,40,p1\nb,normal,10,10,20,20,p2\nc,compression,5,5,15,15,p3\n"
    )
    reader = tmp_path / "reader.csv"  # no score column: a reader
    reader.write_text("image_id,label,x_min,y_min,x_max,y_max\na,normal,10,10,20,20\nc,compression,5,5,15,15\n")
    out = tmp_path / "figures.json"
    code, text = _run("score", "--pred", str(reader), "--ref", str(ref), "--json", str(out))
    assert code == 0, text
    assert "mAP50" in text and "lesion sensitivity" in text
    figures = json.loads(out.read_text())
    assert {"point", "low", "high"} <= set(figures["map50"])
    assert figures["sensitivity"]["point"] == pytest.approx(0.5)  # 1 of 2 compression boxes found
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label,x_min,y_min,x_max\na,normal,1,1,2\n")
    code, text = _run("score", "--pred", str(bad), "--ref", str(ref))
    assert code == 2 and "y_max" in text


def test_split_then_validate_and_a_broken_contract_stops_it(params_file: Path, tmp_path: Path) -> None:
    for cmd in ("synth", "ingest", "split", "validate"):
        code, out = _run(cmd, "--params", str(params_file), "--profile", "ci")
        assert code == 0, (cmd, out)
    assert "all data contracts hold" in out
    assert (tmp_path / "reports" / "validation" / "index.html").is_file()

    splits_file = tmp_path / "splits.parquet"
    splits = pd.read_parquet(splits_file)
    leaked = splits["site"] == "ext"
    splits.loc[leaked, ["split", "fold"]] = ["cv", 0]  # the external centre sneaks into training
    splits.to_parquet(splits_file, index=False)
    code, out = _run("validate", "--params", str(params_file), "--profile", "ci")
    assert code == 1
    assert "splits: the external site is never in training" in out
