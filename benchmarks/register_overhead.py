"""What `cordwatch register` adds after `cordwatch evaluate`, measured side by side on a finished project, in one run.

    .venv/bin/python benchmarks/register_overhead.py [--project .] [--params params.yaml]

The project must have run through evaluate (`make demo`). Its data, splits, models and reports are copied into a
temporary folder with a fresh SQLite registry, so the project's own registry is never touched. Then, timed with
the same params on this machine (gates relaxed so every version passes: the thresholds do not change the work; the
stage functions only: no Prefect server, no CLI start-up, in both):
1. the evaluate stage as its flow runs it: `run_evaluate` (predict on both test sets, score model and readers,
   write the reports) and `log_evaluation` (its MLflow run): the baseline;
2. `run_register` with no champion (gates, pyfunc model, model card, version, aliases);
3. `run_register` again after approving version 1: the champion comparison reuses the predictions version 1 stored
   at registration (same external set: a paired bootstrap only);
4. `run_register` with the champion's stored predictions declared stale (its external-set tag changed), so the
   champion is re-predicted with its own weights: the cost after the external set changes.
Goal (issue 10): registration under 10% of evaluate's time on the demo profile.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _copy_project(src: Path, params_file: Path, dest: Path) -> Path:
    """The stage outputs register reads, under `dest` with the default layout and a fresh registry."""
    from pipelines.config import load_params
    from pipelines.settings import PathsParams

    params = load_params(params_file)
    paths, moved = params.paths, PathsParams.under(dest)
    for source, target in (
        (paths.ingested_dir, moved.ingested_dir),
        (paths.models_dir, moved.models_dir),
        (paths.reports_dir, moved.reports_dir),
    ):
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("runs"))
    shutil.copy2(paths.splits_file, moved.splits_file)
    raw = yaml.safe_load(params_file.read_text())
    raw["paths"] = moved.model_dump(mode="json")
    # Gates that pass whatever the model, so the champion paths can be timed (thresholds do not change the work).
    raw["registry"]["gates"].update(min_external_map50_lower=0.0, max_subgroup_shortfall=1.0, noninferiority_margin=1.0)
    out = dest / "params.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=REPO, help="a project folder that has run through evaluate")
    ap.add_argument("--params", type=Path, default=None, help="its params.yaml (default: PROJECT/params.yaml)")
    args = ap.parse_args(argv)
    params_file = (args.params or args.project / "params.yaml").resolve()

    import os

    os.chdir(args.project)  # params' relative paths are relative to the project
    from pipelines import runtime
    from pipelines.config import load_params

    with tempfile.TemporaryDirectory() as tmp:
        copied = _copy_project(args.project, params_file, Path(tmp))
        params = load_params(copied)
        if not params.paths.evaluation_metrics.is_file():
            raise SystemExit(f"{args.project} has no evaluation: run `make demo` first")
        runtime.configure(params.paths.state_dir)
        from pipelines.evaluate.run import run_evaluate
        from pipelines.register.registry import Registry
        from pipelines.register.run import EXTERNAL_SET_TAG, open_registry, run_register

        def timed(label: str, fn: Callable[[], object]) -> float:
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            print(f"{label:<58} {seconds:7.1f} s", flush=True)
            return seconds

        print(f"profile {params.profile}, project {args.project.resolve()}; stage functions, no Prefect/CLI start-up")
        from flows.tracking import log_evaluation

        evaluate = timed(
            "evaluate (baseline): run_evaluate + log_evaluation", lambda: log_evaluation(params, run_evaluate(params))
        )
        first = timed("register, no champion", lambda: run_register(params))
        registry: Registry = open_registry(params)
        registry.approve("1", "benchmark", "to time the champion comparison")
        stored = timed("register, champion's stored predictions (same set)", lambda: run_register(params))
        registry.approve("2", "benchmark", "to time the re-prediction path")
        registry.client.set_model_version_tag(registry.name, "2", EXTERNAL_SET_TAG, "another-set")
        repredict = timed("register, champion re-predicted (external set changed)", lambda: run_register(params))
        print()
        for label, seconds in (("no champion", first), ("stored", stored), ("re-predicted", repredict)):
            print(f"register / evaluate, {label:<13} {seconds / evaluate:6.1%}  (goal < 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
