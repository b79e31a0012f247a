"""Faults, measured: `cordwatch retrain` killed by SIGKILL at four points, then run again (issue 13).

One project, one sequence of real `cordwatch retrain` processes, each in its own session and killed with its whole
process group (its spawned fold workers included), as a crash would take them:
1. during ingestion, seen from outside: the ingest journal holds some files but not all;
2. mid-fold, seen from outside: a fold has trained its first batches and saved no checkpoint yet;
3. during registration, right after the version is created (before its card, description and aliases): the process
   kills itself at the fault-injection hook `pipelines.register.faults.crash_point`, a moment too short to hit from
   outside;
4. inside the promotion lock, after `challenger` moved and before `approved-candidate` and the audit entry;
5. then it runs to the end.
After every kill: every version carries its gate outcomes, no alias points at a half-registered or failed version,
and no process of the run is left. At the end: one version, finished, with the aliases, the model (its weights), the
metrics and the gate outcomes of the session's uninterrupted ci project (`ci_project`: the same params, cohort and
pseudonym key).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from pipelines.register.faults import CRASH_ENV
from pipelines.register.registry import (
    APPROVED,
    CHALLENGER,
    CHAMPION,
    COMPLETE,
    GATE_PREFIX,
    IN_PROGRESS,
    REGISTRATION_TAG,
    REQUIRED_GATES,
    Registry,
    gate_verdict,
)
from tests.integration.conftest import PSEUDONYM_KEY, write_ci_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "cordwatch-detector"
LOCK = f"{NAME}.promotion-lock"
# Tags that differ between two projects by construction: MLflow's run ids, the hash of the whole params (project
# paths included), the registration key (which hashes the first two) and the process that created the version.
PER_PROJECT_TAGS = {
    "cordwatch.train_run_id",
    "cordwatch.evaluation_run_id",
    "cordwatch.lineage.params_hash",
    "cordwatch.registration.key",
    "cordwatch.registration.process",
}


class Run(NamedTuple):
    returncode: int
    killed: bool  # by the test, from outside
    left_behind: set[int]  # live processes of its session once its main process had gone
    output: str


def _session(sid: int) -> set[int]:
    """Live processes of session `sid` (a zombie waiting for init to reap it runs nothing: not counted)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.getsid(int(entry.name)) == sid and state != "Z":
                    found.add(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def _retrain(root: Path, env: dict[str, str], kill_when: Callable[[], bool] | None = None, crash_at: str = "") -> Run:
    """`cordwatch retrain` in its own session; SIGKILL to its process group once `kill_when()` holds."""
    log = root / f"retrain-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "retrain", "--params", str(root / "params.yaml")],
            cwd=root, env={**env, CRASH_ENV: crash_at}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        killed, left = False, set()
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if kill_when is not None and kill_when():
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.02)
            proc.wait(30)
            # Whatever the run started must go with it: fold workers watch their parent for a second.
            settle = time.monotonic() + 5
            while (left := _session(proc.pid)) and time.monotonic() < settle:
                time.sleep(0.1)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # never leave a process behind, even when an assertion fails
            proc.wait(30)
    return Run(proc.returncode, killed, left, log.read_text())


def _client(root: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _registry_holds(root: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The invariants after any kill, checked; returns version -> tags and alias -> version."""
    registry = Registry(_client(root), NAME)
    tags = {str(v.version): dict(v.tags or {}) for v in registry.versions()}
    aliases = registry.aliases()
    for version, t in tags.items():
        assert {f"{GATE_PREFIX}{g}" for g in REQUIRED_GATES} <= set(t), f"version {version} lacks gate outcomes"
        assert t.get(REGISTRATION_TAG) in {IN_PROGRESS, COMPLETE}, version
        if t[REGISTRATION_TAG] == IN_PROGRESS:  # never promotable while half-registered
            ok, why = registry.eligible(version, registry.alias(CHAMPION))
            assert not ok and "half-registered" in why
    for alias, version in aliases.items():
        assert tags[version][REGISTRATION_TAG] == COMPLETE, f"{alias} on half-registered version {version}"
        if alias in {APPROVED, CHAMPION}:
            assert gate_verdict(tags[version])[0], f"{alias} on failed version {version}"
    return tags, aliases


def _lock_held(root: Path) -> bool:
    return bool(_client(root).search_registered_models(f"name = '{LOCK}'"))


def _weights(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["model"].state_dict()


def _registered(client: mlflow.MlflowClient, root: Path, tmp: Path) -> dict[str, Any]:
    """What version 1 was registered with: its tags, the reports and predictions logged with it, its weights."""
    version = client.get_model_version(NAME, "1")
    out = {"tags": {k: v for k, v in version.tags.items() if not k.startswith("cordwatch.signoff.")}}
    tmp.mkdir()
    for name in ("metrics.json", "summary.json"):  # evaluation metrics, train summary (fold metrics, CV)
        local = client.download_artifacts(version.run_id, f"evaluation/{name}", str(tmp))
        out[name] = json.loads(Path(local).read_text())
    boxes = client.download_artifacts(version.run_id, "evaluation/external_predictions.parquet", str(tmp))
    out["predictions"] = pd.read_parquet(boxes)
    model = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(NAME, "1"),
            dst_path=str(tmp / "model"),
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        )
    )
    out["weights"] = _weights(next((model / "artifacts").glob("*.pt")))
    first = next(e for e in Registry(client, NAME).audit_log() if e["action"] == "register")
    out["aliases"] = sorted(first["aliases"])
    return out


def test_retrain_killed_at_four_points_then_rerun_registers_what_an_uninterrupted_run_does(
    ci_project: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    write_ci_params(root)
    shutil.copytree(ci_project / "data" / "synth", root / "data" / "synth")  # the SYNTHETIC cohort synth wrote
    files = sum(1 for p in (root / "data" / "synth" / "dicom").rglob("*") if p.is_file())
    journal = root / ".cordwatch" / "ingest" / "journal.jsonl"
    runs = root / "models" / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        CORDWATCH_PSEUDONYM_KEY=PSEUDONYM_KEY, DO_NOT_TRACK="1", YOLO_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1",
        YOLO_CONFIG_DIR=str(root / ".cordwatch" / "ultralytics"),
    )  # fmt: skip

    def journaled() -> int:
        return journal.read_bytes().count(b"\n") if journal.is_file() else 0

    def fold_part_way() -> bool:
        folds = [d for d in runs.glob("fold*") if d.is_dir()] if runs.is_dir() else []
        started = any((d / "train_batch0.jpg").is_file() for d in folds)  # plotted once its first batch trained
        return started and not any((d / "weights" / "last.pt").exists() for d in folds)

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # one server for every run: no start-up per run

        # 1. During ingestion.
        run = _retrain(root, env, kill_when=lambda: 0 < journaled() < files)
        assert run.killed and run.left_behind == set(), run.output[-3000:]
        assert 0 < journaled() < files and not (root / "data" / "ingested" / "images.parquet").exists()
        assert _registry_holds(root) == ({}, {})

        # 2. Mid-fold: the ingestion resumes from its journal, then training starts and is killed.
        run = _retrain(root, env, kill_when=fold_part_way)
        assert run.killed and run.left_behind == set(), run.output[-3000:]
        assert "resumed from journal" in run.output
        assert not list(runs.glob("fold*/weights/last.pt")) and not list(runs.glob("fold*/cordwatch_done.json"))
        assert list(runs.glob("fold*/train_batch0.jpg")) and not (root / "models" / "final.pt").exists()
        assert _registry_holds(root) == ({}, {})

        # 3. Registration, the version just created: gates recorded, no card, no alias.
        run = _retrain(root, env, crash_at="register:version-created")
        assert run.returncode == -signal.SIGKILL and run.left_behind == set(), run.output[-3000:]
        tags, aliases = _registry_holds(root)
        assert list(tags) == ["1"] and tags["1"][REGISTRATION_TAG] == IN_PROGRESS and aliases == {}
        assert "being written" in _client(root).get_model_version(NAME, "1").description
        assert not _lock_held(root)

        # 4. Registration, inside the promotion lock: version 1 finished, challenger moved, then the kill.
        run = _retrain(root, env, crash_at="registry:alias-set")
        assert run.returncode == -signal.SIGKILL and run.left_behind == set(), run.output[-3000:]
        assert "evaluate: cached (" in run.output, "a stage before register ran again: its code changed under the test?"
        tags, aliases = _registry_holds(root)
        assert list(tags) == ["1"] and tags["1"][REGISTRATION_TAG] == COMPLETE
        assert aliases == {CHALLENGER: "1"}
        assert "model_card/model_card.html" in _client(root).get_model_version(NAME, "1").description
        assert _lock_held(root)  # left by the dead holder
        assert [e["action"] for e in Registry(_client(root), NAME).audit_log()] == []

        # 5. To the end: the dead holder's lock is broken at once (not after lock_stale_after_s), the kill audited.
        run = _retrain(root, env)
        assert run.returncode == 0 and run.left_behind == set(), run.output[-3000:]
    summary = json.loads((root / "reports" / "retrain" / "summary.json").read_text())
    assert summary["ran"] == ["register"] and summary["version"] == "1"
    tags, aliases = _registry_holds(root)
    assert list(tags) == ["1"] and aliases == {CHALLENGER: "1", APPROVED: "1"} and not _lock_held(root)
    audit = Registry(_client(root), NAME).audit_log()
    assert [e["action"] for e in audit] == ["lock-broken", "register"]
    assert "died holding it" in audit[0]["note"]
    registered = json.loads((root / "reports" / "register" / "summary.json").read_text())
    assert registered["card"] and all(p.startswith("model_card/") for p in registered["card"])
    assert _client(root).get_run(registered["run_id"]).info.status == "FINISHED"

    # The same result as the uninterrupted run: model, metrics, gates, aliases.
    ours = _registered(_client(root), root, tmp_path / "ours")
    theirs = _registered(_client(ci_project), ci_project, tmp_path / "theirs")
    baseline_gates = {g: theirs["tags"][f"{GATE_PREFIX}{g}"] for g in REQUIRED_GATES}
    assert {g: f"{v['status']}: {v['reason']}" for g, v in summary["gates"].items()} == baseline_gates
    differ = {k for k in ours["tags"].keys() | theirs["tags"].keys() if ours["tags"].get(k) != theirs["tags"].get(k)}
    assert differ == PER_PROJECT_TAGS, differ
    assert ours["aliases"] == theirs["aliases"]
    assert ours["metrics.json"] == theirs["metrics.json"] and ours["summary.json"] == theirs["summary.json"]
    pd.testing.assert_frame_equal(ours["predictions"], theirs["predictions"], check_exact=True)
    assert ours["weights"].keys() == theirs["weights"].keys()
    assert all(ours["weights"][k].equal(theirs["weights"][k]) for k in ours["weights"]), "trained weights differ"


def test_a_fold_killed_after_its_last_checkpoint_finishes_on_the_next_run(ci_project: Path, tmp_path: Path) -> None:
    """A kill after the last epoch's `last.pt` and before the fold's done marker (the final validation and plots, a
    few seconds of every fold). ultralytics refuses to resume a finished run ("training to N epochs is finished,
    nothing to resume"), so `train_one` trains such a fold again: the same weights and metrics, seeded and
    deterministic, as the uninterrupted ci project's fold 0."""
    from pipelines import runtime
    from pipelines.config import load_params
    from pipelines.train.core import DONE_MARKER, train_one

    params = load_params(ci_project / "params.yaml")
    runtime.configure_ultralytics(params.paths.state_dir)
    prof = params.train.profile("ci")
    data_yaml = params.paths.state_dir / "yolo" / "fold0" / "data.yaml"  # the view the ci project trained fold 0 on

    def die_after_the_last_epoch(name: str, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == prof.epochs:  # called after ultralytics saved the epoch's last.pt
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one("fold0", data_yaml, tmp_path / "runs", params.train, prof, log=die_after_the_last_epoch)
    run_dir = tmp_path / "runs" / "fold0"
    assert (run_dir / "weights" / "last.pt").is_file() and not (run_dir / DONE_MARKER).exists()
    result = train_one("fold0", data_yaml, tmp_path / "runs", params.train, prof)
    trained = json.loads(params.paths.summary_file("train").read_text())
    assert (run_dir / DONE_MARKER).is_file() and result.metrics == trained["folds"]["fold0"]
