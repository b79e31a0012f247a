"""Does monitoring catch drift, and only drift? Detection delay per scenario and false alarms with no change.

    .venv/bin/python benchmarks/drift.py [--seeds 3] [--before 25] [--after 75] [--window 25] [--null-windows 100]

SYNTHETIC: every study here is a phantom from the cohort generator (`monitoring/scenarios.yaml` says what each
scenario changes). Needs the demo project's ingested data and final weights (`make demo`).

What is measured, as `cordwatch monitor` decides (the same `analyse_window`, at `monitor.alpha` split over each
window's segments, without the Evidently snapshots the dashboard needs, which do not change a decision):
- the reference: the training studies' feature rows, made by `training_reference` from `models/final.pt`
  (what registration stores with a model);
- per scenario and seed: `--before` unchanged dev-site studies, then `--after` changed ones (gradual scenarios
  ramp over them), quick-read in order into a fresh feature store, windows of `--window` studies;
- detection delay: studies after the change until the end of the first alerting window that holds changed
  studies (so the window size is its floor); median over seeds; "missed" when no window alerts;
- what alerted first: `category` (a value the reference never had: a new scanner model, software version, site),
  `metadata`, `image` or `outputs` (a KS or chi-square test on a `meta_`, `img_` or `out_` column), `embedding`
  (the classifier on the detector's pooled neck features). Image drift is `image` or `embedding`;
- false alarms: alerting windows per 100 windows of `no_change` studies (`--null-windows` windows, fresh seeds),
  plus any alert in a scenario's unchanged part.
Goal (issue 12): every real shift within 50 studies at one site; at most 5 false alarms per 100 windows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.collect import collect_features, read_store
from monitoring.run import analyse_window
from monitoring.scenarios import Scenario, generate_stream, load_scenarios
from monitoring.windows import ordered, windows
from pipelines import runtime
from pipelines.config import Params, load_params
from pipelines.predict.model import ModelRef, resolve_model
from pipelines.predict.reference import training_reference


def _kinds(results: list[Any]) -> set[str]:
    kinds = set()
    for _, _, r in results:
        if r.new_categories:
            kinds.add("category")
        for c in r.drifted_columns:  # meta_ -> metadata, img_ -> image, out_ -> outputs
            kinds.add({"meta": "metadata", "img": "image", "out": "outputs"}[c.column.split("_", 1)[0]])
        if r.embedding_drifted:
            kinds.add("embedding")
    return kinds


def _stream_rows(
    params: Params, model: ModelRef, scenario: Scenario, work: Path, *, before: int, after: int, batch: int, seed: int
) -> pd.DataFrame:
    """The feature rows of one generated stream, in the order monitoring read them."""
    scale = params.synth.profile(params.profile).matrix_scale
    stream = generate_stream(
        params.synth, scenario, work / "dicom", before=before, after=after, batch=batch, seed=seed, matrix_scale=scale
    )
    for b in stream:
        collect_features(params, b.dicom, store=work / "store", out_dir=work / "reads", model=model)
        shutil.rmtree(b.folder, ignore_errors=True)
    return ordered(read_store(work / "store"))


def _analyse(params: Params, reference: pd.DataFrame, rows: pd.DataFrame, size: int) -> list[tuple[Any, set[str]]]:
    """(window, kinds that alerted) per closed window."""
    out = []
    for w in windows(rows, size=size):
        results = analyse_window(reference, w.rows(rows), alpha=params.monitor.alpha, report=False)
        alerted = [x for x in results if x[2].alert]
        out.append((w, _kinds(alerted)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--before", type=int, default=25, help="unchanged studies before the change")
    ap.add_argument("--after", type=int, default=75, help="changed studies")
    ap.add_argument("--window", type=int, default=25, help="studies per window")
    ap.add_argument("--null-windows", type=int, default=100, help="no-change windows for the false-alarm rate")
    ap.add_argument("--scenarios", nargs="*", default=None, help="names (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    paths = params.paths
    imgsz = params.train.profile(params.profile).imgsz
    t0 = time.perf_counter()
    reference = training_reference(
        paths.ingested_dir, paths.splits_file, paths.final_weights, imgsz=imgsz, conf=params.evaluate.operating_conf,
        iou=params.predict.iou, band=params.predict.uncertainty_band, batch=params.predict.batch,
    )  # fmt: skip
    model = resolve_model(str(paths.final_weights), params)
    print(f"reference: {len(reference)} training studies ({time.perf_counter() - t0:.0f} s); SYNTHETIC phantoms")
    print(f"alpha {params.monitor.alpha} per window, windows of {args.window} studies, {args.seeds} seeds")
    scenarios = load_scenarios(base=params.synth)
    chosen = args.scenarios or [n for n in scenarios if n != "no_change"]
    figures: dict[str, Any] = {"window": args.window, "alpha": params.monitor.alpha, "scenarios": {}}
    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-drift-bench-"))
    try:
        print(f"{'scenario':30} {'delays (studies)':22} {'median':>7}  first alert by     pre-change alarms")
        for name in chosen:
            delays, kinds, early = [], [], 0
            for seed in range(args.seeds):
                work = tmp / f"{name}-{seed}"
                rows = _stream_rows(
                    params, model, scenarios[name], work, before=args.before, after=args.after, batch=args.window,
                    seed=1000 + seed,
                )  # fmt: skip
                found = None
                for w, alerted in _analyse(params, reference, rows, args.window):
                    if w.stop <= args.before:
                        early += bool(alerted)
                    elif alerted and found is None:
                        found = (w.stop - args.before, alerted)
                delays.append(found[0] if found else None)
                kinds.append(sorted(found[1]) if found else [])
                shutil.rmtree(work, ignore_errors=True)
            caught = [d for d in delays if d is not None]
            median = statistics.median(caught) if len(caught) == len(delays) else None
            shown = ", ".join("missed" if d is None else str(d) for d in delays)
            by = "; ".join("+".join(k) or "-" for k in kinds)
            print(f"{name:30} {shown:22} {median if median is not None else 'missed':>7}  {by:18} {early}")
            figures["scenarios"][name] = {
                "delays": delays, "median_delay": median, "first_alert_by": kinds, "pre_change_alarms": early,
                "expect_image_drift": scenarios[name].expect_image_drift,
            }  # fmt: skip
        if args.null_windows:
            work = tmp / "null"
            rows = _stream_rows(
                params, model, scenarios["no_change"], work, before=args.null_windows * args.window, after=0,
                batch=args.window, seed=5000,
            )  # fmt: skip
            analysed = _analyse(params, reference, rows, args.window)
            alarms = sum(bool(k) for _, k in analysed)
            named = ("category", "metadata", "image", "outputs", "embedding")
            by_kind = {k: sum(k in kinds for _, kinds in analysed) for k in named}
            rate = 100.0 * alarms / max(len(analysed), 1)
            print(f"no change: {alarms} alarms in {len(analysed)} windows = {rate:.1f} per 100 windows (goal <= 5); "
                  f"by kind {by_kind}")  # fmt: skip
            figures["false_alarms"] = {"windows": len(analysed), "alarms": alarms, "per_100": rate, "by": by_kind}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
