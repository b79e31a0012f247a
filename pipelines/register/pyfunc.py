"""The detector as an MLflow pyfunc model: the weights, the windowing ingestion applies, and the class names.

`mlflow.pyfunc.load_model(uri).predict(frame)` takes a DataFrame with, per row, either a `path` (a DICOM file) or
`pixels` (one image's stored values as a 2-D list or array, MONOCHROME2: brighter is more signal), and returns
one row per box: `image` (the input row's position), `class`, `confidence`, and the box in the source image's
pixel coordinates (`x_min, y_min, x_max, y_max`). The project's code travels with the model (`code_paths`), so it
loads in a fresh process with no checkout on `sys.path`; only ultralytics, pydicom, numpy and pandas are needed.

Input sizes are not resized here: ultralytics letterboxes each image to `imgsz` and maps the boxes back to the
source pixels, as `cordwatch evaluate` does on the ingested PNG (which has the DICOM's own matrix).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from pipelines.contracts import CLASS_NAMES
from pipelines.imaging import model_image

OUTPUT_COLUMNS: tuple[str, ...] = ("image", "class", "confidence", "x_min", "y_min", "x_max", "y_max")
INPUT_SCHEMA = Schema(
    [ColSpec("string", "path", required=False), ColSpec(Array(Array("long")), "pixels", required=False)]
)
OUTPUT_SCHEMA = Schema(
    [
        ColSpec("long", "image"),
        ColSpec("string", "class"),
        *(ColSpec("double", c) for c in ("confidence", "x_min", "y_min", "x_max", "y_max")),
    ]
)


def signature(conf: float) -> ModelSignature:
    """Inputs, outputs, and one parameter: `conf`, the confidence threshold (default: the one the model was
    registered with, the evaluation's operating point)."""
    return ModelSignature(
        inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA, params=ParamSchema([ParamSpec("conf", "double", float(conf))])
    )


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # pipelines/: shipped with the model
ENTRY_POINT = Path(__file__).with_name("detector_entry.py")  # models from code: no pickle in the model


class DetectorModel(mlflow.pyfunc.PythonModel):
    """YOLO weights + ingestion's windowing; settings from the `config` artifact (see `log_detector`)."""

    def load_context(self, context: Any) -> None:
        from ultralytics import YOLO

        self.config = json.loads(Path(context.artifacts["config"]).read_text())
        self.model = YOLO(context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import pydicom

        cfg = self.config
        conf = float((params or {}).get("conf", cfg["conf"]))
        rows: list[tuple[object, ...]] = []
        paths = model_input["path"] if "path" in model_input else pd.Series([None] * len(model_input))
        pixels = model_input["pixels"] if "pixels" in model_input else pd.Series([None] * len(model_input))
        for position, (path, values) in enumerate(zip(paths, pixels, strict=True)):
            if isinstance(path, str) and path:
                ds = pydicom.dcmread(path)
                stored, monochrome1 = ds.pixel_array, ds.get("PhotometricInterpretation") == "MONOCHROME1"
            elif isinstance(values, (list, np.ndarray)):
                stored, monochrome1 = np.asarray([np.asarray(row) for row in values]), False
            else:
                raise ValueError(f"input row {position} has neither a path nor pixels")
            image = model_image(stored, tuple(cfg["clip_percentiles"]), monochrome1)
            result = self.model.predict(image, imgsz=cfg["imgsz"], conf=conf, device="cpu", verbose=False)[0]
            boxes = result.boxes
            for (x0, y0, x1, y1), cls, score in zip(
                boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True
            ):
                rows.append((position, cfg["class_names"][int(cls)], float(score), x0, y0, x1, y1))
        out = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
        return out.astype(
            {"image": np.int64, "confidence": float, "x_min": float, "y_min": float, "x_max": float, "y_max": float}
        )


def example_input() -> pd.DataFrame:
    """The input example logged with the model: one row of `pixels` (a 64 x 64 pattern of 12-bit stored values), so
    the example is self-contained wherever the model goes (a DICOM path would not be)."""
    y, x = np.mgrid[0:64, 0:64]
    pattern = (2048 + 1500 * np.sin(x / 6.0) * np.cos(y / 9.0)).astype(np.int64)
    return pd.DataFrame({"pixels": [pattern.tolist()]})


@contextmanager
def project_imports_kept() -> Iterator[None]:
    """Undo what loading a pyfunc with `code_paths` does to this process: MLflow puts the model's copy of
    `pipelines/` (in a temporary folder) first on `sys.path` and evicts the project's modules, so later imports here
    would come from a copy that is about to be deleted. `log_model` does it too (it loads the model to check the
    input example)."""
    path = list(sys.path)
    ours = {k: v for k, v in sys.modules.items() if k == "pipelines" or k.startswith("pipelines.")}
    try:
        yield
    finally:
        sys.path[:] = path
        for name in [k for k in sys.modules if k == "pipelines" or k.startswith("pipelines.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def log_detector(
    weights: Path,
    *,
    imgsz: int,
    conf: float,
    clip_percentiles: tuple[float, float],
    name: str = "detector",
    extra_artifacts: dict[str, Path] | None = None,
) -> Any:
    """Log the detector as a pyfunc model in the active MLflow run; returns mlflow's ModelInfo.

    extra_artifacts: files that travel with the model (name -> path), e.g. monitoring's reference features.

    Requirements are pinned to the versions installed here (no inference, which would import and probe packages).
    """
    config = {
        "imgsz": int(imgsz),
        "conf": float(conf),
        "clip_percentiles": list(clip_percentiles),
        "class_names": list(CLASS_NAMES),
    }
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        with project_imports_kept():
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(ENTRY_POINT),
                artifacts={
                    "weights": str(weights),
                    "config": str(config_path),
                    **{k: str(v) for k, v in (extra_artifacts or {}).items()},
                },
                code_paths=[str(PACKAGE_DIR)],
                signature=signature(conf),
                input_example=example_input(),
                pip_requirements=[
                    f"{pkg}=={version(pkg)}" for pkg in ("ultralytics", "pydicom", "pandas", "numpy", "mlflow")
                ],
            )
