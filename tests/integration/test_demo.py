"""`cordwatch demo --profile ci` from a clean folder, then `cordwatch retrain` again with nothing changed.

The demo is the README's main command: the registry, the reports and the dashboard workspace must hold what it
says; the re-run must skip every stage (its cache lives under the project's state, not in one Prefect run) and
register nothing new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from flows.retrain_flow import STAGES
from tests.integration.conftest import PSEUDONYM_KEY, mlflow_uris_kept, write_ci_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_from_a_clean_folder_then_a_cached_retrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    root = tmp_path / "fresh"
    root.mkdir()
    params_file = write_ci_params(root)
    raw = yaml.safe_load(params_file.read_text())
    raw["monitor"]["window_size"] = 10  # the demo monitors two windows of new studies: 2 x 10, not 2 x 25
    params_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.chdir(root)
    with prefect_test_harness(server_startup_timeout=120), mlflow_uris_kept():
        demo = CliRunner().invoke(app, ["demo", "--params", str(params_file)])
        again = CliRunner().invoke(app, ["retrain", "--params", str(params_file)])
    assert demo.exit_code == 0, (demo.output, demo.exception)
    assert "SYNTHETIC" in demo.output and "where to look" in demo.output and "cordwatch dashboard" in demo.output
    summary = json.loads((root / "reports" / "demo" / "summary.json").read_text())
    retrained = json.loads((root / "reports" / "retrain" / "summary.json").read_text())
    assert summary["model_uri"] == "models:/cordwatch-detector/1"
    assert summary["steps"]["retrain"]["ran"] == list(STAGES)  # a clean folder: everything ran
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    versions = client.search_model_versions("name='cordwatch-detector'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("cordwatch-detector", "challenger").version) == "1"
    for mode in ("quick", "xai"):
        worklist = pd.read_csv(root / "reports" / "demo" / f"predict-{mode}" / "summary.csv")
        assert len(worklist) == summary["steps"][f"predict_{mode}"]["studies"] == 3
    alerts = pd.read_parquet(root / "data" / "monitoring" / "alerts.parquet")
    assert set(alerts["window"]) == {1}  # the unchanged batch is quiet, the new scanner's batch alerts
    assert "scanner:Philips" in set(alerts["segment"])
    from evidently.ui.workspace import Workspace

    projects = {p.name for p in Workspace(str(root / "data" / "monitoring" / "workspace")).list_projects()}
    assert {"cordwatch drift - all sites", "cordwatch drift - dev"} <= projects

    assert again.exit_code == 0, (again.output, again.exception)
    rerun = json.loads((root / "reports" / "retrain" / "summary.json").read_text())
    assert rerun["cached"] == list(STAGES) and rerun["ran"] == [] and "ran nothing" in again.output
    assert rerun["version"] == retrained["version"] == "1" and rerun["gates"] == retrained["gates"]
    assert len(client.search_model_versions("name='cordwatch-detector'")) == 1  # nothing registered twice
    assert os.path.isdir(root / ".cordwatch" / "prefect-cache" / "keys")
