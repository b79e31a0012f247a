"""`dvc repro` on the ci profile in a temporary copy of the repo: stages run, a parameter change re-runs only what
depends on it, an edited shared module or a moved input folder invalidates exactly the stages that use it,
params/metrics diffs tell a reviewer what moved, and push/pull round-trips through the local remote."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from pipelines.lineage import dvc_hash
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _sh(repo: Path, *cmd: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CORDWATCH_PSEUDONYM_KEY": "dvc-test-key-0123456789abcdef",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    env.pop("YOLO_CONFIG_DIR", None)  # the copy keeps tool state in its own .cordwatch/
    done = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}")
    return done.stdout + done.stderr


def _copy_repo(dest: Path) -> Path:
    """The repo's tracked and unignored files (what a fresh clone plus local edits would hold), minus run state."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for rel in listed:
        if rel == "dvc.lock" or rel.startswith("reports/"):
            continue
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _set_param(repo: Path, section: str, key: str, value: object) -> None:
    """Edit one value in params.yaml in place, keeping its comments (a reviewer's one-line change)."""
    text = (repo / "params.yaml").read_text()
    start = re.search(rf"^{section}:", text, re.M).start() if section else 0
    pattern = re.compile(rf"^(\s*{key}: )([^#\n]*?)(\s*#.*)?$", re.M)
    match = pattern.search(text, start)
    assert match is not None, (section, key)
    text = text[: match.start(2)] + str(value) + text[match.end(2) :]
    (repo / "params.yaml").write_text(text)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _changed_stages(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed (their own deps or params moved; not yet their downstream)."""
    out = _sh(repo, "dvc", "status")
    return {m.group(1) for m in re.finditer(r"^(\w+):$", out, re.M)}


def _check_shared_code_and_input_folder(repo: Path) -> None:
    """Editing a shared module invalidates the stages that import it, and only those; ingest follows its input."""
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    for module, users in {
        "pipelines/labels.py": {"ingest", "train", "evaluate", "register"},  # label lines and the reference boxes
        "pipelines/contracts.py": stages,  # every stage's names
    }.items():
        original = (repo / module).read_text()
        (repo / module).write_text(original + "\n# an edit\n")
        assert _changed_stages(repo) == users, module
        (repo / module).write_text(original)
    assert _changed_stages(repo) == set()

    # Ingest depends on the folder it really reads (ingest.input_dir), not on data/synth.
    shutil.copytree(repo / "data" / "synth" / "dicom", repo / "export" / "dicom")
    _set_param(repo, "ingest", "input_dir", "export/dicom")
    assert _changed_stages(repo) == {"ingest"}
    assert "export/dicom" in _sh(repo, "dvc", "status", "ingest")
    _set_param(repo, "ingest", "input_dir", "data/synth/dicom")
    shutil.rmtree(repo / "export")
    assert _changed_stages(repo) == set()


@pytest.fixture
def prefect_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One Prefect server for every stage `dvc repro` runs: each `cordwatch <stage>` would otherwise start and stop a
    temporary server of its own (about 12 s a stage on 2 cores), as a user without `PREFECT_API_URL` pays."""
    with prefect_test_harness(server_startup_timeout=120):
        monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
        yield


def test_dvc_repro_reruns_only_what_changed_and_push_pull(tmp_path: Path, prefect_api: None) -> None:
    repo = _copy_repo(tmp_path / "repo")
    _set_param(repo, "", "profile", "ci")
    _set_param(repo, "evaluate", "bootstrap_resamples", 200)  # keeps the evaluate stage quick
    _sh(repo, "git", "init", "-q")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-qm", "copy")

    out = _sh(repo, "dvc", "repro")
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages)
    assert (repo / "data" / "ingested" / "images.parquet").is_file()
    assert (repo / "data" / "splits.parquet").is_file()
    assert (repo / "reports" / "validation" / "index.html").is_file()  # Data Docs
    assert dvc_hash(Path("data/ingested/images.parquet"), repo).endswith(".dir")
    # In a git repository the training run's tree state is known to the registration gate (clean, or a warning).
    registered = json.loads((repo / "reports" / "register" / "summary.json").read_text())
    assert "unknown" not in registered["gates"]["clean_git_tree"]["reason"]

    # Record the experiment (lock + metric summaries), as the README says, then move one parameter.
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "add", "-f", *[str(p.relative_to(repo)) for p in (repo / "reports").glob("*/summary.json")])
    _sh(repo, "git", "commit", "-qm", "ci run")
    splits_before = _sha(repo / "data" / "splits.parquet")
    ingested_before = _sha(repo / "data" / "ingested" / "images.parquet")
    weights_before = _sha(repo / "models" / "final.pt")
    # A statistics parameter: the CIs move, the data and the model do not (a change upstream, such as split.seed,
    # follows the same rule through dvc.yaml; this one spares the test a second training).
    _set_param(repo, "evaluate", "bootstrap_resamples", 150)
    out = _sh(repo, "dvc", "repro")
    for stage in ("synth", "ingest", "split", "validate", "train"):
        assert f"Stage '{stage}' didn't change, skipping" in out, stage
    assert "Running stage 'evaluate'" in out
    assert "Running stage 'register'" in out  # it reads evaluate's figures and its bootstrap settings
    assert _sha(repo / "data" / "ingested" / "images.parquet") == ingested_before
    assert _sha(repo / "data" / "splits.parquet") == splits_before
    assert _sha(repo / "models" / "final.pt") == weights_before
    assert "evaluate.bootstrap_resamples" in _sh(repo, "dvc", "params", "diff")
    assert "reports/evaluation/metrics.json" in _sh(repo, "dvc", "metrics", "diff")

    # Nothing changed: nothing runs.
    out = _sh(repo, "dvc", "repro")
    assert "Running stage" not in out
    _check_shared_code_and_input_folder(repo)

    # push to the default local remote, lose data and cache, pull them back byte for byte
    _sh(repo, "dvc", "push")
    assert any((repo / ".dvc-storage").rglob("*"))
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    _sh(repo, "dvc", "pull")
    assert _sha(repo / "data" / "ingested" / "images.parquet") == ingested_before
    assert "Data and pipelines are up to date" in _sh(repo, "dvc", "status")
