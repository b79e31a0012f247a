"""Stand-alone entry point: `python -m pipelines.synth --profile ci --out data/synth [--params params.yaml]`.

The project's `cordwatch` CLI is the usual way in; this exists for debugging the generator on its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipelines.progress import ProgressReporter
from pipelines.synth.cohort import generate_cohort
from pipelines.synth.params import load_synth_params


def main(argv: Sequence[str] | None = None) -> None:
    """Generate a cohort and print its summary."""
    ap = argparse.ArgumentParser(description="Generate the synthetic cervical spine MRI cohort")
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=None, help="params.yaml or a synth block")
    args = ap.parse_args(argv)

    with ProgressReporter(interval_s=10) as reporter:  # a bar on a terminal, a line every 10 s otherwise
        s = generate_cohort(
            load_synth_params(args.params), args.profile, args.out, progress=reporter.counter("synth", "patient")
        )
    n_files = s.n_images + s.n_distractor_files
    print(
        f"{s.n_patients} patients, {s.n_images} images, {s.n_distractor_files} distractor files, "
        f"{s.n_annotations} annotations in {s.seconds:.1f} s "
        f"({1000 * s.seconds / max(n_files, 1):.1f} ms/file) "
        f"-> {s.out_dir}; per site: {s.per_site}"
    )


if __name__ == "__main__":
    main()
