"""Typed `ingest:` section of params.yaml: series-selection rules, de-identification and safety limits.

Who may read (reader ids and levels) is the shared `readers:` section (`pipelines.settings.ReadersParams`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipelines.settings import StrictModel

RuleOp = Literal["equals", "in", "regex", "not_regex", "range", "plane", "absent_or_not_equals"]


class SeriesCondition(StrictModel):
    """One test on one DICOM attribute (by keyword)."""

    tag: str
    op: RuleOp
    value: Any = None
    missing: Literal["fail", "pass"] = "fail"


class SeriesRule(StrictModel):
    """A named series-selection rule: a single condition, or `any_of` several (passes if one does)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    tag: str | None = None
    op: RuleOp | None = None
    value: Any = None
    missing: Literal["fail", "pass"] = "fail"
    any_of: list[SeriesCondition] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SeriesRule:
        single = self.tag is not None or self.op is not None
        if single == (self.any_of is not None):
            raise ValueError(f"rule {self.name!r}: give either tag+op(+value) or any_of, not both or neither")
        if single and (self.tag is None or self.op is None):
            raise ValueError(f"rule {self.name!r}: a single-condition rule needs both tag and op")
        return self

    def conditions(self) -> list[SeriesCondition]:
        """The rule as a list of alternatives."""
        if self.any_of is not None:
            return list(self.any_of)
        return [SeriesCondition(tag=self.tag or "", op=self.op or "equals", value=self.value, missing=self.missing)]


class IngestParams(StrictModel):
    """DICOM ingestion: series rules, de-identification and safety limits."""

    input_dir: Path | None = None
    annotations_csv: Path | None = None
    series_rules: list[SeriesRule]
    site_tag: str = "InstitutionName"
    site_map: dict[str, str] = Field(default_factory=dict)
    pseudonym_key_env: str = "CORDWATCH_PSEUDONYM_KEY"
    max_file_mb: float = Field(512, gt=0)
    max_pixels: int = Field(64_000_000, gt=0)
    min_matrix: int = Field(32, gt=0)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    png_compress_level: int = Field(1, ge=0, le=9)
    workers: int = Field(2, ge=1)
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(1.0, ge=0)

    # Keys that change how a run executes but never what it writes: left out of the output-settings hash, so
    # resuming with another worker count still reuses finished files.
    EXECUTION_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"input_dir", "annotations_csv", "workers", "retries", "retry_delay_s"}
    )

    def output_hash(self) -> str:
        """Stable short hash of the settings that shape the ingested dataset."""
        dumped = self.model_dump(mode="json", exclude=set(self.EXECUTION_ONLY))
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]
