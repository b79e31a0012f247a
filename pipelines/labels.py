"""Label code shared by ingest, train and evaluate: the reference standard's boxes and YOLO label lines.

One definition here, so the labels ingest writes, the labels train learns from and the reference evaluate scores
against cannot drift apart, and no stage has to import another stage for them.
"""

from __future__ import annotations

import pandas as pd


def reference_boxes(annotations: pd.DataFrame, level: str) -> pd.DataFrame:
    """Boxes of the reference standard: one reader of `level` per image (the first by id when several read it).

    Args:
        annotations: annotations.parquet rows (needs image_id, reader_id, reader_level).
        level: the reference reader level (`readers.reference_level`).
    """
    ref = annotations[annotations["reader_level"] == level]
    first = ref.groupby("image_id")["reader_id"].min().rename("chosen")
    ref = ref.join(first, on="image_id")
    return ref[ref["reader_id"] == ref["chosen"]].drop(columns="chosen")


def yolo_lines(boxes: pd.DataFrame, rows: int, columns: int) -> str:
    """YOLO txt format: `class x_center y_center width height`, normalised to the image size.

    Args:
        boxes: rows with class_id, x_min, y_min, x_max, y_max in pixels.
        rows, columns: the image size in pixels.
    """
    lines = []
    for b in boxes.itertuples(index=False):
        xc = (b.x_min + b.x_max) / 2 / columns
        yc = (b.y_min + b.y_max) / 2 / rows
        w = (b.x_max - b.x_min) / columns
        h = (b.y_max - b.y_min) / rows
        lines.append(f"{b.class_id} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")
