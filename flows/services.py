"""`cordwatch ui`: the Prefect UI, the MLflow UI and the drift dashboard on loopback, started and stopped together.

Each server runs as a child in its own session (`start_new_session`), so stopping it ends everything it started:
`mlflow ui` leaves its job-queue workers running when only its own process is killed, and Prefect's server starts
its services as children too. `monitoring.ui.kill_session` stops a session: SIGTERM to the group, SIGKILL after a
grace period, then anything left in the session. Telemetry is off for each (Prefect's analytics, MLflow's and
Evidently's usage events), as everywhere in cordwatch.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from monitoring.ui import LOOPBACK, TELEMETRY_OFF, free_port, kill_session

TELEMETRY_ENV = {
    **TELEMETRY_OFF,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}


class ServiceError(RuntimeError):
    """A server that did not come up (the message holds the end of its log)."""


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace_s: float = 10.0) -> None:
        kill_session(self.process, grace_s)


def start_service(
    name: str, cmd: list[str], url: str, health: str, *, env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> Service:
    """Start `cmd` in its own session and wait until GET `url + health` answers 200; ServiceError otherwise."""
    fd, log_name = tempfile.mkstemp(prefix=f"cordwatch-{name}-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env={**os.environ, **TELEMETRY_ENV, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    service = Service(name, url, process, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url + health, timeout=2) as r:
            if r.status == 200:
                return service
        time.sleep(0.5)
    service.stop(grace_s=5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServiceError(f"{name} did not answer at {url}{health} (log {log}):\n{tail}")


def prefect_ui(home: Path) -> Service:
    """`prefect server start` with its database under `home` (PREFECT_HOME: the flows' own history)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]
    return start_service("prefect", cmd, f"http://{LOOPBACK}:{port}", "/api/health", env={"PREFECT_HOME": str(home)})


def mlflow_ui(backend_store_uri: str) -> Service:
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow, "ui", "--backend-store-uri", backend_store_uri, "--host", LOOPBACK, "--port", str(port)]
    return start_service("mlflow", cmd, f"http://{LOOPBACK}:{port}", "/health")
