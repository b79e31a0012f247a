"""YOLO dataset views over the ingested dataset: symlinked images plus reference-reader labels, one view per fold.

The reference boxes and the label lines come from `pipelines.labels` (shared with ingest and evaluate).

Ultralytics finds a label by swapping `/images/` for `/labels/` in the image path, so each view is a small tree of
symlinks (no pixel copies) and label files written from `annotations.parquet`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipelines.contracts import CLASS_NAMES, IMAGES_DIR
from pipelines.labels import yolo_lines


def build_view(
    root: Path,
    ingested_dir: Path,
    images: pd.DataFrame,
    reference: pd.DataFrame,
    parts: dict[str, Iterable[str]],
) -> Path:
    """Write `root/{images,labels}/<part>/` for each part (e.g. train, val) and `root/data.yaml`; return the YAML.

    Images without reference boxes get an empty label file: ultralytics then treats them as background.
    """
    shutil.rmtree(root, ignore_errors=True)
    sizes = images.set_index("image_id")[["rows", "columns"]]
    boxes = {image_id: group for image_id, group in reference.groupby("image_id")}
    for part, ids in parts.items():
        (root / "images" / part).mkdir(parents=True)
        (root / "labels" / part).mkdir(parents=True)
        for image_id in ids:
            os.symlink(
                (ingested_dir / IMAGES_DIR / f"{image_id}.png").resolve(), root / "images" / part / f"{image_id}.png"
            )
            rows, cols = sizes.loc[image_id]
            text = yolo_lines(boxes[image_id], int(rows), int(cols)) if image_id in boxes else ""
            (root / "labels" / part / f"{image_id}.txt").write_text(text, encoding="utf-8")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    lines = [f"path: {root.resolve()}"] + [f"{part}: images/{part}" for part in parts] + [f"names:\n{names}"]
    data_yaml = root / "data.yaml"
    data_yaml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_yaml
