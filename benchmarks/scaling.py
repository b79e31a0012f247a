"""What one machine handles: studies per hour ingested, predicted and monitored, here and on a 2-worker Dask cluster.

    .venv/bin/python benchmarks/scaling.py [--model URI] [--workers 2] [--patients 800]

Needs a model (default: the registry's version 1, as `make demo` leaves it; a `.pt` file works too). It generates a
SYNTHETIC cohort of `--patients` patients (the demo profile's site mix and matrix size; not timed) and each stage
reads all of it with the stage's own entry point:
- ingest: `run_ingest` into a fresh folder (de-identification, checks, PNGs, tables; no annotations);
- predict: `run_predict` quick mode, JSON results and overlays, no DICOM SR (`predict.dicom_results` off: the SR
  costs about 0.2 s a study in pure Python, README "Explainable inference");
- monitor: `collect_features`, the quick read plus a feature row per study, into a fresh store.
`local` is `execution.engine: local` (ingest's pool of `ingest.workers`); `dask` is a `distributed.LocalCluster` of
`--workers` processes started inside the timed call, as `cordwatch` starts it. Wall time of each call, start-up of
the cluster included; a study is one of the cohort's (about 3 sagittal images). One run, same files on both sides.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prefect.testing.utilities import prefect_test_harness

from monitoring.collect import collect_features
from pipelines import runtime
from pipelines.config import Params, load_params
from pipelines.ingest.core import run_ingest
from pipelines.predict.inputs import group_by_study
from pipelines.predict.model import resolve_model
from pipelines.predict.run import run_predict
from pipelines.settings import ExecutionParams


def write_cohort(params: Params, patients: int, into: Path) -> Path:
    """A SYNTHETIC cohort of `patients` (the demo's site mix and matrix size) under `into`; its DICOM folder."""
    from pipelines.synth.params import SynthProfile
    from pipelines.synth.run import run_synth

    demo = params.synth.profile("demo")
    share = {site: n / sum(demo.patients.values()) for site, n in demo.patients.items()}
    sized = SynthProfile(patients={site: max(1, round(patients * f)) for site, f in share.items()},
                         matrix_scale=demo.matrix_scale)  # fmt: skip
    synth = params.synth.model_copy(update={"profiles": {**params.synth.profiles, "scaling": sized}})
    run_synth(params.model_copy(update={"profile": "scaling", "synth": synth}), into)
    return into / "dicom"


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_all(params: Params, source: Path, model_uri: str, tmp: Path, engine: str, workers: int) -> dict[str, float]:
    execution = ExecutionParams(engine=engine, n_workers=workers)  # type: ignore[arg-type]
    paths = params.paths.model_copy(update={"state_dir": tmp / f"state-{engine}"})
    run = params.model_copy(
        update={
            "execution": execution,
            "paths": paths,
            "predict": params.predict.model_copy(update={"dicom_results": False}),
        }
    )
    model = resolve_model(model_uri, run)
    return {
        "ingest": timed(lambda: run_ingest(run, source, tmp / f"ingested-{engine}")),
        "predict": timed(lambda: run_predict(run, source, out_dir=tmp / f"predict-{engine}", mode="quick",
                                             model_uri=model_uri)),
        "monitor": timed(lambda: collect_features(run, source, store=tmp / f"store-{engine}",
                                                  out_dir=tmp / f"monitor-{engine}", model=model)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--model", default="models:/cordwatch-detector/1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patients", type=int, default=800, help="SYNTHETIC patients generated (one study each)")
    args = ap.parse_args()
    params = load_params(args.params)
    runtime.configure(params.paths.state_dir)
    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-scaling-"))
    try:
        source = write_cohort(params, args.patients, tmp / "cohort")
        studies = len(group_by_study(source))
        files = sum(1 for p in source.rglob("*") if p.is_file())
        with prefect_test_harness(server_startup_timeout=120):  # one Prefect server for both sides, not timed
            local = run_all(params, source, args.model, tmp, "local", args.workers)
            dask = run_all(params, source, args.model, tmp, "dask", args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"SYNTHETIC cohort: {studies} studies, {files} files; model {args.model}; ingest.workers "
          f"{params.ingest.workers}; Dask: LocalCluster of {args.workers} processes, start-up included")  # fmt: skip
    w = args.workers
    print(f"| stage | local s | local studies/h | dask ({w} workers) s | dask studies/h | dask / local time |")
    print("|---|---|---|---|---|---|")
    for stage in ("ingest", "predict", "monitor"):
        a, b = local[stage], dask[stage]
        print(f"| {stage} | {a:.1f} | {studies / a * 3600:,.0f} | {b:.1f} | {studies / b * 3600:,.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
