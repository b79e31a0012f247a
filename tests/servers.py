"""Real servers for integration tests, started by the tests themselves on 127.0.0.1 and cleaned up afterwards.

- `postgresql()`: a throwaway PostgreSQL cluster (Debian's binaries, installed with apt when root and absent) run
  as an unprivileged user; `PostgreSQL.create_database(name)` gives a SQLAlchemy URI.
- `mlflow_server(...)`: `mlflow server` on a backend URI with a separate artifact root, plain or with
  `--app-name cordwatch-auth` (admin, `pipeline` and `reviewer` users with random passwords).
- `browse(url, ...)`: headless Chromium (Debian's `chromium`), returns the rendered DOM, optionally a screenshot.
- `orthanc(workdir)`: Debian's Orthanc with its DICOMweb plugin (installed with apt when root and absent), basic
  auth with a generated user; `.url` is the REST root, `.dicomweb` the DICOMweb root for QIDO/WADO/STOW-RS.

What cannot be started is skipped with a plain reason (`pytest.skip("cannot start PostgreSQL: ...")`), never
faked. Every process is started in its own session and its whole process group is killed at the end (mlflow's
uvicorn workers included).
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitoring.ui import kill_session  # one way to stop a server's whole session, product and tests

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LOCALHOST = "127.0.0.1"
APT_TIMEOUT_S = 600
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def apt_install(package: str) -> str | None:
    """`apt-get install -y PACKAGE` when running as root; None on success, else the reason it cannot."""
    if os.geteuid() != 0:
        return f"{package} is not installed and this user is not root (apt-get install -y {package})"
    if shutil.which("apt-get") is None:
        return f"{package} is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    for cmd in (["apt-get", *lock, "update"], ["apt-get", *lock, "install", "-y", "--no-install-recommends", package]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` did not finish within {APT_TIMEOUT_S} s"
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


# --------------------------------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgreSQL:
    """A running throwaway cluster; `user` is its superuser (password auth over TCP on 127.0.0.1 only)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    data_dir: Path

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # -> psycopg2 connection
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname=database)

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its SQLAlchemy URI."""
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)


def find_postgres_bin() -> Path | None:
    """Folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in versions:
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    """`cmd` run as `user` (PostgreSQL refuses to run as root)."""
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]


def _unprivileged_user() -> str | None:
    """None when not root; else `postgres` (created by Debian's package) or `nobody`."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("cannot start PostgreSQL: running as root and there is no unprivileged user (postgres, nobody)")


@contextmanager
def postgresql() -> Iterator[PostgreSQL]:
    """A throwaway PostgreSQL cluster on 127.0.0.1:free port; skips the test plainly if none can start."""
    bindir = find_postgres_bin()
    if bindir is None:
        reason = apt_install("postgresql")
        bindir = find_postgres_bin()
        if bindir is None:
            pytest.skip(f"cannot start PostgreSQL: initdb/pg_ctl not found ({reason or 'not in the package'})")
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="cordwatch-pg-"))  # under /tmp: the unprivileged user must reach it
    data, pwfile, log = root / "data", root / "pwfile", root / "postgres.log"
    password = secrets.token_urlsafe(24)
    pwfile.write_text(password + "\n")
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        for path in (root, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(pwfile, 0o600)
    port = free_port()
    superuser = "cordwatch"
    started = False
    try:
        initdb = _as_user(
            user,
            [str(bindir / "initdb"), "-D", str(data), "-U", superuser, f"--pwfile={pwfile}", "-E", "UTF8",
             "--no-locale", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256"],
        )  # fmt: skip
        done = subprocess.run(initdb, capture_output=True, text=True, timeout=120, check=False, cwd=root)
        if done.returncode != 0:
            pytest.skip(f"cannot start PostgreSQL: initdb failed: {(done.stderr or done.stdout).strip()[-800:]}")
        options = f"-c listen_addresses={LOCALHOST} -p {port} -c unix_socket_directories={root} -c fsync=off"
        start = _as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                "-o", options, "start"])  # fmt: skip
        done = subprocess.run(start, capture_output=True, text=True, timeout=90, check=False, cwd=root)
        if done.returncode != 0:
            pytest.skip(f"cannot start PostgreSQL: pg_ctl start failed: {done.stdout.strip()[-300:]} {_tail(log, 800)}")
        started = True
        yield PostgreSQL(host=LOCALHOST, port=port, user=superuser, password=password, data_dir=data)
    finally:
        if started:
            stop = _as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            subprocess.run(stop, capture_output=True, timeout=60, check=False, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- mlflow server


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass
class MlflowServer:
    """A running `mlflow server`. With auth, `admin`, `pipeline` and `reviewer` hold the users' credentials."""

    uri: str
    backend_store_uri: str
    artifact_root: Path
    log: Path
    process: subprocess.Popen
    admin: Credentials | None = None
    pipeline: Credentials | None = None
    reviewer: Credentials | None = None

    @contextmanager
    def client(self, who: Credentials | None = None) -> Iterator:  # -> Iterator[MlflowClient]
        """An MlflowClient for this server acting as `who` (None: no credentials at all).

        MlflowClient reads MLFLOW_TRACKING_USERNAME/PASSWORD from the environment at every request, so they are
        set for the duration of the block (MLFLOW_TRACKING_URI too, for fluent calls) and restored afterwards.
        """
        from mlflow import MlflowClient

        values = {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": who.username if who else None,
            "MLFLOW_TRACKING_PASSWORD": who.password if who else None,
        }
        with environ(values):
            yield MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)  # not a registry set earlier


@contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (str) or unset (None) environment variables for the block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_auth_ini(
    path: Path, *, database_uri: str, admin: Credentials, default_permission: str = "READ", cache_ttl_s: int = 0
) -> Path:
    """The basic-auth ini (mode 0600: it holds the bootstrap admin password; no default password anywhere).

    cache_ttl_s > 0: each worker caches a verified (user, password) that long; without it every request pays
    several scrypt checks (about 0.5 s a request on 2 cores).
    """
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": default_permission,
        "database_uri": database_uri,
        "admin_username": admin.username,
        "admin_password": admin.password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": str(cache_ttl_s),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        config.write(handle)
    os.chmod(path, 0o600)
    return path


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer /health within {timeout_s:.0f} s:\n{_tail(log)}")


@contextmanager
def mlflow_server(
    workdir: Path,
    backend_store_uri: str | None = None,
    *,
    auth: bool = False,
    auth_database_uri: str | None = None,
    registered_models: Sequence[str] = (),
    workers: int = 1,
    auth_cache_ttl_s: int = 60,
    extra_env: dict[str, str] | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1:free port, artifacts proxied into `workdir/artifacts` (a separate root).

    backend_store_uri: default SQLite in workdir. auth: `--app-name cordwatch-auth`, the auth ini written with
    mode 0600 (auth_database_uri, default SQLite in workdir; random admin password), users `pipeline` and
    `reviewer` created with random passwords. Permissions: the ini's default_permission is READ, so every
    signed-in user can read experiments and models (reviewers must see the evidence) and writes need a grant.
    Each of `registered_models` is created by the admin (a non-admin creator would be granted MANAGE on it
    automatically), then granted to `pipeline` with EDIT and to `reviewer` with MANAGE. auth_cache_ttl_s: see
    `write_auth_ini` (on by default here: the users never change while the server runs).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    artifact_root = workdir / "artifacts"
    artifact_root.mkdir(exist_ok=True)
    backend_store_uri = backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    port = free_port()
    uri = f"http://{LOCALHOST}:{port}"
    log = workdir / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    env.update(QUIET_ENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-queue consumer processes for these tests
    admin = None
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", LOCALHOST, "--port", str(port),
           "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifact_root),
           "--workers", str(workers)]  # fmt: skip
    if auth:
        admin = Credentials("admin", secrets.token_urlsafe(18))
        ini = write_auth_ini(
            workdir / "auth.ini",
            database_uri=auth_database_uri or f"sqlite:///{workdir / 'auth.db'}",
            admin=admin,
            cache_ttl_s=auth_cache_ttl_s,
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        cmd += ["--app-name", "cordwatch-auth"]
    env.update(extra_env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        _wait_healthy(uri, proc, log, startup_timeout_s)
        server = MlflowServer(uri, backend_store_uri, artifact_root, log, proc, admin=admin)
        if auth:
            _provision_users(server, registered_models)
        yield server
    finally:
        kill_session(proc)


def _provision_users(server: MlflowServer, registered_models: Sequence[str]) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    server.pipeline = Credentials("pipeline", secrets.token_urlsafe(18))
    server.reviewer = Credentials("reviewer", secrets.token_urlsafe(18))
    with server.client(server.admin) as admin_client:
        users = AuthServiceClient(server.uri)
        for user in (server.pipeline, server.reviewer):
            users.create_user(user.username, user.password)
        for name in registered_models:
            admin_client.create_registered_model(name)
            users.grant_user_permission(server.pipeline.username, "registered_model", name, "EDIT")
            users.grant_user_permission(server.reviewer.username, "registered_model", name, "MANAGE")


# --------------------------------------------------------------------------------------------------- Chromium


def find_chromium() -> str:
    """Path of Debian's chromium, installed with apt when root and absent; skips the test plainly otherwise."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    reason = apt_install("chromium")
    if path := shutil.which("chromium"):
        return path
    pytest.skip(f"cannot run headless Chromium: {reason or 'chromium not found after installing it'}")


def _refuse_downloads(url: str) -> None:
    """Fail fast on a URL served as a download: headless Chromium saves it instead of rendering, and hangs."""
    if not url.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            disposition = resp.headers.get("Content-Disposition", "")
    except (urllib.error.URLError, OSError):
        return  # an error page is Chromium's to render
    if disposition.strip().lower().startswith("attachment"):
        raise RuntimeError(
            f"{url} is served as a download ({disposition}): Chromium would save it, not render it. "
            "Fetch it and browse the local copy (file://...) instead."
        )


def browse(
    url: str,
    *,
    screenshot: Path | None = None,
    virtual_time_budget_ms: int = 15000,
    window: tuple[int, int] = (1400, 1000),
    timeout_s: float = 120.0,
) -> str:
    """Open `url` in headless Chromium, return the DOM after the page's scripts ran; optionally a PNG screenshot.

    Background networking, component updates, sync and QUIC are off: on a closed network Chromium's own
    connections are refused and would stall the page. Reduced motion is on: charts animated in real time (the
    Evidently UI's) would be screenshotted half-drawn. Each call uses a new, temporary profile. A URL served as a
    download (`Content-Disposition: attachment`, e.g. MLflow's get-artifact) is refused at once: Chromium would
    hang on it until timeout_s.
    """
    chromium = find_chromium()
    _refuse_downloads(url)

    def run(*mode: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="cordwatch-chromium-") as profile:
            cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-dev-shm-usage", "--disable-breakpad", "--force-prefers-reduced-motion",
                   f"--user-data-dir={profile}", f"--virtual-time-budget={virtual_time_budget_ms}", *mode,
                   url]  # fmt: skip
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
            )
            try:
                out, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                kill_session(proc, grace_s=2)
                raise RuntimeError(f"chromium did not finish {url} within {timeout_s:.0f} s") from None
            kill_session(proc, grace_s=2)  # helpers (zygote, GPU process) that outlive the browser
            return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    dom = run("--dump-dom")
    if dom.returncode != 0 or not dom.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom {url} failed ({dom.returncode}): {dom.stderr[-1500:]}")
    if screenshot is not None:
        shot = run(f"--screenshot={screenshot}", f"--window-size={window[0]},{window[1]}", "--hide-scrollbars")
        if shot.returncode != 0 or not screenshot.exists():
            raise RuntimeError(f"chromium --screenshot {url} failed ({shot.returncode}): {shot.stderr[-1500:]}")
    return dom.stdout


# --------------------------------------------------------------------------------------------------- Orthanc

ORTHANC_PACKAGES = ("orthanc", "orthanc-dicomweb")
ORTHANC_DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    """A running Orthanc with its DICOMweb plugin; every request needs basic auth as `user`.

    `url` is the REST root (`/system`, `/studies`, ...), `dicomweb` the DICOMweb root (QIDO-RS, WADO-RS, STOW-RS).
    """

    url: str
    dicomweb: str
    user: Credentials
    log: Path
    process: subprocess.Popen


def find_orthanc() -> tuple[str | None, Path | None]:
    """The Orthanc binary and the DICOMweb plugin (.so), either None where absent."""
    binary = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).exists()), None)
    plugin = None
    try:  # Debian's package owns the plugin; ask dpkg rather than guess its folder
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=30)
        candidates = [Path(p) for p in listed.stdout.split() if p.endswith(".so") or ".so." in p]
        plugin = next((p for p in candidates if p.name == ORTHANC_DICOMWEB_PLUGIN and p.exists()), None)
        plugin = plugin or next((p for p in candidates if p.exists()), None)
    except (OSError, subprocess.SubprocessError):
        pass
    if plugin is None:
        found = glob.glob(f"/usr/share/orthanc/plugins/{ORTHANC_DICOMWEB_PLUGIN}") + glob.glob(
            "/usr/lib/orthanc/libOrthancDicomWeb.so*"
        )
        plugin = Path(found[0]) if found else None
    return binary, plugin


def _wait_orthanc(url: str, user: Credentials, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until `/system` answers 200 with the credentials (and the DICOMweb plugin is loaded)."""
    import base64

    token = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
    plugin_info = urllib.request.Request(f"{url}/plugins/dicom-web", headers={"Authorization": f"Basic {token}"})
    system = urllib.request.Request(f"{url}/system", headers={"Authorization": f"Basic {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(system, timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    else:
        raise RuntimeError(f"Orthanc did not answer /system within {timeout_s:.0f} s:\n{_tail(log)}")
    try:
        with urllib.request.urlopen(plugin_info, timeout=5) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"Orthanc runs but its DICOMweb plugin is not loaded ({exc}):\n{_tail(log)}") from exc


@contextmanager
def orthanc(workdir: Path, *, startup_timeout_s: float = 60.0) -> Iterator[Orthanc]:
    """Orthanc (Debian's, installed with apt when root and absent) with DICOMweb on 127.0.0.1:free port.

    A throwaway JSON config in `workdir` (mode 0600): storage and index in workdir, DICOM (DIMSE) server off,
    remote access off, basic auth on with a generated user, the DICOMweb plugin at `/dicom-web/`. Finds are not
    capped (LimitFindResults 0: with a cap, Orthanc 1.10's QIDO-RS pages come back short and cannot be paged).
    Skips the test plainly if Orthanc cannot start.
    """
    binary, plugin = find_orthanc()
    if binary is None or plugin is None:
        reasons = [r for r in (apt_install(package) for package in ORTHANC_PACKAGES) if r]
        binary, plugin = find_orthanc()
        if binary is None or plugin is None:
            missing = "Orthanc" if binary is None else "the DICOMweb plugin"
            pytest.skip(f"cannot start Orthanc: {missing} not found ({'; '.join(reasons) or 'not in the package'})")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = Credentials("cordwatch", secrets.token_urlsafe(18))
    config = {
        "Name": "cordwatch-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # 127.0.0.1 only (Orthanc 1.10 listens on every interface)
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user.username: user.password},
        "DicomServerEnabled": False,
        "DicomPort": free_port(),  # unused while the DICOM server is off, but never Debian's 4242
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 1,
        "StableAge": 1,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "SaveJobs": False,
        "SyncStorageArea": False,  # no fsync per instance: a test server
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }
    config_path = workdir / "orthanc.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the generated password
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
    log = workdir / "orthanc.log"
    url = f"http://{LOCALHOST}:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, str(config_path)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    try:
        try:
            _wait_orthanc(url, user, proc, log, startup_timeout_s)
        except RuntimeError as exc:
            pytest.skip(f"cannot start Orthanc: {exc}")
        yield Orthanc(url=url, dicomweb=f"{url}/dicom-web", user=user, log=log, process=proc)
    finally:
        kill_session(proc)
