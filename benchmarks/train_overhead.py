"""Wall time of `cordwatch train` (Prefect flow + MLflow runs + our callbacks) against bare ultralytics training of the
same folds with the same settings, in one run.

    .venv/bin/python benchmarks/train_overhead.py                    # the demo's training: 5 folds x 16 at 224
    .venv/bin/python benchmarks/train_overhead.py --folds 2 --epochs 6 --imgsz 160   # a few minutes

Goal (issue 4): at most 1.05x. Each side runs in a fresh subprocess from the same prepared data (SYNTHETIC demo
cohort: synth -> ingest -> split -> validate, done once and not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipelines.config import PathsParams

REPO = Path(__file__).resolve().parents[1]


def _params(root: Path, folds: int, epochs: int, imgsz: int) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "demo"
    raw["paths"] = PathsParams.under(root).model_dump(mode="json")
    raw["train"]["profiles"]["demo"] = {"imgsz": imgsz, "epochs": epochs, "batch": 8, "folds": list(range(folds))}
    raw["train"]["parallel_folds"] = 1  # like for like: the bare side trains one fold after another
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BARE = """
import sys, time, pandas as pd
from pathlib import Path
from pipelines import runtime
from pipelines.config import load_params
from pipelines.labels import reference_boxes
from pipelines.train.yolo_data import build_view
p = load_params(Path(sys.argv[1]))
runtime.configure_ultralytics(p.paths.state_dir)
from ultralytics import YOLO
prof = p.train.profile(p.profile)
images = pd.read_parquet(p.paths.ingested_dir / "images.parquet")
ref = reference_boxes(pd.read_parquet(p.paths.ingested_dir / "annotations.parquet"), p.readers.reference_level)
splits = pd.read_parquet(p.paths.splits_file)
cv = splits[splits.split == "cv"]
start = time.perf_counter()
for fold in prof.folds:
    parts = {"train": cv.loc[cv.fold != fold, "image_id"], "val": cv.loc[cv.fold == fold, "image_id"]}
    data = build_view(p.paths.state_dir / "bare" / f"fold{fold}", p.paths.ingested_dir, images, ref, parts)
    YOLO(p.train.model).train(data=str(data), project=str((p.paths.models_dir / "bare").resolve()), name=f"fold{fold}",
        exist_ok=True, epochs=prof.epochs, imgsz=prof.imgsz, batch=prof.batch, seed=p.train.seed, deterministic=True,
        device=p.train.device, workers=p.train.workers, patience=p.train.patience, optimizer=p.train.optimizer,
        nbs=p.train.nominal_batch or prof.batch, amp=False, plots=True, verbose=False, **p.train.augment)
print(time.perf_counter() - start)
"""


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)  # the demo profile's training (about 13 minutes a side)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=224)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cordwatch-train-bench-"))
    env = {**os.environ, "CORDWATCH_PSEUDONYM_KEY": "benchmark-key-not-secret-0123456789"}
    cli = str(Path(sys.executable).parent / "cordwatch")
    try:
        params = _params(root, args.folds, args.epochs, args.imgsz)
        for stage in ("synth", "ingest", "split", "validate"):
            subprocess.run([cli, stage, "--params", str(params)], check=True, cwd=REPO, env=env, capture_output=True)
        bare_total = _timed([sys.executable, "-c", BARE, str(params)], env)
        cw_total = _timed([cli, "train", "--params", str(params)], env)
        summary = json.loads(PathsParams.under(root).summary_file("train").read_text())
        print(f"SYNTHETIC demo cohort, {args.folds} folds x {args.epochs} epochs, imgsz {args.imgsz}, CPU")
        print(f"bare ultralytics (views + YOLO.train, 1 process):      {bare_total:7.1f} s")
        print(f"cordwatch train (Prefect flow, MLflow runs, callbacks): {cw_total:7.1f} s")
        print(f"overhead ratio cordwatch / bare: {cw_total / bare_total:.3f}  (goal <= 1.05)")
        print(f"(CV mAP50 of this short run: {summary['cv']['map50_min']:.3f}-{summary['cv']['map50_max']:.3f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
