"""A detector trained in the test session on controlled SYNTHETIC phantoms, for tests of what heatmaps explain.

The ci project's model (one epoch on 64-pixel images) detects nothing, and the demo's takes 13 minutes to train.
This one sees zoomed mid-sagittal phantoms (`pipelines.synth.probes`, 130 mm field of view on a 128 matrix: the
demo's pixel size, the cervical canal filling the image) with one compressed level or none, labelled with the
compressed level's box only, and trains YOLO11n from scratch through ultralytics, offline, in about two and a half
minutes on 2 CPU cores. The heatmap tests need a detector that has learned the sign; how well the project's own
models learn it is the evaluation's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.imaging import model_image
from pipelines.synth.params import SynthParams
from pipelines.synth.probes import Probe, compression_probe

FOV_MM, MATRIX = 130.0, 128
CLIP = (0.5, 99.5)


@dataclass(frozen=True)
class ProbeDetector:
    weights: Path
    imgsz: int


def probe(params: SynthParams, seed: int, level: int | None, severity: str = "moderate") -> Probe:
    """One zoomed phantom (the training images' geometry)."""
    return compression_probe(params, seed, level, severity=severity, fov_mm=FOV_MM, matrix=MATRIX)


def probe_image(p: Probe) -> np.ndarray:
    return model_image(p.pixels, CLIP)


def _write(split_dir: Path, name: str, p: Probe) -> None:
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(split_dir / "images" / f"{name}.png"), probe_image(p))
    h, w = p.pixels.shape
    lines = []
    for k, (x0, y0, x1, y1) in enumerate(p.boxes):
        if np.isnan(x0) or k != p.compressed_level:
            continue
        cls = 1
        lines.append(f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    (split_dir / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def train_probe_detector(
    workdir: Path, params: SynthParams, *, images: int = 200, epochs: int = 30, batch: int = 8, first_seed: int = 1000
) -> ProbeDetector:
    """Train on `images` phantoms (seeds first_seed..; levels cycling over C2-C3..C7-T1 and none; grades 2 and 3)."""
    from ultralytics import YOLO

    from pipelines import runtime

    runtime.configure_ultralytics(workdir / "state")
    data = workdir / "data"
    for i in range(images):
        seed = first_seed + i
        level = None if i % 7 == 6 else i % 7
        split = "val" if i % 8 == 7 else "train"
        _write(data / split, f"p{i:04d}", probe(params, seed, level, ("moderate", "severe")[i % 2]))
    yaml_path = data / "data.yaml"
    yaml_path.write_text(f"path: {data}\ntrain: train/images\nval: val/images\nnames:\n  0: normal\n  1: compression\n")
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(yaml_path), project=str(workdir / "runs"), name="probe", exist_ok=True, epochs=epochs, imgsz=MATRIX,
        batch=batch, seed=0, deterministic=True, device="cpu", workers=0, amp=False, plots=False, verbose=False,
        fliplr=0.0,
    )  # fmt: skip
    return ProbeDetector(workdir / "runs" / "probe" / "weights" / "best.pt", MATRIX)
