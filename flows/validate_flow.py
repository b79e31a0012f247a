"""Prefect flow: run the great-expectations data contracts; a failed expectation fails the flow (and so `dvc repro`),
so no model is ever trained on data that breaks its contract. Thin: one task around `run_validate`."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.validate import ValidationReport
from pipelines.validate.run import run_validate


@task(name="validate-contracts", cache_policy=NO_CACHE)
def validate_task(params: Params) -> ValidationReport:
    """Validate images, annotations and (when present) splits; write Data Docs under reports/validation/."""
    return run_validate(params)


@flow(name="cordwatch-validate")
def validate_flow(params: Params) -> ValidationReport:
    """Validate the dataset; raise DataContractError naming every failed expectation."""
    report = validate_task(params)
    logger = get_run_logger()
    logger.info("data docs: %s", report.docs_index)
    report.raise_for_failures()
    logger.info("all data contracts hold")
    return report
