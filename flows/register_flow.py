"""Prefect flow: register the evaluated model as a new registry version with its gates, lineage and model card.

Thin: one task calls `pipelines.register.run.run_register`. A version that fails a gate is still registered (its
failure recorded with the reason, the alias `challenger` only); the flow fails only when registration itself does.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.progress import ProgressReporter
from pipelines.register.run import run_register


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(params: Params) -> dict[str, Any]:
    """Gates, pyfunc model, version, model card, aliases; returns reports/register/summary.json's content."""
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_register(params, progress=reporter)


@flow(name="cordwatch-register")
def register_flow(params: Params) -> dict[str, Any]:
    """Register the final model; log the verdict."""
    summary = register_task(params)
    logger = get_run_logger()
    aliases = ", ".join(f"{a}" for a in summary["aliases"]) or "none"
    logger.info("%s version %s registered (aliases: %s)", summary["model"], summary["version"], aliases)
    for name, gate in summary["gates"].items():
        logger.info("gate %s: %s: %s", name, gate["status"], gate["reason"])
    return summary
