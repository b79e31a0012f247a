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
    device: str = "cpu"  # cpu, mps, or CUDA ids "0" / "0,1,2,3" (ultralytics' own device string)
    # None: each fold trains on every listed GPU (ultralytics' DDP), one fold after another. k: folds train side by
    # side, each on its own k GPUs of the list ("0,1,2,3" with 1: four folds at once). See `device_groups`.
    gpus_per_fold: int | None = Field(None, ge=1)
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

    @property
    def gpu_ids(self) -> list[str]:
        """The CUDA ids in `device` ([] for cpu or mps)."""
        ids = [part.strip() for part in self.device.split(",") if part.strip()]
        return ids if ids and all(part.isdigit() for part in ids) else []

    def device_groups(self) -> list[str]:
        """The device strings folds train on side by side: `device` itself, unless `gpus_per_fold` splits the listed
        GPUs into groups of that many (a remainder that makes no whole group is left idle)."""
        ids = self.gpu_ids
        if self.gpus_per_fold is None or not ids:
            return [self.device]
        k = self.gpus_per_fold
        if k > len(ids):
            raise ValueError(f"train.gpus_per_fold is {k} but train.device lists {len(ids)} GPU(s): {self.device!r}")
        return [",".join(ids[start : start + k]) for start in range(0, len(ids) - k + 1, k)]

    def profile(self, name: str) -> TrainProfile:
        """The sizes for a profile, with a clear error listing the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(f"no train profile {name!r}; available: {', '.join(sorted(self.profiles))}") from None
