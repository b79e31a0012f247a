"""The synth stage's edge: write the SYNTHETIC cohort of the active profile and `reports/synth/summary.json`.

Called by the Prefect flow, the CLI (so DVC) and the accelerator driver (`python -m pipelines.driver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import write_json
from pipelines.progress import Progress, ProgressFn
from pipelines.synth.cohort import CohortSummary, generate_cohort
from pipelines.synth.preview import write_preview

if TYPE_CHECKING:  # the whole params arrive from the caller; importing config at run time would be a cycle
    from pipelines.config import Params

STAGE = "synth"


@dataclass(frozen=True)
class SynthResult:
    """The generator's summary with the profile it was run for."""

    profile: str
    cohort: CohortSummary
    preview: Path | None = None  # the contact sheet, when asked for

    def line(self) -> str:
        c = self.cohort
        sites = ", ".join(
            f"{site}: {v.get('patients', 0)} patients / {v.get('images', 0)} images"
            for site, v in sorted(c.per_site.items())
        )
        return (
            f"synth [{self.profile}]: SYNTHETIC phantom cohort, {c.n_patients} patients, {c.n_images} images "
            f"({sites}), {c.n_distractor_files} distractor files, {c.n_annotations} reader boxes "
            f"in {c.seconds:.1f} s -> {c.out_dir}" + (f"; preview: {self.preview}" if self.preview else "")
        )

    def counts(self) -> dict[str, Any]:
        """Deterministic counts (no timings, no paths): `reports/synth/summary.json`."""
        c = self.cohort
        return {
            "profile": self.profile,
            "synthetic": True,
            "patients": c.n_patients,
            "images": c.n_images,
            "distractor_files": c.n_distractor_files,
            "annotations": c.n_annotations,
            "per_site": {site: dict(sorted(v.items())) for site, v in sorted(c.per_site.items())},
        }


def run_synth(
    params: Params, out_dir: Path | None = None, *, progress: ProgressFn | None = None, preview: bool = False
) -> SynthResult:
    """Generate the synthetic cohort for `params.profile` into `out_dir` (default `paths.synth_dir`).

    Args:
        params: the whole params (synth section, profile, paths).
        out_dir: where the cohort goes.
        progress: called with a `Progress` after each patient.
        preview: also write `<out_dir>/preview.png`, a contact sheet per site and worst grade with expert boxes.
    """

    def tell(done: int, total: int) -> None:
        if progress is not None:
            progress(Progress(STAGE, done, total, "patient"))

    out_dir = out_dir or params.paths.synth_dir
    cohort = generate_cohort(params.synth, params.profile, out_dir, progress=tell)
    result = SynthResult(params.profile, cohort, write_preview(out_dir) if preview else None)
    write_json(params.paths.summary_file(STAGE), result.counts())
    return result
