"""Typed `validation:` section of params.yaml: the thresholds the data contracts check against.

Who reads (the reference level, reader ids and levels) is the shared `readers:` section
(`pipelines.settings.ReadersParams`), passed to the contracts beside this one. Kept free of great_expectations so
`pipelines.config` can import it without paying for the GX import.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.settings import StrictModel


class ValidateParams(StrictModel):
    """Data-contract settings (great-expectations suites on the ingested tables and the splits)."""

    modalities: list[str] = Field(default_factory=lambda: ["MR"], min_length=1)
    planes: list[Literal["sagittal", "coronal", "axial", "oblique"]] = Field(
        default_factory=lambda: ["sagittal"], min_length=1
    )
    field_strengths: list[float] = Field(default_factory=lambda: [1.5, 3.0], min_length=1)
    field_strength_tolerance: float = Field(0.15, ge=0, lt=0.75)
    pixel_spacing_mm: tuple[float, float] = (0.2, 2.5)
    matrix: tuple[int, int] = (64, 1024)
    null_tokens: list[str] = Field(default_factory=lambda: ["", "unknown"])
    expert_read_required_for: Literal["training", "all"] = "training"
    fold_balance_tolerance: float = Field(0.10, ge=0, le=1)
    fold_balance_min_patients: int = Field(10, ge=1)
    max_examples: int = Field(5, ge=1, le=100)

    @model_validator(mode="after")
    def _ranges(self) -> ValidateParams:
        for name in ("pixel_spacing_mm", "matrix"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}")
        return self
