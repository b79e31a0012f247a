"""The split stage's edge: read the ingested tables, split patients, write `data/splits.parquet` and
`reports/split/summary.{json,md}`. Called by the Prefect flow, the CLI (so DVC) and the accelerator driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.io import write_atomic, write_json, write_parquet_atomic
from pipelines.split.core import make_splits, split_summary

if TYPE_CHECKING:  # the whole params arrive from the caller; importing config at run time would be a cycle
    from pipelines.config import Params

STAGE = "split"


def run_split(params: Params) -> pd.DataFrame:
    """Split the ingested dataset by patient and write the splits table and its summary.

    Returns:
        The summary table: patients, images and compression share per split and fold.

    Raises:
        SplitError: the data cannot be split as configured.
    """
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE, columns=["image_id", "patient_key", "site"])
    annotations = pd.read_parquet(
        paths.ingested_dir / ANNOTATIONS_TABLE, columns=["patient_key", "reader_level", "label"]
    )
    splits = make_splits(images, annotations, params.split, params.readers.reference_level)
    write_parquet_atomic(splits, paths.splits_file)
    summary = split_summary(splits)
    by_split = {row.pop("split"): row for row in summary.to_dict("records")}
    write_json(paths.summary_file(STAGE), by_split)
    write_atomic(paths.report_dir(STAGE) / "summary.md", (summary.to_markdown(index=False) + "\n").encode())
    return summary
