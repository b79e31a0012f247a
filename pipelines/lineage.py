"""Data lineage for tracking: which data (DVC hash), which code (git commit) and which settings (params hash).

Later stages record these as MLflow tags, so a governance reviewer can trace a model to the exact dataset version.
The DVC hash is the one DVC itself recorded in `dvc.lock` for the stage output that holds the path.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:  # a shared module: the whole params arrive from the caller
    from pipelines.config import Params


@dataclass(frozen=True)
class Lineage:
    """Where a run's inputs came from."""

    data_path: str
    dvc_hash: str | None  # md5 of the DVC output (".dir" suffix for folders), None when not produced by dvc repro
    git_commit: str | None
    git_dirty: bool | None
    params_hash: str

    def as_tags(self) -> dict[str, str]:
        """Flat string tags, e.g. for MLflow."""
        return {f"cordwatch.lineage.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def dvc_hash(path: Path, repo_root: Path = Path(".")) -> str | None:
    """The md5 DVC recorded in dvc.lock for the output `path` (or the output folder containing it)."""
    lock_file = repo_root / "dvc.lock"
    if not lock_file.is_file():
        return None
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    target = Path(path).as_posix().rstrip("/")
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            out_path = str(out.get("path", "")).rstrip("/")
            if target == out_path or target.startswith(out_path + "/"):
                return out.get("md5")
    return None


def _git(repo_root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=repo_root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def lineage(params: Params, data_path: Path, repo_root: Path = Path(".")) -> Lineage:
    """Collect the lineage of a run that reads `data_path` under `params`."""
    commit = _git(repo_root, "rev-parse", "HEAD")
    status = _git(repo_root, "status", "--porcelain", "--untracked-files=no")
    dumped = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    return Lineage(
        data_path=Path(data_path).as_posix(),
        dvc_hash=dvc_hash(data_path, repo_root),
        git_commit=commit,
        git_dirty=None if status is None else bool(status),
        params_hash=hashlib.sha256(dumped).hexdigest()[:16],
    )
