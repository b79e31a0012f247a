"""The production registry set-up, for real: `mlflow server --app-name cordwatch-auth` on PostgreSQL.

The tests start their own PostgreSQL (Debian's, as an unprivileged user) and `mlflow server` on 127.0.0.1 with a
separate artifact root, users `pipeline` (EDIT on cordwatch-detector) and `reviewer` (MANAGE), and check what
pipelines/register/server_auth.py enforces: only a reviewer moves `champion`, the audit log is append-only,
sign-off tags need a reviewer. Plus the 0600 credentials file and a headless-Chromium smoke test of the UI.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from pipelines.register.credentials import CredentialsError, use_credentials
from tests.servers import MlflowServer, PostgreSQL, browse, mlflow_server, postgresql

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "cordwatch-detector"
WEIGHTS = "tiny detector weights (test artifact)\n"


@pytest.fixture(scope="module")
def pg() -> PostgreSQL:
    with postgresql() as server:
        yield server


@pytest.fixture(scope="module")
def registry(pg: PostgreSQL, tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    """cordwatch-auth on PostgreSQL (tracking and auth in two databases), two workers, artifacts proxied."""
    tracking, auth = pg.create_database("cordwatch_tracking"), pg.create_database("cordwatch_auth")
    workdir = tmp_path_factory.mktemp("registry")
    with mlflow_server(
        workdir, tracking, auth=True, auth_database_uri=auth, registered_models=[MODEL], workers=2
    ) as server:
        yield server


@pytest.fixture(scope="module")
def versions(registry: MlflowServer) -> list[str]:
    """The pipeline logs a run with a tiny artifact and registers it twice (versions 1 and 2)."""
    with registry.client(registry.pipeline) as client:
        experiment = client.create_experiment("cordwatch-registry-it")
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, WEIGHTS, "model/weights.txt")
        client.set_terminated(run.info.run_id)
        source = f"runs:/{run.info.run_id}/model"
        return [client.create_model_version(MODEL, source, run_id=run.info.run_id).version for _ in range(2)]


def _refused(exc: pytest.ExceptionInfo[MlflowException], *words: str) -> None:
    """A 403 as MlflowClient surfaces it: PERMISSION_DENIED, and the reason in its message."""
    assert exc.value.error_code == "PERMISSION_DENIED", exc.value
    assert exc.value.get_http_status_code() == 403
    for word in words:
        assert word in exc.value.message, exc.value.message


def test_pipeline_registers_and_moves_challenger_and_approved_candidate(registry, versions) -> None:
    v1, v2 = versions
    with registry.client(registry.pipeline) as client:
        client.set_registered_model_alias(MODEL, "challenger", v2)
        client.set_registered_model_alias(MODEL, "approved-candidate", v1)
        assert client.get_model_version_by_alias(MODEL, "challenger").version == v2
        assert client.get_model_version_by_alias(MODEL, "approved-candidate").version == v1
        client.set_registered_model_alias(MODEL, "approved-candidate", v2)  # moved again: EDIT suffices
        assert client.get_model_version_by_alias(MODEL, "approved-candidate").version == v2


def test_only_the_reviewer_moves_champion(registry, versions) -> None:
    v1, v2 = versions
    with registry.client(registry.reviewer) as client:
        client.set_registered_model_alias(MODEL, "champion", v1)
        assert client.get_model_version_by_alias(MODEL, "champion").version == v1

    with registry.client(registry.pipeline) as client:
        for alias in ("champion", "Champion"):
            with pytest.raises(MlflowException) as exc:
                client.set_registered_model_alias(MODEL, alias, v2)
            _refused(exc, "protected alias", "MANAGE")
        with pytest.raises(MlflowException) as exc:
            client.delete_registered_model_alias(MODEL, "champion")
        _refused(exc)  # MLflow's own rule already: deleting any alias needs delete (MANAGE)
        with pytest.raises(MlflowException) as exc:  # renaming would take champion along with the name
            client.rename_registered_model(MODEL, f"{MODEL}-renamed")
        _refused(exc, "renaming")
        assert client.get_model_version_by_alias(MODEL, "champion").version == v1

    # The UI's route prefix is guarded too.
    for verb, extra in (("post", {"version": v2}), ("delete", {})):
        resp = getattr(requests, verb)(
            f"{registry.uri}/ajax-api/2.0/mlflow/registered-models/alias",
            json={"name": MODEL, "alias": "champion", **extra},
            auth=(registry.pipeline.username, registry.pipeline.password),
            timeout=30,
        )
        assert resp.status_code == 403, resp.text
    resp = requests.post(
        f"{registry.uri}/ajax-api/2.0/mlflow/registered-models/alias",
        json={"name": MODEL, "alias": "champion", "version": v2},
        auth=(registry.pipeline.username, registry.pipeline.password),
        timeout=30,
    )
    assert resp.json()["error_code"] == "PERMISSION_DENIED" and "champion" in resp.json()["message"]

    with registry.client(registry.reviewer) as client:
        client.set_registered_model_alias(MODEL, "champion", v2)
        assert client.get_model_version_by_alias(MODEL, "champion").version == v2
        assert client.get_registered_model(MODEL).aliases["champion"] == v2


def test_audit_tags_are_append_only(registry, versions) -> None:
    with registry.client(registry.pipeline) as client:
        client.set_registered_model_tag(MODEL, "cordwatch.audit.000001", '{"by": "pipeline"}')
        client.set_registered_model_tag(MODEL, "cordwatch.note", "first")  # ordinary tags stay editable
        client.set_registered_model_tag(MODEL, "cordwatch.note", "second")
        client.delete_registered_model_tag(MODEL, "cordwatch.note")
    with registry.client(registry.reviewer) as client:
        client.set_registered_model_tag(MODEL, "cordwatch.audit.000002", '{"by": "reviewer"}')

    for who in (registry.pipeline, registry.reviewer, registry.admin):
        with registry.client(who) as client:
            with pytest.raises(MlflowException) as exc:
                client.set_registered_model_tag(MODEL, "cordwatch.audit.000001", '{"by": "forger"}')
            _refused(exc, "append-only")
            with pytest.raises(MlflowException) as exc:
                client.delete_registered_model_tag(MODEL, "cordwatch.audit.000002")
            _refused(exc, "append-only")

    with registry.client(registry.admin) as client:
        tags = client.get_registered_model(MODEL).tags
        assert tags["cordwatch.audit.000001"] == '{"by": "pipeline"}'
        assert tags["cordwatch.audit.000002"] == '{"by": "reviewer"}'
        assert "cordwatch.note" not in tags
        # Deleting the registered model would drop the log with it: refused, even to the admin.
        client.create_registered_model("cordwatch-audit-scratch", tags={"cordwatch.audit.000001": "{}"})
        with pytest.raises(MlflowException) as exc:
            client.delete_registered_model("cordwatch-audit-scratch")
        _refused(exc, "audit log")
        assert client.get_registered_model("cordwatch-audit-scratch").name == "cordwatch-audit-scratch"


def test_signoff_tags_need_the_reviewer(registry, versions) -> None:
    v1, _ = versions
    with registry.client(registry.pipeline) as client:
        with pytest.raises(MlflowException) as exc:
            client.set_model_version_tag(MODEL, v1, "cordwatch.signoff.approve_by", "pipeline")
        _refused(exc, "sign-off", "MANAGE")
        mv = client.get_model_version(MODEL, v1)
        with pytest.raises(MlflowException) as exc:  # nor smuggled in with a new version
            client.create_model_version(MODEL, mv.source, mv.run_id, tags={"cordwatch.signoff.approve_by": "x"})
        _refused(exc, "sign-off")
        client.set_model_version_tag(MODEL, v1, "cordwatch.gates", "pass")  # other version tags: EDIT suffices

    with registry.client(registry.reviewer) as client:
        client.set_model_version_tag(MODEL, v1, "cordwatch.signoff.approve_by", "dr.reviewer")
        client.set_model_version_tag(MODEL, v1, "cordwatch.signoff.approve_note", "read 40 cases")

    with registry.client(registry.pipeline) as client:
        with pytest.raises(MlflowException) as exc:
            client.delete_model_version_tag(MODEL, v1, "cordwatch.signoff.approve_note")
        _refused(exc)
        tags = client.get_model_version(MODEL, v1).tags
        assert tags["cordwatch.signoff.approve_by"] == "dr.reviewer"
        assert tags["cordwatch.signoff.approve_note"] == "read 40 cases"
        assert len(client.search_model_versions(f"name='{MODEL}'")) == len(versions)  # no version was created

    with registry.client(registry.reviewer) as client:
        client.delete_model_version_tag(MODEL, v1, "cordwatch.signoff.approve_note")
        assert "cordwatch.signoff.approve_note" not in client.get_model_version(MODEL, v1).tags


def test_unauthenticated_requests_are_refused(registry, versions) -> None:
    for auth in (None, (registry.pipeline.username, "not-the-password")):
        for method, path, body in (
            ("get", "/api/2.0/mlflow/registered-models/get", {"name": MODEL}),
            ("post", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL, "alias": "champion", "version": "1"}),
            ("post", "/ajax-api/2.0/mlflow/registered-models/set-tag", {"name": MODEL, "key": "k", "value": "v"}),
        ):
            kwargs = {"params": body} if method == "get" else {"json": body}
            resp = getattr(requests, method)(f"{registry.uri}{path}", auth=auth, timeout=30, **kwargs)
            assert resp.status_code == 401, (auth, path, resp.status_code, resp.text)
    with registry.client(None) as client, pytest.raises(MlflowException) as exc:
        client.get_model_version_by_alias(MODEL, "champion")
    assert "401" in str(exc.value)


def test_backend_is_postgresql_and_artifacts_land_in_the_artifact_root(registry, versions, pg, tmp_path) -> None:
    assert registry.backend_store_uri == pg.uri("cordwatch_tracking")
    assert registry.backend_store_uri.startswith("postgresql+psycopg2://")
    conn = pg.connect("cordwatch_tracking")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM model_versions WHERE name = %s ORDER BY version", (MODEL,))
            assert [str(row[0]) for row in cur.fetchall()] == versions
            cur.execute("SELECT alias FROM registered_model_aliases WHERE name = %s", (MODEL,))
            assert {"challenger", "approved-candidate", "champion"} <= {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    conn = pg.connect("cordwatch_auth")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT username FROM users ORDER BY username")
            assert [row[0] for row in cur.fetchall()] == ["admin", "pipeline", "reviewer"]
    finally:
        conn.close()

    stored = list(registry.artifact_root.rglob("weights.txt"))
    assert len(stored) == 1 and stored[0].read_text() == WEIGHTS
    assert not list(registry.log.parent.glob("mlruns"))  # nothing fell back to a local ./mlruns
    with registry.client(registry.reviewer) as client:  # the server serves them back from its artifact root
        run_id = client.get_model_version(MODEL, versions[0]).run_id
        assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
        local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path))
        assert Path(local, "weights.txt").read_text() == WEIGHTS


def test_credentials_file_must_be_0600(registry, versions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "CORDWATCH_MLFLOW_CREDENTIALS"):
        monkeypatch.delenv(key, raising=False)
    secret = tmp_path / "mlflow-credentials.ini"
    secret.write_text(f"[mlflow]\nusername = {registry.pipeline.username}\npassword = {registry.pipeline.password}\n")

    os.chmod(secret, 0o644)
    with pytest.raises(CredentialsError, match=r"mode 0644.*chmod 600"):
        use_credentials(secret)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ

    os.chmod(secret, 0o600)
    monkeypatch.setenv("CORDWATCH_MLFLOW_CREDENTIALS", str(secret))
    creds = use_credentials()
    assert creds is not None and creds.username == "pipeline" and creds.source == str(secret)
    assert registry.pipeline.password not in repr(creds)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.uri)  # authenticates with what use_credentials put in the env
    assert client.get_model_version_by_alias(MODEL, "champion").version in versions
    with pytest.raises(MlflowException) as exc:
        client.set_registered_model_alias(MODEL, "champion", versions[0])
    _refused(exc, "user 'pipeline'")

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")  # the environment wins, both or neither
    with pytest.raises(CredentialsError, match="go together"):
        use_credentials(secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "from-env")
    assert use_credentials(secret).source == "environment"


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    with mlflow_server(tmp_path_factory.mktemp("plain")) as server:
        yield server


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_chromium_renders_the_mlflow_ui(plain_server: MlflowServer, tmp_path: Path) -> None:
    with plain_server.client() as client:
        experiment = client.create_experiment("cordwatch-ui-smoke")
    shot = tmp_path / "experiment.png"
    dom = browse(f"{plain_server.uri}/#/experiments/{experiment}", screenshot=shot)
    assert "cordwatch-ui-smoke" in dom and "Experiments" in dom, dom[:2000]
    data = shot.read_bytes()
    assert _png_size(data) == (1400, 1000)
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(data) > 20_000 and colours is not None and len(colours) > 50  # a rendered page, not a blank one
