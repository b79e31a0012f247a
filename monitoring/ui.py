"""The Evidently UI over the monitoring workspace, on loopback, for `cordwatch dashboard`.

`serve_dashboard(workspace)` starts `python -m evidently.cli ui` (the `evidently ui` command) as a child in its own
session, with Evidently's usage telemetry off (it is on by default and posts an event per API call: see
docs/dev-notes/evidently-0.7.md, section 6), waits until `/api/version` answers, and gives a `DashboardServer`:
`.url`, `.site_urls(first=site)` ("site X: URL" lines, a site lead's own site first) and `.stop()`, which ends the
UI's whole process group. Used as a context manager it stops on exit, Ctrl-C included:

    with serve_dashboard(workspace) as server:
        for site, url in server.site_urls(first="north"):
            print(f"site {site}: {url}")
        server.wait()  # until Ctrl-C

The UI has no login: anyone who can reach its port reads every site's dashboard, hence loopback by default.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from monitoring.dashboard import ALL_SITES, project_name

LOOPBACK = "127.0.0.1"
# Both switches, each verified to stop every event (the lowercase nested key is what Evidently's config reads; the
# uppercase one makes the UI refuse to start). EVIDENTLY_DISABLE_TELEMETRY is read by nothing in 0.7.
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "EVIDENTLY_TELEMETRY__enabled": "false"}
PROJECT_PREFIX = project_name("")


class DashboardError(RuntimeError):
    """The UI could not be started, or does not have what was asked of it; the message says why."""


def project_url(base_url: str, project_id: str) -> str:
    """The UI page of one project: its dashboard tab (the UI's route `/projects/:projectId`)."""
    return f"{base_url.rstrip('/')}/projects/{project_id}"


def site_of(name: str) -> str | None:
    """The site a cordwatch project is for (ALL_SITES included); None for a project cordwatch did not make."""
    return name[len(PROJECT_PREFIX) :] if name.startswith(PROJECT_PREFIX) else None


def site_urls(base_url: str, *, first: str | None = None, timeout_s: float = 10.0) -> list[tuple[str, str]]:
    """(site, URL) of each cordwatch project the running UI at `base_url` serves: `first` (a site lead's own) at
    the top, then the other sites by name, then ALL_SITES. Raises DashboardError if `first` has no project."""
    projects = _get_json(f"{base_url.rstrip('/')}/api/projects", timeout_s)
    by_site = {site: str(p["id"]) for p in projects if (site := site_of(str(p.get("name", "")))) is not None}
    if first is not None and first not in by_site:
        known = ", ".join(sorted(by_site)) or "none yet"
        raise DashboardError(f"no dashboard for site {first!r} (sites with one: {known})")
    order = sorted(by_site, key=lambda s: (s != first, s == ALL_SITES, s))
    return [(site, project_url(base_url, by_site[site])) for site in order]


@dataclass
class DashboardServer:
    """A running Evidently UI started by `serve_dashboard`; `stop()` (or leaving the `with`) ends it."""

    url: str
    workspace: Path
    log: Path
    process: subprocess.Popen = field(repr=False)
    _own_log: bool = field(default=False, repr=False)

    def site_urls(self, *, first: str | None = None) -> list[tuple[str, str]]:
        """See the module-level `site_urls`."""
        return site_urls(self.url, first=first)

    def site_url(self, site: str) -> str:
        """The dashboard URL of `site`'s project (or ALL_SITES); DashboardError if it has none."""
        return self.site_urls(first=site)[0][1]

    def wait(self) -> int:
        """Block until the UI exits (the CLI: until Ctrl-C); its exit status.

        While waiting in the main thread, SIGTERM and SIGHUP (a service stopped, a terminal closed) raise SystemExit
        as Ctrl-C raises KeyboardInterrupt, so a `with` block still stops the UI: by default they would end this
        process at once and leave the UI, in its own session, running.
        """
        if threading.current_thread() is not threading.main_thread():
            return self.process.wait()
        previous = {sig: signal.signal(sig, exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return self.process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the UI and everything in its session: SIGTERM to the group, SIGKILL after `grace_s`."""
        kill_session(self.process, grace_s)
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_dashboard(
    workspace: Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    startup_timeout_s: float = 60.0,
    log: Path | None = None,
) -> DashboardServer:
    """Start the Evidently UI over `workspace` on host:port (a free port when None) and wait until it answers.

    The UI's output goes to `log` (default: a temporary file, removed at stop; never inside the workspace, whose
    changes the UI watches). Raises DashboardError, with the log's last lines, if the workspace is missing, the
    port is taken, or the UI exits or does not answer within `startup_timeout_s` (it is stopped then).
    """
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise DashboardError(f"no Evidently workspace at {workspace}: run the monitoring first")
    port = free_port(host) if port is None else _check_port(host, port)
    url = f"http://{_url_host(host)}:{port}"
    own_log = log is None
    if log is None:
        fd, name = tempfile.mkstemp(prefix="cordwatch-evidently-ui-", suffix=".log")
        os.close(fd)
        log = Path(name)
    env = {k: v for k, v in os.environ.items() if k.lower() != "evidently_telemetry__enabled"}
    env.update(TELEMETRY_OFF)
    cmd = [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace), "--host", host,
           "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env=env, cwd=workspace, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = DashboardServer(url, workspace, log, process, own_log)
    try:
        _wait_ready(server, startup_timeout_s)
    except BaseException:
        kill_session(process, grace_s=5.0)  # the log stays: the error names it
        raise
    return server


def _wait_ready(server: DashboardServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise DashboardError(
                f"the Evidently UI exited with status {server.process.returncode} before answering "
                f"(log {server.log}):\n{_tail(server.log)}"
            )
        with contextlib.suppress(DashboardError):
            answer = _get_json(f"{server.url}/api/version", 2.0)
            if isinstance(answer, dict) and answer.get("application") == "Evidently UI":
                return
        time.sleep(0.25)
    raise DashboardError(
        f"the Evidently UI did not answer at {server.url} within {timeout_s:g} s (log {server.log}):\n"
        f"{_tail(server.log)}"
    )


def _get_json(url: str, timeout_s: float) -> Any:  # a dict or a list
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DashboardError(f"GET {url} failed: {exc}") from exc


def free_port(host: str = LOOPBACK) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int) -> int:
    """`port`, if it can be bound on `host` now: a clear error instead of the UI's bind failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DashboardError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from exc
    return port


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # every interface: loopback reaches it from here
        return LOOPBACK
    return f"[{host}]" if ":" in host else host


def exit_on_signal(signum: int, frame: object) -> None:
    """A signal handler that exits through SystemExit, so `with` blocks and `finally` clauses stop children."""
    raise SystemExit(128 + signum)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def kill_session(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group started with start_new_session=True, SIGKILL after `grace_s`, then any
    process left in that session (a child that made its own group)."""
    sid = process.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(sid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    proc_dir = Path("/proc")
    for entry in proc_dir.iterdir() if proc_dir.is_dir() else ():
        if entry.name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)
