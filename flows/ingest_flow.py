"""Prefect flow: DICOM tree -> de-identified dataset. Thin: one task around `pipelines.ingest.run_ingest`."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.ingest import IngestSummary, run_ingest
from pipelines.progress import ProgressReporter


def _retry_on_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry only transient I/O failures; a bad input is quarantined, not retried, and a bug should fail fast."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def ingest_inputs(
    params: Params, input_dir: Path | None = None, annotations: Path | None = None, *, no_annotations: bool = False
) -> tuple[Path, Path | None]:
    """The DICOM tree and annotations CSV to ingest: the ones given, else params' (`ingest.input_dir`,
    `ingest.annotations_csv`), else the synthetic cohort's. Params' annotations describe params' input: another tree
    given explicitly takes only explicitly given annotations."""
    source = input_dir or params.ingest.input_dir or params.paths.synth_dir / "dicom"
    if no_annotations:
        return source, None
    chosen = annotations or (params.ingest.annotations_csv if input_dir is None else None)
    if chosen is None and input_dir is None and (params.paths.synth_dir / "annotations.csv").is_file():
        chosen = params.paths.synth_dir / "annotations.csv"
    return source, chosen


@task(name="ingest-dataset", cache_policy=NO_CACHE, retry_condition_fn=_retry_on_io)
def ingest_task(params: Params, input_dir: Path, output_dir: Path, annotations_csv: Path | None) -> IngestSummary:
    """Run ingestion with progress: files per second and time left (a bar on a terminal, log lines otherwise). A
    retry resumes from the journal, so it only redoes unfinished files."""
    with ProgressReporter(get_run_logger().info) as reporter:
        return run_ingest(params, input_dir, output_dir, annotations_csv, progress=reporter.counter("ingest", "file"))


@flow(name="cordwatch-ingest", log_prints=False)
def ingest_flow(
    params: Params, input_dir: Path, output_dir: Path, annotations_csv: Path | None = None
) -> IngestSummary:
    """Ingest a DICOM tree (and optional reader annotations) into the de-identified dataset; its counts go to
    `reports/ingest/summary.json`."""
    configured = ingest_task.with_options(
        retries=params.ingest.retries, retry_delay_seconds=params.ingest.retry_delay_s
    )
    summary = configured(params, input_dir, output_dir, annotations_csv)
    get_run_logger().info(summary.line())
    return summary
