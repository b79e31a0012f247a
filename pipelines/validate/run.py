"""The validate stage's edge: the data contracts on the ingested tables and the splits; Data Docs and
`reports/validation/summary.json`. Called by the Prefect flow, the CLI (so DVC) and the accelerator driver (when
great-expectations is installed there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.validate.core import ValidationReport, validate_dataset

if TYPE_CHECKING:  # the whole params arrive from the caller; importing config at run time would be a cycle
    from pipelines.config import Params


def run_validate(params: Params) -> ValidationReport:
    """Validate images, annotations and (when present) the splits; write the Data Docs and the summary.

    Returns the report without raising: call `report.raise_for_failures()` to stop on a broken contract (the flow
    logs where the Data Docs are first).
    """
    return validate_dataset(params.validation, params.readers, params.paths, params.split.external_sites)
