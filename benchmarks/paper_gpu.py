"""The `paper` profile on an accelerator machine: the study-sized SYNTHETIC cohort through synth, ingest, split,
cross-validated training (folds side by side on one GPU) and evaluation, with the study-vs-run table at the end.

    python benchmarks/paper_gpu.py --root /tmp/paper --out OUT_DIR [--epochs 150 --imgsz 640 --parallel 5]

Why a driver and not the `cordwatch` CLI: the lent GPU machines cannot reach a package registry, and the
orchestration and tracking stack (Prefect, MLflow, great-expectations) is too large to carry there. This calls the
same `pipelines` functions the flows wrap, in the same order, so the figures are the pipeline's; what it leaves out
is orchestration, tracking and the great-expectations contracts (the cohort is the generator's, which the CPU test
suite validates). Each step is skipped when its output exists, and folds resume from `last.pt`, so a call cut off
by a time limit continues where it stopped. It writes `<out>/paper_report.tar.gz` (reports/, fold results.csv) and
prints the report.

Where the project's environment cannot be installed (the lent H100 had PyTorch, pandas, scikit-learn, OpenCV and
matplotlib but no registry), wheels of ultralytics, ultralytics-thop, polars, polars-runtime-32, pydicom,
dicom-anonymizer, pydantic, pydantic-core, annotated-types and typing-inspection (60 MB) were enough:
`pip install --no-deps --target /tmp/site *.whl` and `PYTHONPATH=/tmp/site:<repo>`.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import time
from pathlib import Path

import yaml

from pipelines.config import PathsParams

REPO = Path(__file__).resolve().parents[1]


def _params_file(root: Path, args: argparse.Namespace) -> Path:
    """params.yaml with the paper profile, paths under `root`, and this machine's device and parallelism."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
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


def _archive(out: Path, root: Path, reports_dir: Path, models_dir: Path, timings: dict[str, float]) -> None:
    """reports/, the params used, each fold's results.csv and the final weights in one file to bring back."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "paper_gpu_timings.json").write_text(json.dumps(timings, indent=2))
    with tarfile.open(out / "paper_report.tar.gz", "w:gz") as tar:
        tar.add(reports_dir, arcname="reports")
        tar.add(root / "params.yaml", arcname="params.yaml")
        for csv in sorted((models_dir / "runs").glob("*/results.csv")):
            tar.add(csv, arcname=f"runs/{csv.parent.name}/results.csv")
        if (models_dir / "final.pt").is_file():
            tar.add(models_dir / "final.pt", arcname="models/final.pt")
    print(json.dumps(timings), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="working folder (data, models, reports)")
    parser.add_argument("--out", type=Path, required=True, help="where the report archive goes")
    parser.add_argument("--profile", default="paper", help="size profile (ci: a quick check on a CPU)")
    parser.add_argument("--device", default="0", help="ultralytics device (default: CUDA device 0)")
    parser.add_argument("--parallel", type=int, default=5, help="folds trained at once on the device")
    parser.add_argument("--loader-workers", type=int, default=3, help="dataloader workers per fold")
    parser.add_argument("--epochs", type=int, help="override the profile's train epochs")
    parser.add_argument("--imgsz", type=int, help="override the profile's train imgsz")
    parser.add_argument("--batch", type=int, help="override the profile's train batch")
    parser.add_argument("--stop-after", choices=["ingest", "train"], help="stop after this step (timing probes)")
    args = parser.parse_args()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    from pipelines import runtime
    from pipelines.config import load_params

    params = load_params(_params_file(root, args))
    paths = params.paths
    runtime.configure_ultralytics(paths.state_dir)

    import pandas as pd

    from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
    from pipelines.evaluate.run import evaluate_test_sets, write_evaluation
    from pipelines.ingest import run_ingest
    from pipelines.io import write_json, write_parquet_atomic
    from pipelines.split import make_splits, split_summary
    from pipelines.synth import generate_cohort
    from pipelines.train.core import train_cross_validated

    timings: dict[str, float] = {}

    def step(name: str, done: bool, fn: object) -> None:
        if done:
            print(f"[{name}] reused", flush=True)
            return
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}] {timings[name]} s", flush=True)

    annotations_csv = paths.synth_dir / "annotations.csv"
    step("synth", annotations_csv.is_file(), lambda: generate_cohort(params.synth, params.profile, paths.synth_dir))
    step(
        "ingest",
        (paths.ingested_dir / IMAGES_TABLE).is_file(),
        lambda: print(run_ingest(params, paths.synth_dir / "dicom", paths.ingested_dir, annotations_csv).line()),
    )
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)

    def split() -> None:
        splits = make_splits(images, annotations, params.split)
        write_parquet_atomic(splits, paths.splits_file)
        print(split_summary(splits).to_markdown(index=False))

    step("split", paths.splits_file.is_file(), split)
    if args.stop_after == "ingest":
        return
    splits = pd.read_parquet(paths.splits_file)

    def train() -> None:
        def progress(name: str, epoch: int, metrics: dict[str, float]) -> None:
            if epoch % 10 == 0:
                print(f"  {name} epoch {epoch}: mAP50 {metrics.get('metrics_mAP50', float('nan')):.3f}", flush=True)

        summary = train_cross_validated(
            params.train, params.profile, paths.ingested_dir, splits, images, annotations,
            paths.state_dir / "yolo", paths.models_dir, log=progress,
        )  # fmt: skip
        write_json(paths.reports_dir / "train" / "summary.json", summary.report())
        print(summary.line(), flush=True)

    step("train", (paths.models_dir / "final.pt").is_file(), train)
    if args.stop_after == "train":  # evaluate elsewhere: the archive carries final.pt
        _archive(args.out, root, paths.reports_dir, paths.models_dir, timings)
        return

    step("evaluate", False, lambda: write_evaluation(paths.reports_dir / "evaluation", *evaluate_test_sets(params)))
    _archive(args.out, root, paths.reports_dir, paths.models_dir, timings)
    print((paths.reports_dir / "evaluation" / "report.md").read_text())


if __name__ == "__main__":
    main()
