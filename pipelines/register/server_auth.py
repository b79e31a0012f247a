"""`mlflow server --app-name cordwatch-auth`: MLflow's basic-auth app plus cordwatch's registry rules.

Why this exists: MLflow's basic-auth permissions (READ, USE, EDIT, MANAGE) are per registered model and cannot
tell aliases apart. EDIT, which the pipeline needs to register versions and move `challenger` and
`approved-candidate`, would also let it move `champion`, the version hospitals deploy, without a human. This app
is MLflow's own basic-auth app (authentication, users, grants, every MLflow check) with one Flask `before_request`
hook registered after basic-auth's, so it only sees requests basic-auth has already authenticated and allowed
(admins included: basic-auth lets them through, these rules still apply to them where stated):

1. Setting or deleting a protected alias (env `CORDWATCH_PROTECTED_ALIASES`, comma-separated; default `champion`)
   needs MANAGE on the registered model, or admin. EDIT still sets any other alias.
2. Registered-model tags `cordwatch.audit.*` are an append-only log: set only when absent, never deleted (admin
   included); a registered model carrying one cannot be deleted (the delete would drop the log).
3. Model-version tags `cordwatch.signoff.*` (who approved, when, why) need MANAGE or admin to set or delete, also
   when sent with a new version (`CreateModelVersion` tags).

Renaming a registered model needs MANAGE too: with EDIT the pipeline could rename the production model away and
rename one it manages (it created it) into its place, champion alias and all. Routes come from MLflow's own route
table (`mlflow.server.handlers.get_endpoints`), so `/api/2.0/...` and `/ajax-api/2.0/...` are both covered.
What is not covered is listed in docs/registry-server.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI
from flask import Flask, Response, g, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.protos.model_registry_pb2 import (
    CreateModelVersion,
    DeleteModelVersionTag,
    DeleteRegisteredModel,
    DeleteRegisteredModelAlias,
    DeleteRegisteredModelTag,
    RenameRegisteredModel,
    SetModelVersionTag,
    SetRegisteredModelAlias,
    SetRegisteredModelTag,
)
from mlflow.server import app as mlflow_flask_app
from mlflow.server import auth as basic_auth
from mlflow.server.handlers import catch_mlflow_exception, get_endpoints

PROTECTED_ALIASES_ENV = "CORDWATCH_PROTECTED_ALIASES"
DEFAULT_PROTECTED_ALIASES = frozenset({"champion"})
AUDIT_TAG_PREFIX = "cordwatch.audit."
SIGNOFF_TAG_PREFIX = "cordwatch.signoff."

_GUARDED = (
    SetRegisteredModelAlias,
    DeleteRegisteredModelAlias,
    SetRegisteredModelTag,
    DeleteRegisteredModelTag,
    SetModelVersionTag,
    DeleteModelVersionTag,
    CreateModelVersion,
    RenameRegisteredModel,
    DeleteRegisteredModel,
)

_logger = logging.getLogger(__name__)


def protected_aliases(raw: str | None = None) -> frozenset[str]:
    """The protected aliases, lower-cased: `raw` (default: env CORDWATCH_PROTECTED_ALIASES), else `champion`."""
    raw = os.environ.get(PROTECTED_ALIASES_ENV, "") if raw is None else raw
    aliases = frozenset(a.strip().lower() for a in raw.split(",") if a.strip())
    return aliases or DEFAULT_PROTECTED_ALIASES  # an empty setting never switches the protection off


def guarded_routes() -> dict[tuple[str, str], type]:
    """(path, method) -> request class, for every route of the guarded registry requests (all API prefixes)."""
    return {
        (path, method): cls
        for path, cls, methods in get_endpoints(lambda cls: cls)
        if cls in _GUARDED
        for method in methods
    }


def _deny(message: str) -> MlflowException:
    return MlflowException(message, error_code=PERMISSION_DENIED)  # 403 {"error_code": "PERMISSION_DENIED", ...}


def _registry_rules(protected: frozenset[str]) -> Callable[[], Response | None]:
    routes = guarded_routes()

    @catch_mlflow_exception
    def enforce() -> Response | None:
        kind = routes.get((request.path, request.method))
        if kind is None:
            return None
        username = getattr(g, "mlflow_authenticated_user", None)  # set by basic-auth's before_request
        if username is None:  # basic-auth refuses these before us; never act on an anonymous request
            auth = basic_auth.authenticate_request()
            if isinstance(auth, Response):
                return auth
            username = auth.username
        params = basic_auth._request_params()
        name = str(params.get("name", ""))
        who = f"user '{username}'"

        def can_manage() -> bool:
            if basic_auth.store.get_user(username).is_admin:
                return True
            return basic_auth._get_permission_from_registered_model_or_prompt_name().can_manage

        def audit_tags() -> list[str]:
            tags = basic_auth._get_model_registry_store().get_registered_model(name).tags
            return sorted(k for k in tags if k.startswith(AUDIT_TAG_PREFIX))

        if kind in (SetRegisteredModelAlias, DeleteRegisteredModelAlias):
            alias = str(params.get("alias", ""))
            if alias.strip().lower() in protected and not can_manage():
                verb = "set" if kind is SetRegisteredModelAlias else "delete"
                raise _deny(
                    f"cordwatch: {who} may not {verb} the protected alias '{alias}' of registered model '{name}': "
                    "that needs MANAGE on the model (a reviewer's sign-off); EDIT moves only other aliases."
                )
        elif kind is RenameRegisteredModel and not can_manage():
            raise _deny(f"cordwatch: renaming registered model '{name}' needs MANAGE on it; {who} has less.")
        elif kind in (SetRegisteredModelTag, DeleteRegisteredModelTag):
            key = str(params.get("key", ""))
            if key.startswith(AUDIT_TAG_PREFIX):
                if kind is DeleteRegisteredModelTag:
                    raise _deny(f"cordwatch: audit tag '{key}' of '{name}' cannot be deleted: the log is append-only.")
                if key in audit_tags():
                    raise _deny(
                        f"cordwatch: audit tag '{key}' of '{name}' already exists and cannot be overwritten: "
                        "the log is append-only; write the next key instead."
                    )
        elif kind in (SetModelVersionTag, DeleteModelVersionTag):
            key = str(params.get("key", ""))
            if key.startswith(SIGNOFF_TAG_PREFIX) and not can_manage():
                raise _deny(f"cordwatch: sign-off tag '{key}' on '{name}' needs MANAGE (a reviewer); {who} has less.")
        elif kind is CreateModelVersion:
            tags = params.get("tags") or []
            keys = [str(t.get("key", "")) for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []
            signoff = [k for k in keys if k.startswith(SIGNOFF_TAG_PREFIX)]
            if signoff and not can_manage():
                raise _deny(f"cordwatch: a new version of '{name}' may not carry sign-off tags {signoff}: {who}.")
        elif kind is DeleteRegisteredModel and (logged := audit_tags()):
            raise _deny(f"cordwatch: registered model '{name}' carries an audit log ({len(logged)} entries): kept.")
        return None

    return enforce


@contextmanager
def _one_worker_at_a_time() -> Iterator[None]:
    """Serialise the auth store's bootstrap across uvicorn workers on this host (a lock file per OS user).

    MLflow bootstraps the auth database (migrations, admin user) in the parent only for `--app-name basic-auth`;
    for any other app name every worker does it, and concurrent migrations of a fresh database race.
    """
    path = Path(tempfile.gettempdir()) / f"cordwatch-auth-{os.getuid()}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_app(app: Flask = mlflow_flask_app) -> Flask | FastAPI:
    """MLflow's basic-auth app with cordwatch's registry rules (entry point `mlflow.app: cordwatch-auth`)."""
    protected = protected_aliases()
    with _one_worker_at_a_time():
        served = basic_auth.create_app(app)
    # Registered after basic-auth's own before_request: runs only on requests it authenticated and allowed.
    app.before_request(_registry_rules(protected))
    _logger.info("cordwatch-auth: protected aliases %s", sorted(protected))
    return served
