"""The `registry:` section of params.yaml: the registered model's name and the gates a version must pass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.settings import StrictModel


class GateParams(StrictModel):
    """Thresholds of the registration gates (pipelines/register/gates.py); each outcome carries a readable reason."""

    min_external_map50_lower: float = Field(0.70, ge=0, le=1)
    max_subgroup_shortfall: float = Field(0.10, ge=0, le=1)
    noninferiority_margin: float = Field(0.02, ge=0, le=1)
    dirty_tree: Literal["warn", "fail"] = "warn"


class RegisterParams(StrictModel):
    """Registered model name and gates."""

    model_name: str = Field("cordwatch-detector", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    gates: GateParams = Field(default_factory=GateParams)
    lock_wait_s: float = Field(120.0, gt=0)
    lock_stale_after_s: float = Field(600.0, gt=0)
