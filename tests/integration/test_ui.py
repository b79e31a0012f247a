"""`cordwatch ui`: the Prefect UI, the MLflow UI and the drift dashboard answer on loopback, and Ctrl-C stops them
and every process they started (mlflow's job-queue workers included)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from monitoring.dashboard import open_workspace
from tests.integration.conftest import PSEUDONYM_KEY, write_ci_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sessions_of_children(pid: int) -> set[int]:
    """Session ids of `pid`'s direct children (each server runs in its own session)."""
    sids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    sids.add(os.getsid(int(entry.name)))
            except (OSError, ValueError, IndexError):
                continue
    return sids


def _in_sessions(sids: set[int]) -> set[int]:
    """Live processes of these sessions (a zombie waiting for init to reap it runs nothing: not counted)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.getsid(int(entry.name)) in sids and state != "Z":
                    found.add(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def test_ui_serves_the_three_uis_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    params_file = write_ci_params(tmp_path)
    open_workspace(tmp_path / "data" / "monitoring" / "workspace")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no test harness's settings
    env.update(CORDWATCH_PSEUDONYM_KEY=PSEUDONYM_KEY, PREFECT_HOME=str(tmp_path / ".cordwatch" / "prefect"))
    cli = [sys.executable, "-m", "flows.cli", "ui", "--params", str(params_file)]
    proc = subprocess.Popen(cli, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(line.startswith("drift dashboards") for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
        urls = dict(
            re.findall(
                r"^(Prefect UI|MLflow UI|drift dashboards)[^:]*: (http://127\.0\.0\.1:\d+)", "\n".join(lines), re.M
            )
        )
        assert set(urls) == {"Prefect UI", "MLflow UI", "drift dashboards"}, lines
        for name, path in (
            ("Prefect UI", "/api/health"),
            ("MLflow UI", "/health"),
            ("drift dashboards", "/api/version"),
        ):
            with urllib.request.urlopen(urls[name] + path, timeout=10) as resp:
                assert resp.status == 200, name
        sessions = _sessions_of_children(proc.pid)
        started = _in_sessions(sessions)
        assert len(sessions) == 3 and started
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10  # a SIGKILLed process takes a moment to go
    while _in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _in_sessions(sessions), "processes left running after Ctrl-C"
