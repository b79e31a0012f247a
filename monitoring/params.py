"""Typed parameters of monitoring (the `monitor:` section of `params.yaml`; defaults equal that block)."""

from __future__ import annotations

from pydantic import Field

from pipelines.settings import StrictModel


class MonitorParams(StrictModel):
    """What `cordwatch monitor` reads with, how it cuts windows and when a window alerts."""

    model_uri: str | None = None  # None: predict.model_uri (the champion the reading room uses)
    # read in shadow beside it (never shown to a clinician); None, a missing alias or the same version: no shadow
    challenger_uri: str | None = "models:/cordwatch-detector@challenger"
    window_size: int = Field(25, ge=2)  # a window closes after this many studies ...
    window_days: float | None = Field(7.0, gt=0)  # ... or this many days after its first study, whichever first
    alpha: float = Field(0.05, gt=0, lt=1)  # family-wise level of one comparison's column tests (Bonferroni)
    event: str = "cordwatch.drift.detected"  # the Prefect event each alert emits (a retraining trigger listens)
