"""Cost of monitoring's feature rows against the quick read alone, in one run (issue 12's goal: within 1.1x).

    .venv/bin/python benchmarks/monitor_features.py [--rounds 3]

Needs a registered model (`make demo`, `cordwatch approve 1 ...`) and the SYNTHETIC cohort's external site. Both
sides read the same studies from disk through `read_studies` and run the same quick read (`Predictor.study`, JSON
results, no DICOM results); the feature side also keeps the forward state and computes each study's row and its
box rows (`monitoring.collect.collect_features`, a fresh store each round so nothing is skipped).
Timed: the study loop of each (`predict_studies`' own clock: reading, detection, results, and on the feature side
the rows), not the one-off set-up (model lookup, weights, key). Best of `--rounds` interleaved rounds, per study.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from monitoring.collect import collect_features
from pipelines import runtime
from pipelines.config import load_params
from pipelines.predict.inputs import group_by_study, read_studies
from pipelines.predict.model import resolve_model
from pipelines.predict.run import Predictor, RunOptions, predict_studies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    model = resolve_model(params.predict.model_uri, params)
    site = next(p for p in (params.paths.synth_dir / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    groups = group_by_study(site)
    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-monitor-bench-"))
    quick_s, features_s = [], []
    try:
        predictor = Predictor(model, params, RunOptions("quick", tmp / "quick", dicom_results=False))
        for r in range(args.rounds):
            studies = read_studies(site, groups, predictor.checks, model.clip_percentiles)
            quick_s.append(predict_studies(studies, predictor, total=len(groups))[1]["seconds"])
            counts = collect_features(params, site, store=tmp / f"store{r}", out_dir=tmp / "features", model=model)
            features_s.append(counts["seconds"])
        predictor.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(groups)
    q, f = min(quick_s) / n * 1000, min(features_s) / n * 1000
    print(f"model {model.name} v{model.version}; SYNTHETIC external site, {n} studies; best of {args.rounds} rounds")
    print("| per study (ms) | quick read | quick read + feature row | ratio |")
    print("|---|---|---|---|")
    print(f"| from disk, JSON results | {q:.1f} | {f:.1f} | {f / q:.2f}x |")


if __name__ == "__main__":
    main()
