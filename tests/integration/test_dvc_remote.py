"""DVC on an S3-compatible remote, for real (docs/data-remote.md): moto's S3 server on 127.0.0.1 stands in for
MinIO, Ceph or AWS S3, and two copies of the project play two sites.

Site A is set up as a hospital would: its raw DICOM export (here SYNTHETIC phantoms from `run_synth`) sits in a
git-ignored `export/` folder that `ingest.input_dir` points at, so it is a dependency of the `ingest` stage and never
an output. What goes to the remote is the real pipeline's output on the ci profile: `data/ingested/` (de-identified
PNGs, YOLO labels, images/annotations/manifest parquet tables) and `data/splits.parquet`. Those are made by the
stages' own run functions (`run_ingest`, `run_split`: what `cordwatch ingest` and `cordwatch split` call inside their
Prefect flows) and recorded with `dvc commit ingest split`, which writes `dvc.lock` and fills the cache as `dvc repro`
would. Running the commands through `dvc repro` would start one temporary Prefect server per stage (about 12 s each
on 2 cores); tests/integration/test_dvc.py covers `dvc repro` itself.

Checked: `dvc push` with credentials from `dvc remote modify --local` (never in git) puts exactly the objects
`dvc.lock` names in the bucket, and none of them is DICOM or holds an identifier of the export; a fresh clone (site
B: no cache, no export, credentials from the AWS environment variables) gets identical files from `dvc pull`,
`dvc status -c` reports it in sync, and `dvc repro --allow-missing` re-runs nothing although the raw export is not
there. Nothing tries to leave the machine: every proxy variable points at a listener on loopback that must stay
unused (only the store at 127.0.0.1 is exempt), analytics and the EC2 metadata lookup are off, and ~/.aws is never
read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from monitoring.ui import kill_session
from tests.conftest import REPO
from tests.servers import LOCALHOST, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
BUCKET = "cordwatch-data"
PREFIX = "cordwatch"  # the remote's path inside the bucket
REMOTE = "shared"
REGION = "us-east-1"
DATA_OUTS = ("data/ingested", "data/splits.parquet")  # the cached outs of ingest and split in dvc.yaml
SITE_A_KEY, SITE_A_SECRET = "SITEAKEYTEST", "site-a-secret-never-in-git"
SITE_B_KEY, SITE_B_SECRET = "SITEBKEYTEST", "site-b-secret"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

# The stages' run functions, as their flows call them; the export stands in for a PACS export at the site.
MAKE_OUTPUTS = """
from pathlib import Path
from pipelines.config import load_params
from pipelines.ingest import run_ingest
from pipelines.split.run import run_split
from pipelines.synth.run import run_synth
params = load_params(Path("params.yaml"))
run_synth(params, Path("export"))
run_ingest(params, params.ingest.input_dir, params.paths.ingested_dir, params.ingest.annotations_csv)
run_split(params)
"""


class _Tripwire:
    """A TCP listener on loopback standing in for every proxy: any client that tried to go beyond 127.0.0.1 through
    a proxy-aware stack (botocore, aiohttp, requests, urllib) connects here instead, and is counted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://{LOCALHOST}:{self.sock.getsockname()[1]}"
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _base_env(tmp: Path, tripwire: _Tripwire) -> dict[str, str]:
    """No AWS credentials, config or proxy from the caller; ~/.aws unreadable; every proxy the tripwire."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k.lower() not in PROXY_VARS}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "CORDWATCH_PSEUDONYM_KEY": "dvc-remote-test-key-0123456789",
            "DVC_NO_ANALYTICS": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }
    )
    for name in PROXY_VARS:
        env[name] = env[name.upper()] = f"{LOCALHOST},localhost" if name == "no_proxy" else tripwire.url
    env.pop("YOLO_CONFIG_DIR", None)  # the copy keeps tool state in its own .cordwatch/
    return env


def _sh(cwd: Path, env: dict[str, str], *cmd: str) -> str:
    done = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}")
    return done.stdout + done.stderr


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def moto_s3(workdir: Path, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1:free port, in its own session (killed with it at the end); its URL.
    Skips the test, saying why, when it cannot start."""
    binary = BIN / "moto_server"
    if binary.is_file():
        cmd = [str(binary)]
    else:
        pytest.importorskip("moto.server", reason="moto is not installed")
        cmd = [sys.executable, "-m", "moto.server"]
    port = free_port()
    url = f"http://{LOCALHOST}:{port}"
    log = workdir / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "-H", LOCALHOST, "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _answers(f"{url}/moto-api/"):
            if proc.poll() is not None:
                pytest.skip(f"cannot start moto's S3 server (exit {proc.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.skip(f"cannot start moto's S3 server: no answer in {startup_timeout_s:.0f} s: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        kill_session(proc)


def _copy_repo(dest: Path) -> Path:
    """The repo's tracked and unignored files (a fresh clone plus local edits), minus run state."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for rel in listed:
        src = REPO / rel
        if rel != "dvc.lock" and not rel.startswith("reports/") and src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _files(root: Path, rels: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under each of `rels` (a file or a folder), by path relative to root."""
    found = {}
    for rel in rels:
        top = root / rel
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            found[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _locked_objects(repo: Path) -> set[str]:
    """Remote keys of every object `dvc.lock` names for the data outs: each file, and each folder's manifest with
    the files it lists."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    hashes = set()
    for stage in ("ingest", "split"):
        for out in lock["stages"][stage]["outs"]:
            if out["path"] not in DATA_OUTS:
                continue
            md5 = out["md5"]
            hashes.add(md5)
            if md5.endswith(".dir"):
                manifest = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                hashes |= {entry["md5"] for entry in json.loads(manifest.read_text())}
    return {f"{PREFIX}/files/md5/{h[:2]}/{h[2:]}" for h in hashes}


def test_push_to_s3_remote_and_pull_at_a_second_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:  # this process talks to the server directly (a caller's proxy would not reach it)
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    tripwire = _Tripwire()
    try:
        with moto_s3(tmp_path) as endpoint:
            _two_sites(tmp_path, endpoint, tripwire)
    finally:
        tripwire.close()
    assert tripwire.hits == 0, "a client tried to reach beyond 127.0.0.1 through a proxy"


def _two_sites(tmp_path: Path, endpoint: str, tripwire: _Tripwire) -> None:
    import boto3  # installed with moto

    env_a = _base_env(tmp_path, tripwire)  # site A: credentials only in .dvc/config.local
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="admin"
    )
    s3.create_bucket(Bucket=BUCKET)

    # Site A: the export is git-ignored and is ingest's input.
    site_a = _copy_repo(tmp_path / "site-a")
    params = yaml.safe_load((site_a / "params.yaml").read_text())
    params["profile"] = "ci"
    params["ingest"].update(input_dir="export/dicom", annotations_csv="export/annotations.csv")
    (site_a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with (site_a / ".gitignore").open("a") as handle:
        handle.write("\n# the site's raw DICOM export: never in git, never in DVC's cache or remote\nexport/\n")
    _sh(site_a, env_a, "git", "init", "-q")
    _sh(site_a, env_a, "git", "add", "-A")
    _sh(site_a, env_a, "git", "commit", "-qm", "site A")
    _sh(site_a, env_a, sys.executable, "-c", MAKE_OUTPUTS)
    _sh(site_a, env_a, "dvc", "commit", "-f", "ingest", "split")
    summaries = ["reports/ingest/summary.json", "reports/split/summary.json"]  # metrics: git, not the remote
    _sh(site_a, env_a, "git", "add", "dvc.lock")
    _sh(site_a, env_a, "git", "add", "-f", *summaries)

    # The remote as the recipe sets it: URL and endpoint in .dvc/config (committed), credentials --local.
    _sh(site_a, env_a, "dvc", "remote", "add", "-d", REMOTE, f"s3://{BUCKET}/{PREFIX}")
    _sh(site_a, env_a, "dvc", "remote", "modify", REMOTE, "endpointurl", endpoint)
    _sh(site_a, env_a, "dvc", "remote", "modify", REMOTE, "region", REGION)
    _sh(site_a, env_a, "dvc", "remote", "modify", "--local", REMOTE, "access_key_id", SITE_A_KEY)
    _sh(site_a, env_a, "dvc", "remote", "modify", "--local", REMOTE, "secret_access_key", SITE_A_SECRET)
    _sh(site_a, env_a, "git", "add", ".dvc/config")
    _sh(site_a, env_a, "git", "commit", "-qm", "ingest and split on the ci profile; shared remote")
    committed = _sh(site_a, env_a, "git", "show", "HEAD:.dvc/config")
    assert endpoint in committed and SITE_A_SECRET not in committed and SITE_A_KEY not in committed
    assert SITE_A_SECRET in (site_a / ".dvc" / "config.local").read_text()
    ignored = _sh(site_a, env_a, "git", "check-ignore", ".dvc/config.local", "export/dicom").split()
    assert ignored == [".dvc/config.local", "export/dicom"]

    out = _sh(site_a, env_a, "dvc", "push")  # env_a has no key and hides ~/.aws: "Unable to locate credentials"
    expected = _locked_objects(site_a)
    assert f"{len(expected)} files pushed" in out, out
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
    assert keys == expected  # the data outs, no metric summary, nothing of the export (not even its listing)
    assert len(keys) > 50  # images, labels, tables, manifests

    # What reached the remote carries no DICOM and no identifier of the export (patient IDs, SOP instance UIDs).
    with (site_a / "export" / "cohort.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    identifiers = {row["patient_id"] for row in rows} | {row["sop_instance_uid"] for row in rows}
    assert len(identifiers) > 20
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert body[128:132] != b"DICM", key
        assert not [ident for ident in identifiers if ident.encode() in body], key

    # Site B: a clone (no cache, no data, no export, no config.local), credentials from the AWS environment.
    site_b = tmp_path / "site-b"
    _sh(tmp_path, env_a, "git", "clone", "-q", str(site_a), str(site_b))
    assert not (site_b / "data").exists() and not (site_b / "export").exists()
    assert not (site_b / ".dvc" / "cache").exists() and not (site_b / ".dvc" / "config.local").exists()
    env_b = {**env_a, "AWS_ACCESS_KEY_ID": SITE_B_KEY, "AWS_SECRET_ACCESS_KEY": SITE_B_SECRET}
    # A bare `dvc pull` would exit 1 here: stages that never ran at site A (synth, always, with a real export; here
    # train and evaluate too) have no lock entry. --with-deps pulls the target's outs and those of the stages
    # before it: ingest and split (`--with-deps evaluate` in production, docs/data-remote.md).
    _sh(site_b, env_b, "dvc", "pull", "--with-deps", "split")
    pulled, original = _files(site_b, DATA_OUTS), _files(site_a, DATA_OUTS)
    assert pulled == original
    assert any(rel.endswith(".png") for rel in pulled) and "data/ingested/images.parquet" in pulled
    assert f"Cache and remote '{REMOTE}' are in sync" in _sh(site_b, env_b, "dvc", "status", "-c")

    # Nothing re-runs at site B: the export is missing (as it must be), and --allow-missing accepts that.
    out = _sh(site_b, env_b, "dvc", "repro", "--allow-missing", "split")
    assert "Stage 'ingest' didn't change, skipping" in out and "Stage 'split' didn't change, skipping" in out, out
    assert "Running stage" not in out
    assert _files(site_b, DATA_OUTS) == original
