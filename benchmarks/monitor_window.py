"""One window of 10,000 studies' stored features compared with the reference (issue 12's goal: under 30 s on 2 cores).

    .venv/bin/python benchmarks/monitor_window.py [--studies 10000]

SYNTHETIC: the rows are the demo project's training-reference rows (`training_reference` on `models/final.pt`),
resampled with replacement to `--studies` rows with 1 % Gaussian jitter on the numbers; half are relabelled to the
external site and its 3 T scanner so the window has several segments, as a multi-site deployment would.

Timed, in one run on the same rows:
- bare: one Evidently `Report([DataDriftPreset()])` over the window's `meta_`/`img_`/`out_` columns (what Evidently
  does by default; no segments, no embedding, no storage);
- cordwatch, decisions only: `analyse_window(report=False)` (every segment, every column test and the embedding
  classifier);
- cordwatch, as `cordwatch monitor` runs a window: `monitor_windows` (decisions, one Evidently snapshot per segment,
  each stored in the workspace and saved as HTML and JSON).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from monitoring.collect import FEATURES_FILE
from monitoring.run import NUMERICAL, analyse_window, monitor_windows
from pipelines import runtime
from pipelines.config import load_params
from pipelines.predict.features import META_CATEGORICAL
from pipelines.predict.reference import training_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--studies", type=int, default=10_000)
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    paths = params.paths
    reference = training_reference(
        paths.ingested_dir, paths.splits_file, paths.final_weights, imgsz=params.train.profile(params.profile).imgsz,
        conf=params.evaluate.operating_conf, iou=params.predict.iou, band=params.predict.uncertainty_band,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    window = reference.sample(args.studies, replace=True, random_state=0).reset_index(drop=True)
    numbers = [c for c in window.columns if c.startswith(("img_", "emb_")) or c == "out_max_confidence"]
    window[numbers] = window[numbers] * rng.normal(1.0, 0.01, (len(window), len(numbers)))
    half = window.index >= len(window) // 2
    window.loc[half, ["meta_site", "meta_manufacturer", "meta_field_strength"]] = ["ext", "Philips", 3.0]
    window["study_key"] = [f"S{i}" for i in range(len(window))]
    window["monitored_at"] = np.arange(len(window), dtype=float)
    print(f"window: {len(window)} studies (resampled SYNTHETIC rows), reference {len(reference)} training studies")

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*NUMERICAL, *META_CATEGORICAL]
    definition = DataDefinition(numerical_columns=list(NUMERICAL), categorical_columns=list(META_CATEGORICAL))
    t = time.perf_counter()
    Report([DataDriftPreset()]).run(
        Dataset.from_pandas(window[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    bare = time.perf_counter() - t

    t = time.perf_counter()
    decided = analyse_window(reference, window, alpha=params.monitor.alpha, report=False)
    decisions = time.perf_counter() - t

    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-window-bench-"))
    try:
        (tmp / "store").mkdir()
        window.to_parquet(tmp / "store" / FEATURES_FILE)
        t = time.perf_counter()
        monitor_windows(
            tmp / "store", reference, workspace=tmp / "ws", reports=tmp / "reports", size=len(window),
            alpha=params.monitor.alpha,
        )  # fmt: skip
        full = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"segments compared: {len(decided)} ({', '.join(tag for tag, _, _ in decided)})")
    print(f"bare Evidently DataDriftPreset, one report:      {bare:6.1f} s")
    print(f"cordwatch decisions (all segments, embedding):   {decisions:6.1f} s  ({decisions / bare:.2f}x bare)")
    print(f"cordwatch monitor window (+ snapshots, stored):  {full:6.1f} s  ({full / bare:.2f}x bare; goal < 30 s)")


if __name__ == "__main__":
    main()
