"""Production driver for an accelerator machine: the whole pipeline through the stages' run functions, without
Prefect, MLflow or (when absent) great-expectations; resumable, with the study-vs-run report at the end.

    python -m pipelines.driver --root /tmp/paper --out OUT_DIR [--profile paper --epochs 150 --imgsz 640 --parallel 5]

Why a driver and not the `cordwatch` CLI: the lent GPU machines cannot reach a package registry, and the
orchestration and tracking stack (Prefect, MLflow, great-expectations) is too large to carry there. This calls the
run functions the flows call (`run_synth`, `run_ingest`, `run_split`, `run_validate`, `run_train`,
`run_evaluate`), in the same order, so the files and figures are the pipeline's; what it leaves out is
orchestration, tracking, and the data contracts when great-expectations is not installed (the cohort is then the
generator's, which the CPU test suite validates). Each step is skipped when its output exists, and folds resume
from `last.pt`, so a call cut off by a time limit continues where it stopped. It writes `<out>/paper_report.tar.gz`
(reports/ with the step timings, the params used, each model's results.csv, the final weights) and prints the
report. Progress (epochs with each running fold's last validation mAP50, files per second, images predicted) is a
bar on a terminal and a line on stdout every `--progress-every` seconds otherwise.

Where the project's environment cannot be installed (the lent H100 had PyTorch, pandas, scikit-learn, OpenCV and
matplotlib but no registry), wheels of ultralytics, ultralytics-thop, polars, polars-runtime-32, pydicom,
dicom-anonymizer, pydantic, pydantic-core, annotated-types and typing-inspection (60 MB) were enough:
`pip install --no-deps --target /tmp/site *.whl` and `PYTHONPATH=/tmp/site:<repo>`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pipelines.config import Params

ARCHIVE = "paper_report.tar.gz"
TIMINGS = "driver_timings.json"


def _params_file(source: Path, root: Path, args: argparse.Namespace) -> Path:
    """`source` (params.yaml) with the profile, paths under `root`, and this machine's device and parallelism."""
    from pipelines.config import PathsParams

    raw = yaml.safe_load(source.read_text())
    raw["profile"] = args.profile
    raw["paths"] = PathsParams.under(root).model_dump(mode="json")
    raw["ingest"]["workers"] = os.cpu_count() or 1
    raw["train"]["device"] = args.device
    raw["train"]["workers"] = args.loader_workers
    raw["train"]["parallel_folds"] = args.parallel
    sizes = raw["train"]["profiles"][args.profile]
    for key in ("epochs", "imgsz", "batch"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _archive(out: Path, params: Params, timings: dict[str, float]) -> Path:
    """reports/, the params used, each model's results.csv and the final weights in one file to bring back."""
    paths = params.paths
    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    (paths.reports_dir / TIMINGS).write_text(json.dumps(timings, indent=2))
    archive = out / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(paths.reports_dir, arcname="reports")
        tar.add(paths.reports_dir.parent / "params.yaml", arcname="params.yaml")
        for csv in sorted((paths.models_dir / "runs").glob("*/results.csv")):
            tar.add(csv, arcname=f"runs/{csv.parent.name}/results.csv")
        if paths.final_weights.is_file():
            tar.add(paths.final_weights, arcname=f"models/{paths.final_weights.name}")
    print(json.dumps(timings), flush=True)
    return archive


def _step(timings: dict[str, float], name: str, done: bool, fn: Callable[[], Any]) -> None:
    """Run one stage unless its output exists; record its wall time."""
    if done:
        print(f"[{name}] reused", flush=True)
        return
    start = time.perf_counter()
    fn()
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"[{name}] {timings[name]} s", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.driver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="working folder (data, models, reports)")
    parser.add_argument("--out", type=Path, required=True, help="where the report archive goes")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml to start from")
    parser.add_argument("--profile", default="paper", help="size profile (ci: a quick check on a CPU)")
    parser.add_argument("--device", default="0", help="ultralytics device (default: CUDA device 0; or cpu)")
    parser.add_argument("--parallel", type=int, default=5, help="folds trained at once on the device")
    parser.add_argument("--loader-workers", type=int, default=3, help="dataloader workers per fold")
    parser.add_argument("--epochs", type=int, help="override the profile's train epochs")
    parser.add_argument("--imgsz", type=int, help="override the profile's train imgsz")
    parser.add_argument("--batch", type=int, help="override the profile's train batch")
    parser.add_argument("--stop-after", choices=["ingest", "train"], help="stop after this step (timing probes)")
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; return the exit status (1 when a data contract fails)."""
    args = parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    from pipelines import runtime
    from pipelines.config import load_params

    params = load_params(_params_file(args.params, root, args))
    paths = params.paths
    runtime.configure_ultralytics(paths.state_dir)

    from pipelines.contracts import IMAGES_TABLE
    from pipelines.evaluate.run import run_evaluate
    from pipelines.ingest import run_ingest
    from pipelines.progress import ProgressReporter
    from pipelines.split.run import run_split
    from pipelines.synth.run import run_synth
    from pipelines.train.run import run_train

    timings: dict[str, float] = {}
    reporter = ProgressReporter(lambda line: print(line, flush=True), interval_s=args.progress_every)

    def show(line: str) -> None:
        reporter.close()  # the stage's bar ends before its summary line
        print(line, flush=True)

    annotations_csv = paths.synth_dir / "annotations.csv"
    _step(timings, "synth", annotations_csv.is_file(), lambda: show(run_synth(params, progress=reporter).line()))
    ingest_progress = reporter.counter("ingest", "file")
    _step(
        timings,
        "ingest",
        (paths.ingested_dir / IMAGES_TABLE).is_file(),
        lambda: show(
            run_ingest(
                params, paths.synth_dir / "dicom", paths.ingested_dir, annotations_csv, progress=ingest_progress
            ).line()
        ),
    )
    _step(timings, "split", paths.splits_file.is_file(), lambda: show(run_split(params).to_markdown(index=False)))
    if args.stop_after == "ingest":
        return 0
    if not _validated(params, timings):
        return 1
    _step(timings, "train", paths.final_weights.is_file(), lambda: show(run_train(params, progress=reporter).line()))
    if args.stop_after == "train":  # evaluate elsewhere: the archive carries the final weights
        _archive(args.out, params, timings)
        return 0

    def evaluate() -> None:
        run_evaluate(params, progress=reporter)
        show(f"evaluation -> {paths.evaluation_dir}")

    _step(timings, "evaluate", False, evaluate)
    _archive(args.out, params, timings)
    print(paths.evaluation_report.read_text())
    return 0


def _validated(params: Params, timings: dict[str, float]) -> bool:
    """The data contracts, where great-expectations is installed (reused when an earlier call passed them)."""
    summary = params.paths.summary_file("validation")
    if summary.is_file() and json.loads(summary.read_text()).get("success") is True:
        print("[validate] reused", flush=True)
        return True
    if importlib.util.find_spec("great_expectations") is None:
        print("[validate] skipped: great-expectations is not installed here", flush=True)
        return True
    from pipelines.validate.run import run_validate

    start = time.perf_counter()
    report = run_validate(params)
    timings["validate"] = round(time.perf_counter() - start, 1)
    print(f"[validate] {timings['validate']} s: {report.message()}", flush=True)
    return report.success


if __name__ == "__main__":
    sys.exit(main())
