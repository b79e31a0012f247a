"""Schedules and triggers (`cordwatch schedule`): retraining on a cron, monitoring on a shorter one, and retraining
when monitoring raises drift at a site or enough new expert labels have arrived. Every schedule and trigger is set
in params.yaml (`schedule:`).

Deployments are built with `flow.to_deployment(...)` and served by this process (`prefect.serve`): the flows run
here, with this checkout's environment. Their parameters are a params file (not a Params object: a deployment's
parameters are stored as JSON on the server) and, for triggered runs, why they run. Triggers become automations only
on a real Prefect server with its trigger services (`prefect server start`; the ephemeral server a single command
starts has none): docs/orchestration.md says how to run one, and `tests/integration/test_schedule.py` checks the
drift trigger against a real local server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

DRIFT_EVENT_SITE = "{{ event.resource['cordwatch.site'] }}"  # the alerting site, passed to the retraining run
LABELS_EVENT = "cordwatch.labels.enough"


@flow(name="cordwatch-scheduled-retrain")
def scheduled_retrain(
    params_file: str = "params.yaml", reason: str = "schedule", site: str | None = None
) -> dict[str, Any]:
    """The retraining flow for a deployment: loads the params file; `reason` and `site` say why it runs."""
    from flows.retrain_flow import retrain_flow
    from pipelines import runtime
    from pipelines.config import load_params

    params = load_params(Path(params_file))
    runtime.configure(params.paths.state_dir)
    get_run_logger().info("retraining: %s%s", reason, f" (site {site})" if site else "")
    return {**retrain_flow(params), "reason": reason, "site": site}


@flow(name="cordwatch-scheduled-monitor")
def scheduled_monitor(params_file: str = "params.yaml") -> dict[str, Any]:
    """Monitoring for a deployment: `cordwatch monitor`'s own flow (events included) over the folder or PACS in
    `schedule.monitor_input` / `schedule.monitor_pacs_url`."""
    from flows.monitor_flow import monitor_flow
    from flows.predict_flow import write_request
    from pipelines import runtime
    from pipelines.config import load_params

    params = load_params(Path(params_file))
    runtime.configure(params.paths.state_dir)
    settings = params.schedule
    out_dir = params.paths.report_dir("monitoring") / "reads"
    source = Path(settings.monitor_input) if settings.monitor_input else None
    write_request(out_dir, source=source, pacs_url=settings.monitor_pacs_url, mode="quick", model_uri=None)
    summary = monitor_flow(params, out_dir)
    return {k: summary[k] for k in ("studies_read", "new_rows", "studies_kept")} | {"alerts": len(summary["alerts"])}


def deployments(params_file: Path) -> list[Any]:
    """The retraining and monitoring deployments with their schedules and triggers, from the params file."""
    from prefect.events import DeploymentEventTrigger

    from pipelines.config import load_params

    params = load_params(params_file)
    settings, file = params.schedule, str(params_file.resolve())
    triggers = []
    if settings.retrain_on_drift:
        triggers.append(
            DeploymentEventTrigger(
                name="retrain on drift",
                expect={params.monitor.event},
                match={"prefect.resource.id": "cordwatch.site.*"},
                parameters={"params_file": file, "reason": "drift", "site": DRIFT_EVENT_SITE},
            )
        )
    if settings.retrain_after_labelled_studies:
        triggers.append(
            DeploymentEventTrigger(
                name="retrain on new labels",
                expect={LABELS_EVENT},
                match={"prefect.resource.id": "cordwatch.labels"},
                parameters={"params_file": file, "reason": "labels"},
            )
        )
    out = [
        scheduled_retrain.to_deployment(
            name="retrain",
            cron=settings.retrain_cron,
            parameters={"params_file": file},
            triggers=triggers,
            description="cordwatch retraining: on a schedule, on drift at a site, after new expert labels",
        )
    ]
    if settings.monitor_input or settings.monitor_pacs_url:
        out.append(
            scheduled_monitor.to_deployment(
                name="monitor",
                cron=settings.monitor_cron,
                parameters={"params_file": file},
                description="cordwatch drift monitoring of new studies",
            )
        )
    return out
