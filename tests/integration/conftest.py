"""The integration tier's shared project: the ci profile run once through every stage, as a user would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from pipelines.config import PathsParams
from tests.conftest import REPO

PSEUDONYM_KEY = "train-test-key-0123456789"


@contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """The CLI run in-process points MLflow's process-wide tracking and registry URIs at the project's store (or a
    test's server); put back what was there, unset included, so later bare `mlflow.*` calls follow
    MLFLOW_TRACKING_URI again instead of reaching a store that is gone. (`mlflow.set_*_uri` cannot unset.)"""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # set_tracking_uri also exports it for child processes
    saved_env = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    with mlflow_uris_kept():
        yield


STAGES = ("synth", "ingest", "split", "validate", "train", "evaluate", "register")


def write_ci_params(root: Path) -> Path:
    """`root/params.yaml`: the ci profile with every path under `root`, quick bootstraps, relaxed gates."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "ci"
    raw["paths"] = PathsParams.under(root).model_dump(mode="json")
    raw["evaluate"]["bootstrap_resamples"] = 200  # CIs stay honest, the test stays quick
    raw["registry"]["gates"].update(min_external_map50_lower=0.0, max_subgroup_shortfall=1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root / "params.yaml"


@pytest.fixture(scope="session")
def ci_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ci-profile project in a temp folder, run through synth, ingest, split, validate, train, evaluate and
    register with the CLI. The ci model (1 epoch on tiny images) is poor, so the registration gates are relaxed
    here (floor 0, any subgroup shortfall) to get a version that passes; tests that need a failing version register
    again with stricter params."""
    root = tmp_path_factory.mktemp("project")
    write_ci_params(root)
    os.environ["CORDWATCH_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    cwd = Path.cwd()
    os.chdir(root)  # anything written relative to the working directory would show up here
    try:
        with prefect_test_harness(server_startup_timeout=120), mlflow_uris_kept():
            for cmd in STAGES:
                result = CliRunner().invoke(app, [cmd, "--params", str(root / "params.yaml")])
                assert result.exit_code == 0, (cmd, result.output, result.exception)
    finally:
        os.chdir(cwd)
    return root
