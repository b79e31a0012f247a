"""Model predictions as the DESIGN.md prediction contract: image_id, source, label, x_min..y_max (pixels), score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pipelines.contracts import CLASS_NAMES

PREDICTION_COLUMNS: tuple[str, ...] = ("image_id", "source", "label", "x_min", "y_min", "x_max", "y_max", "score")


def predict_boxes(
    weights: Path,
    image_paths: Sequence[Path],
    imgsz: int,
    device: str = "cpu",
    conf: float = 0.001,
    batch: int = 16,
    source: str = "model",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run the detector on images (named `<image_id>.png`); boxes come back in original-image pixels.

    `conf` is kept low so AP integrates the whole precision-recall curve (as ultralytics' own validation does);
    operating points are applied later by the scorer. `progress(done, total)` is called after each batch.
    """
    from ultralytics import YOLO

    model = YOLO(str(weights))
    rows: list[dict[str, object]] = []
    for start in range(0, len(image_paths), batch):
        chunk = [str(p) for p in image_paths[start : start + batch]]
        for path, result in zip(
            chunk, model.predict(chunk, imgsz=imgsz, conf=conf, device=device, verbose=False), strict=True
        ):
            boxes = result.boxes
            for (x0, y0, x1, y1), cls, score in zip(
                boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True
            ):
                rows.append(
                    {
                        "image_id": Path(path).stem,
                        "source": source,
                        "label": CLASS_NAMES[int(cls)],
                        "x_min": x0,
                        "y_min": y0,
                        "x_max": x1,
                        "y_max": y1,
                        "score": score,
                    }
                )
        if progress is not None:
            progress(min(start + batch, len(image_paths)), len(image_paths))
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
