"""Typed `split:` section of params.yaml: patient-grouped folds, internal test share, external sites.

Whose reads define a patient's compression stratum is the shared `readers.reference_level`.
"""

from __future__ import annotations

from pydantic import Field

from pipelines.settings import StrictModel


class SplitParams(StrictModel):
    """Patient-grouped splits: k stratified folds and an internal test set from development sites, external held out."""

    seed: int = 2026
    k_folds: int = Field(5, ge=2)
    internal_test_fraction: float = Field(0.1, ge=0, lt=1)
    external_sites: list[str] = Field(default_factory=lambda: ["ext"])
