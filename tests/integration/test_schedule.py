"""The drift trigger on a real Prefect server (`prefect server start`, with its trigger services): a
`cordwatch.drift.detected` event for a site makes the retraining deployment schedule a run for that site; the labels
trigger and the timed schedule are registered with it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.services import ServiceError, prefect_ui
from tests.integration.conftest import write_ci_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_drift_event_schedules_a_retraining_run_for_its_site(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.schedule import deployments

    params_file = write_ci_params(tmp_path)
    try:
        server = prefect_ui(tmp_path / "prefect-home")
    except ServiceError as exc:
        pytest.skip(f"cannot start a Prefect server: {exc}")
    try:
        with temporary_settings({PREFECT_API_URL: f"{server.url}/api"}):
            built = deployments(params_file)
            assert [d.name for d in built] == ["retrain"]  # no monitor input configured: no monitor deployment
            retrain = built[0]
            assert {t.name for t in retrain.triggers} == {"retrain on drift", "retrain on new labels"}
            deployment_id = retrain.apply()
            time.sleep(3)  # the automation is loaded by the trigger service
            emit_event(
                event="cordwatch.drift.detected",
                resource={"prefect.resource.id": "cordwatch.site.ext", "cordwatch.site": "ext"},
                payload={"alerts": [{"window": 0, "segment": "site:ext", "reasons": "test"}]},
            )
            EventsWorker.drain_all()  # the events worker sends in the background: flush it to the server
            runs, deadline = [], time.monotonic() + 90
            with get_client(sync_client=True) as client:
                schedules = client.read_deployment(deployment_id).schedules
                while time.monotonic() < deadline and not runs:
                    runs = [
                        r
                        for r in client.read_flow_runs(
                            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                        )
                        if r.parameters.get("reason") == "drift"
                    ]
                    time.sleep(1)
        assert [s.schedule.cron for s in schedules] == ["0 2 * * 0"]
        assert runs, "no flow run was created by the drift trigger"
        assert runs[0].parameters["site"] == "ext" and runs[0].parameters["params_file"] == str(params_file.resolve())
    finally:
        server.stop()
