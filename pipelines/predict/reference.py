"""Monitoring's reference: the feature rows of the data a model was trained on, made at registration and stored
with the model (so monitoring needs only the model URI).

The rows are built exactly as monitoring builds a new study's row (`pipelines.predict.features.study_row`), from
ingestion's training images (the 8-bit windowed PNGs the detector trained on, equal to what the quick read makes
of the same DICOM) and images table (the header facts), with the registered weights reading them through the same
`Detector` at the model's operating confidence. Outputs and embeddings therefore come from the model reading its
own training images; `docs/monitoring.md` says what that means for prediction drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipelines.contracts import CV, IMAGES_TABLE
from pipelines.predict.detector import Detector
from pipelines.predict.features import detected_study_row, metadata_from_table
from pipelines.progress import Progress, ProgressFn

REFERENCE_FILE = "monitoring_reference.parquet"  # its name in the model's artifacts and on disk
REFERENCE_SPLITS: tuple[str, ...] = (CV,)  # the model's training data (training and validation folds)


class ReferenceError(ValueError):
    """The training data cannot be read into a reference."""


def _model_input(path: Path) -> np.ndarray:
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ReferenceError(f"cannot read the training image {path}")
    return np.repeat(gray[:, :, None], 3, axis=2)  # as `pipelines.imaging.model_image` makes it


def training_reference(
    ingested_dir: Path,
    splits_file: Path,
    weights: Path,
    *,
    imgsz: int,
    conf: float,
    iou: float,
    band: tuple[float, float],
    splits: Sequence[str] = REFERENCE_SPLITS,
    batch: int = 8,
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """One feature row per study of the training splits, read by `weights`; keyed by ingestion's study key."""
    images = pd.read_parquet(ingested_dir / IMAGES_TABLE)
    split_of = pd.read_parquet(splits_file).set_index("image_id")["split"]
    chosen = images[images["image_id"].map(split_of).isin(splits)].sort_values(["study_key", "image_id"])
    if chosen.empty:
        raise ReferenceError(f"no images in the splits {list(splits)}: nothing to make a reference of")
    detector = Detector(weights, imgsz=imgsz, conf=conf, iou=iou)
    names = detector.names
    rows: list[dict[str, Any]] = []
    groups = list(chosen.groupby("study_key", sort=True))
    for done, (study_key, study) in enumerate(groups, start=1):
        pixels = [_model_input(ingested_dir / p) for p in study["image_path"]]
        boxes, states = [], []
        for start in range(0, len(pixels), batch):
            b, s = detector.detect(pixels[start : start + batch], keep_state=True)
            boxes += b
            states += s
        meta = metadata_from_table(study.iloc[0].to_dict())
        rows.append(detected_study_row(str(study_key), meta, pixels, boxes, states, names, band, detector.head.f))
        if progress is not None and (done % 50 == 0 or done == len(groups)):
            progress(Progress("register", done, len(groups), "study", "monitoring reference"))
    return pd.DataFrame(rows)
