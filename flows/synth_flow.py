"""Prefect flow: write the SYNTHETIC two-centre DICOM cohort for a profile. Thin wrapper over `pipelines.synth`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from pipelines.config import Params
from pipelines.synth import CohortSummary, generate_cohort


@dataclass(frozen=True)
class SynthResult:
    """The generator's summary with the profile it was run for."""

    profile: str
    cohort: CohortSummary

    def line(self) -> str:
        c = self.cohort
        sites = ", ".join(
            f"{site}: {v.get('patients', 0)} patients / {v.get('images', 0)} images"
            for site, v in sorted(c.per_site.items())
        )
        return (
            f"synth [{self.profile}]: SYNTHETIC phantom cohort, {c.n_patients} patients, {c.n_images} images "
            f"({sites}), {c.n_distractor_files} distractor files, {c.n_annotations} reader boxes "
            f"in {c.seconds:.1f} s -> {c.out_dir}"
        )


@task(name="generate-cohort", cache_policy=NO_CACHE)
def synth_task(params: Params, out_dir: Path) -> CohortSummary:
    """Stream the cohort to disk with a progress bar."""
    with tqdm(total=0, unit="patient", desc="synth", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return generate_cohort(params.synth, params.profile, out_dir, progress=progress)


@flow(name="cordwatch-synth")
def synth_flow(params: Params, out_dir: Path) -> SynthResult:
    """Generate the synthetic cohort for the active profile."""
    result = SynthResult(params.profile, synth_task(params, out_dir))
    get_run_logger().info(result.line())
    return result
