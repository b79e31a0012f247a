"""Typed `validate:` section of params.yaml: the thresholds the data contracts check against.

Kept free of great_expectations and of `pipelines.config` so the config module can import it without a cycle and
without paying for the GX import.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ValidateParams(BaseModel):
    """Data-contract settings (great-expectations suites on the ingested tables and the splits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: list[str] = Field(default_factory=lambda: ["MR"], min_length=1)
    planes: list[Literal["sagittal", "coronal", "axial", "oblique"]] = Field(
        default_factory=lambda: ["sagittal"], min_length=1
    )
    field_strengths: list[float] = Field(default_factory=lambda: [1.5, 3.0], min_length=1)
    field_strength_tolerance: float = Field(0.15, ge=0, lt=0.75)
    pixel_spacing_mm: tuple[float, float] = (0.2, 2.5)
    matrix: tuple[int, int] = (64, 1024)
    null_tokens: list[str] = Field(default_factory=lambda: ["", "unknown"])
    reference_reader_level: Literal["expert", "mid", "junior"] = "expert"
    known_reader_levels: list[str] = Field(default_factory=lambda: ["expert", "mid", "junior"], min_length=1)
    reader_id_pattern: str = r"^[A-Za-z0-9_.-]{1,32}$"
    known_readers: list[str] | None = None
    expert_read_required_for: Literal["training", "all"] = "training"
    fold_balance_tolerance: float = Field(0.10, ge=0, le=1)
    fold_balance_min_patients: int = Field(10, ge=1)
    max_examples: int = Field(5, ge=1, le=100)

    @field_validator("reader_id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"reader_id_pattern is not a valid regex: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _ranges(self) -> ValidateParams:
        for name in ("pixel_spacing_mm", "matrix"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}")
        if self.reference_reader_level not in self.known_reader_levels:
            raise ValueError(
                f"reference_reader_level {self.reference_reader_level!r} is not in known_reader_levels "
                f"{self.known_reader_levels}"
            )
        return self
