"""Speed of `cordwatch predict`, side by side in one run: same weights, images and input size.

    .venv/bin/python benchmarks/predict.py [--model models:/cordwatch-detector@champion] [--studies 200]

Needs a registered model (`make demo`) and the SYNTHETIC cohort's external site (data/synth/dicom). Figures:
1. quick read per image against bare `YOLO(weights).predict(image)`: both get the same decoded 8-bit images in
   memory (DICOM decoding and windowing are the same code on both sides and left out); median over 3 interleaved
   rounds of every image. Goal: at most 1.10x.
2. xai against quick, per image: detection plus one map per kept box (HiResCAM, one batched backward), against
   detection alone; then per study through `Predictor.study` (JSON, an overlay PNG per box), without and with
   the DICOM results (SR, a secondary capture per box). Goal for xai: at most 1.5x.
3. auto against quick on a mix of studies, per study through `Predictor.study`: studies sorted by the quick read
   into confident-negative, positive and uncertain, mixed 60/20/20 (a screening worklist where most studies are
   negative; the SYNTHETIC external site has few negatives, so they recur). auto maps only the boxes a reader would
   question (compression boxes, boxes in the uncertainty band). Goal: within 1.1x of quick.
4. `run_predict` over a folder of N studies (the external site's studies copied with new UIDs), quick mode, with
   its progress line: studies and images per second, and resident memory (current, and the process's peak so
   far, which includes the earlier parts of this script) after 50 and after N studies.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.uid import generate_uid

from pipelines import runtime
from pipelines.config import load_params
from pipelines.ingest.files import ImageChecks
from pipelines.predict.inputs import StudyInput, group_by_study, read_studies
from pipelines.predict.model import resolve_model
from pipelines.predict.run import Predictor, RunOptions, run_predict
from pipelines.progress import Progress


def _per_image(fn, images: list[np.ndarray], rounds: int = 3) -> float:
    times: list[float] = []
    for _ in range(rounds):
        for im in images:
            t0 = time.perf_counter()
            fn(im)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _per_study(predictor: Predictor, studies: list[StudyInput], rounds: int = 2) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for s in studies:
            predictor.study(s)
        best = min(best, time.perf_counter() - t0)
    return best / len(studies) * 1000


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MB."""
    status = Path("/proc/self/status").read_text().splitlines()
    current = next((float(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), float("nan"))
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _copy_studies(source: list[Path], dest: Path, n: int) -> None:
    """n studies: the source studies' files again and again, each copy with new study/series/SOP UIDs."""
    by_study: dict[str, list[Path]] = {}
    for p in source:
        by_study.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID), []).append(p)
    originals = list(by_study.values())
    for i in range(n):
        new_study, series = generate_uid(), {}
        for p in originals[i % len(originals)]:
            ds = pydicom.dcmread(p)
            ds.StudyInstanceUID = new_study
            ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            out = dest / f"study{i:04d}" / f"{ds.SOPInstanceUID}.dcm"
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out, enforce_file_format=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--studies", type=int, default=200, help="studies in the throughput folder")
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    from ultralytics import YOLO

    model = resolve_model(args.model or params.predict.model_uri, params)
    site = next(p for p in (params.paths.synth_dir / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    checks = ImageChecks.from_params(params.ingest)
    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-bench-"))
    try:
        studies = list(read_studies(site, group_by_study(site), checks, model.clip_percentiles))
        images = [im.pixels for s in studies for im in s.images]
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
              f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}")  # fmt: skip
        print(f"model {model.name} v{model.version}, imgsz {model.imgsz}, conf {model.conf}; SYNTHETIC external site: "
              f"{len(studies)} studies, {len(images)} images\n")  # fmt: skip

        def predictor(mode: str, dicom: bool) -> Predictor:
            return Predictor(model, params, RunOptions(mode, tmp / f"out-{mode}-{dicom}", dicom))

        quick = predictor("quick", False)
        detector = quick.detector
        bare = YOLO(str(model.weights))
        bare.predict(images[0], imgsz=model.imgsz, conf=model.conf, device="cpu", verbose=False)  # warm up both
        detector.detect([images[0]])
        t_bare = _per_image(
            lambda im: bare.predict(im, imgsz=model.imgsz, conf=model.conf, device="cpu", verbose=False), images
        )
        t_quick = _per_image(lambda im: detector.detect([im]), images)

        def detect_and_explain(im: np.ndarray) -> None:
            boxes, states = detector.detect([im], keep_state=True)
            detector.explain(states[0], boxes[0], params.predict.xai.method)

        t_xai = _per_image(detect_and_explain, images)
        boxes_per_image = np.mean([len(detector.detect([im])[0][0]) for im in images])
        print("| per image (ms, median) | bare YOLO.predict | quick | xai (maps) | quick / bare | xai / quick |")
        print("|---|---|---|---|---|---|")
        print(f"| detection | {t_bare:.1f} | {t_quick:.1f} | {t_xai:.1f} | {t_quick / t_bare:.2f}x | "
              f"{t_xai / t_quick:.2f}x ({boxes_per_image:.1f} boxes/image) |\n")  # fmt: skip

        rows = []
        for dicom in (False, True):
            q = _per_study(predictor("quick", dicom), studies)
            x = _per_study(predictor("xai", dicom), studies)
            rows.append((dicom, q, x))
        print("| per study (ms), Predictor.study | quick | xai | xai / quick |")
        print("|---|---|---|---|")
        for dicom, q, x in rows:
            label = "JSON + overlays + DICOM SR and captures" if dicom else "JSON + overlay PNGs"
            print(f"| {label} | {q:.0f} | {x:.0f} | {x / q:.2f}x |")

        triaged = []
        for s in studies:
            res = quick.study(s)
            t = res["triage"]
            kind = "positive" if t["compression_suspected"] else ("uncertain" if t["uncertain"] else "negative")
            triaged.append((kind, s))
        pools = {k: [s for kk, s in triaged if kk == k] for k in ("negative", "positive", "uncertain")}
        rnd = random.Random(0)
        mix: list[StudyInput] = []
        for kind, share in (("negative", 0.6), ("positive", 0.2), ("uncertain", 0.2)):
            if pools[kind]:
                mix += [rnd.choice(pools[kind]) for _ in range(round(50 * share))]
        counts = {k: len(v) for k, v in pools.items()}
        print(f"\nauto mix of {len(mix)} studies from pools {counts} (negative 60%, positive 20%, uncertain 20%):")
        for dicom in (False, True):
            q = _per_study(predictor("quick", dicom), mix)
            a = _per_study(predictor("auto", dicom), mix)
            label = "with DICOM results" if dicom else "without DICOM results"
            print(f"| auto / quick, {label} | {q:.0f} ms | {a:.0f} ms | {a / q:.2f}x |")

        folder = tmp / "folder"
        _copy_studies(sorted(site.rglob("*.dcm")), folder, args.studies)
        rss: dict[int, tuple[float, float]] = {}

        def progress(p: Progress) -> None:
            if p.done in (50, args.studies):
                rss[p.done] = _rss_mb()
            if p.done % 50 == 0:
                print(f"  predict: {p.done}/{p.total} studies, {p.detail}", flush=True)

        for dicom in (False, True):
            params_run = params.model_copy(
                update={"predict": params.predict.model_copy(update={"dicom_results": dicom})}
            )
            t0 = time.perf_counter()
            summary = run_predict(
                params_run, folder, out_dir=tmp / f"run-{dicom}", mode="quick", model_uri=args.model, progress=progress
            )
            wall = time.perf_counter() - t0
            label = "with DICOM SR" if dicom else "JSON only"
            print(f"run_predict quick over {summary['studies']} studies ({label}): {wall:.1f} s wall, "
                  f"{summary['studies'] / wall:.2f} studies/s, {summary['images'] / wall:.2f} images/s; "
                  f"resident memory (current / process peak) {rss[50][0]:.0f} / {rss[50][1]:.0f} MB after 50 studies, "
                  f"{rss[args.studies][0]:.0f} / {rss[args.studies][1]:.0f} MB after {args.studies}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
