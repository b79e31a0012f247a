"""Which class-activation map explains a detection best: localisation and deletion, measured on controlled phantoms.

    .venv/bin/python benchmarks/cam_localisation.py [--model models:/cordwatch-detector@champion] [--seeds 12]

SYNTHETIC: each probe is one phantom patient rendered mid-sagittal (`pipelines.synth.probes`) with one disc
protrusion (Kang grade 2) at C3-C4, C5-C6 or C6-C7 and every other level normal. A probe counts when the model
keeps a `compression` box with IoU >= 0.5 against the true level box; each map below is that box's map.

Figures, per map variant (method x target layers):
- energy in box: share of the map's mass inside the true box, and inside the box grown by 8 source pixels each
  side (one P3 cell at the demo's 224 input); mean and minimum over probes. `uniform` (a flat map) is the floor:
  the box's share of the image.
- pointing: share of probes whose map peak lies inside the box grown by 8 pixels.
- deletion: the box's confidence (before, then) after replacing the N highest-map pixels (N = the true box's area)
  by a Gaussian blur of the image (sigma 6 px), against N random pixels of the image (mean of 5 draws); the
  confidence is that of the best same-class box with IoU >= 0.5 against the original (0 when none is left). A
  map that explains drops it more than random. Blur, not black: on T2 a compressed level is the one whose
  bright CSF went dark, so setting pixels to 0 imitates compression instead of removing evidence.
- ms: time of the explanation per probe image on this machine (the forward pass excluded).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipelines import runtime
from pipelines.config import load_params
from pipelines.imaging import model_image
from pipelines.predict import cam
from pipelines.predict.detector import Detector
from pipelines.predict.model import resolve_model
from pipelines.synth.probes import compression_probe

LEVELS = (1, 3, 4)  # C3-C4, C5-C6, C6-C7
MARGIN_PX = 8
VARIANTS = (
    ("hirescam", None, "Detect inputs P3-P5 (16,19,22)"),
    ("gradcam", None, "Detect inputs P3-P5 (16,19,22)"),
    ("hirescam", [13], "neck P4 (13)"),
    ("hirescam", [4, 6], "backbone P3+P4 (4,6)"),
    ("eigencam", None, "Detect inputs P3-P5 (16,19,22)"),
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def confidence_of(detector: Detector, image: np.ndarray, box: np.ndarray, cls: int) -> float:
    boxes, _ = detector.detect([image])
    best = 0.0
    for k in range(len(boxes[0])):
        if boxes[0].class_index[k] == cls and iou(boxes[0].xyxy[k], box) >= 0.5:
            best = max(best, float(boxes[0].confidence[k]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model URI or .pt (default: params predict.model_uri)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seeds", type=int, default=12, help="phantom patients (x3 levels)")
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    torch.set_num_threads(2)
    model = resolve_model(args.model or params.predict.model_uri, params)
    print(f"model {model.name} version {model.version}, imgsz {model.imgsz}, conf {model.conf}")
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    detectors = {}
    for _, layers, _ in VARIANTS:
        key = tuple(layers) if layers else None
        if key not in detectors:
            detectors[key] = Detector(model.weights, imgsz=model.imgsz, conf=model.conf, target_layers=layers)
    base = detectors[None]
    rng = np.random.default_rng(2026)
    probes = []
    for seed in range(args.seeds):
        for level in LEVELS:
            probe = compression_probe(params.synth, seed, level)
            image = model_image(probe.pixels, model.clip_percentiles)
            boxes, _ = base.detect([image])
            match = [
                k
                for k in range(len(boxes[0]))
                if model.class_names[int(boxes[0].class_index[k])] == "compression"
                and iou(boxes[0].xyxy[k], probe.compressed_box) >= 0.5
            ]
            if match:
                k = max(match, key=lambda j: boxes[0].confidence[j])
                probes.append((probe, image, k))
    n_all = args.seeds * len(LEVELS)
    print(f"SYNTHETIC probes: {len(probes)} of {n_all} compressed levels detected (IoU >= 0.5) and explained\n")
    print("| map | target | energy in box | within 8 px | pointing | confidence -> deleted: map / random | ms |")
    print("|" + "---|" * 7)
    rows = [(*v, False) for v in VARIANTS] + [("uniform", None, "-", True)]
    for method, layers, target, uniform in rows:
        det = detectors[tuple(layers) if layers else None]
        inside, near, pointing, before, after_map, after_rand, ms = [], [], [], [], [], [], []
        for probe, image, _k in probes:
            boxes, states = det.detect([image], keep_state=True)
            b = boxes[0]
            k = max(
                (j for j in range(len(b)) if iou(b.xyxy[j], probe.compressed_box) >= 0.5 and b.class_index[j] == 1),
                key=lambda j: b.confidence[j],
            )
            if uniform:
                heat = np.ones(image.shape[:2], np.float32)
            else:
                t0 = time.perf_counter()
                heat = det.explain(states[0], b, method)[k]
                ms.append((time.perf_counter() - t0) * 1000)
            truth = probe.compressed_box
            inside.append(cam.energy_inside(heat, truth))
            near.append(cam.energy_inside(heat, truth, MARGIN_PX))
            r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
            pointing.append(
                truth[0] - MARGIN_PX <= c <= truth[2] + MARGIN_PX and truth[1] - MARGIN_PX <= r <= truth[3] + MARGIN_PX
            )
            n = int((truth[2] - truth[0]) * (truth[3] - truth[1]))
            if not uniform:
                before.append(float(b.confidence[k]))
                top = np.argsort(heat.ravel())[::-1][:n]
                after_map.append(confidence_of(det, cam.remove_evidence(image, top), b.xyxy[k], 1))
                draws = [rng.choice(heat.size, n, replace=False) for _ in range(5)]
                randoms = [confidence_of(det, cam.remove_evidence(image, d), b.xyxy[k], 1) for d in draws]
                after_rand.append(float(np.mean(randoms)))
        deletion = (
            f"{np.mean(before):.2f} -> {np.mean(after_map):.2f} / {np.mean(after_rand):.2f}" if after_map else "-"
        )
        print(
            f"| {method} | {target} | {np.mean(inside):.2f} (min {np.min(inside):.2f}) | {np.mean(near):.2f} "
            f"(min {np.min(near):.2f}) | {np.mean(pointing):.2f} | {deletion} | "
            f"{np.mean(ms):.1f} |" if ms else
            f"| {method} | {target} | {np.mean(inside):.3f} | {np.mean(near):.3f} | {np.mean(pointing):.2f} | - | - |"
        )  # fmt: skip


if __name__ == "__main__":
    main()
