"""Typed `train:` section: the YOLO11 recipe, with per-profile sizes (ci seconds, demo minutes, paper study-sized)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.settings import StrictModel


class TrainProfile(StrictModel):
    """Sizes that scale with the profile."""

    imgsz: int = Field(224, ge=32, multiple_of=32)
    epochs: int = Field(40, ge=1)
    batch: int = Field(8, ge=1)
    folds: list[int] | None = None


class TrainParams(StrictModel):
    """K-fold YOLO11 training on the development centre's folds, then a final model."""

    model: str = "yolo11n.yaml"
    seed: int = 0
    device: str = "cpu"
    workers: int = Field(0, ge=0)
    patience: int = Field(100, ge=1)
    optimizer: str = "auto"
    nominal_batch: int | None = Field(None, ge=1)
    parallel_folds: int = Field(2, ge=1)
    final_model: Literal["all_development", "best_fold"] = "best_fold"
    augment: dict[str, float] = Field(default_factory=lambda: {"fliplr": 0.0, "degrees": 5.0, "mosaic": 1.0})
    profiles: dict[str, TrainProfile] = Field(
        default_factory=lambda: {
            "ci": TrainProfile(imgsz=64, epochs=1, batch=4, folds=[0, 1]),
            "demo": TrainProfile(imgsz=224, epochs=22, batch=8),
            "paper": TrainProfile(imgsz=640, epochs=150, batch=16),
        }
    )

    def profile(self, name: str) -> TrainProfile:
        """The sizes for a profile, with a clear error listing the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(f"no train profile {name!r}; available: {', '.join(sorted(self.profiles))}") from None
