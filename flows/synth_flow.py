"""Prefect flow: write the SYNTHETIC two-centre DICOM cohort for a profile. Thin: one task around `run_synth`."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.progress import ProgressReporter
from pipelines.synth.run import SynthResult, run_synth


@task(name="generate-cohort", cache_policy=NO_CACHE)
def synth_task(params: Params, out_dir: Path | None, preview: bool = False) -> SynthResult:
    """Stream the cohort to disk, with progress (a bar on a terminal, log lines otherwise)."""
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_synth(params, out_dir, progress=reporter, preview=preview)


@flow(name="cordwatch-synth")
def synth_flow(params: Params, out_dir: Path | None = None, preview: bool = False) -> SynthResult:
    """Generate the synthetic cohort for the active profile (into `paths.synth_dir` unless `out_dir` is given),
    optionally with its contact sheet (`preview.png`)."""
    result = synth_task(params, out_dir, preview)
    get_run_logger().info(result.line())
    return result
