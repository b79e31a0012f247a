"""dciodvfy (dicom3tools) for tests: the standard's own IOD checker, run on a written DICOM file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def dciodvfy_binary() -> Path | None:
    """The `dciodvfy` next to the running interpreter (the venv's bin/), else the one on PATH, else None."""
    beside = Path(sys.executable).parent / "dciodvfy"
    if beside.is_file():
        return beside
    found = shutil.which("dciodvfy")
    return Path(found) if found else None


def dciodvfy_report(path: Path) -> list[str]:
    """Every line dciodvfy prints about `path` (errors and warnings); skips the test when dciodvfy is absent."""
    binary = dciodvfy_binary()
    if binary is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: install the dev dependencies to run this check")
    # dciodvfy exits non-zero on errors and writes its findings to stderr; the lines are what matter.
    done = subprocess.run([str(binary), str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy reports for `path` (empty when it conforms); warnings are printed, not returned."""
    lines = dciodvfy_report(path)
    for line in lines:
        if line.startswith("Warning"):
            print(f"dciodvfy {path.name}: {line}")
    return [line for line in lines if line.startswith("Error")]
