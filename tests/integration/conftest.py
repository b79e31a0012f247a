"""The integration tier's shared project: the ci profile run once through every stage, as a user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from pipelines.config import PathsParams
from tests.conftest import REPO

PSEUDONYM_KEY = "train-test-key-0123456789"
STAGES = ("synth", "ingest", "split", "validate", "train", "evaluate", "register")


@pytest.fixture(scope="session")
def ci_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ci-profile project in a temp folder, run through synth, ingest, split, validate, train, evaluate and
    register with the CLI. The ci model (1 epoch on tiny images) is poor, so the registration gates are relaxed
    here (floor 0, any subgroup shortfall) to get a version that passes; tests that need a failing version register
    again with stricter params."""
    root = tmp_path_factory.mktemp("project")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "ci"
    raw["paths"] = PathsParams.under(root).model_dump(mode="json")
    raw["evaluate"]["bootstrap_resamples"] = 200  # CIs stay honest, the test stays quick
    raw["registry"]["gates"].update(min_external_map50_lower=0.0, max_subgroup_shortfall=1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    os.environ["CORDWATCH_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    cwd = Path.cwd()
    os.chdir(root)  # anything written relative to the working directory would show up here
    try:
        with prefect_test_harness(server_startup_timeout=120):
            for cmd in STAGES:
                result = CliRunner().invoke(app, [cmd, "--params", str(root / "params.yaml")])
                assert result.exit_code == 0, (cmd, result.output, result.exception)
    finally:
        os.chdir(cwd)
    return root
