"""The `predict:` section of params.yaml: which model reads, how it triages, when it explains, where results go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.settings import StrictModel

Mode = Literal["quick", "xai", "auto"]
CamMethod = Literal["hirescam", "gradcam", "eigencam"]


class XaiParams(StrictModel):
    """The class-activation map of one detection (pipelines/predict/cam.py; the README says why these defaults)."""

    method: CamMethod = "hirescam"
    # Model layer indices whose activations the map is taken on; null = the Detect head's inputs (the neck's
    # output feature maps, P3-P5), where the gradient of one kept box's class logit is instance-specific.
    layers: list[int] | None = None
    overlay_alpha: float = Field(0.45, ge=0, le=1)
    colormap: Literal["jet", "turbo", "inferno"] = "jet"


class PredictParams(StrictModel):
    """`cordwatch predict`: model, operating point, auto mode's uncertainty band, outputs."""

    model_uri: str = "models:/cordwatch-detector@champion"
    mode: Mode = "auto"
    # null = the confidence threshold the model was registered with (the evaluation's operating point).
    conf: float | None = Field(None, ge=0, le=1)
    iou: float = Field(0.7, gt=0, le=1)
    # auto mode explains a study whose detections' confidence falls in [low, high), or that is positive.
    uncertainty_band: tuple[float, float] = (0.25, 0.6)
    level_names: list[str] = Field(default_factory=lambda: ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"])
    batch: int = Field(8, ge=1)
    dicom_results: bool = True
    dicom_workers: int = Field(0, ge=0)
    sr_series_number: int = Field(9901, ge=1)
    capture_series_number: int = Field(9902, ge=1)
    xai: XaiParams = Field(default_factory=XaiParams)

    @model_validator(mode="after")
    def _band_ordered(self) -> PredictParams:
        low, high = self.uncertainty_band
        if not 0 <= low < high <= 1:
            raise ValueError(f"uncertainty_band must satisfy 0 <= low < high <= 1, got {list(self.uncertainty_band)}")
        return self
