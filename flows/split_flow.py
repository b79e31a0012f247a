"""Prefect flow: ingested dataset -> leakage-free splits (`data/splits.parquet`) and a summary table."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE
from pipelines.io import write_json, write_parquet_atomic
from pipelines.split import make_splits, split_summary


@task(name="make-splits", cache_policy=NO_CACHE)
def split_task(params: Params) -> pd.DataFrame:
    """Read the ingested tables, split by patient, write the splits table; return the summary."""
    ingested = params.paths.ingested_dir
    images = pd.read_parquet(ingested / IMAGES_TABLE, columns=["image_id", "patient_key", "site"])
    annotations = pd.read_parquet(ingested / ANNOTATIONS_TABLE, columns=["patient_key", "reader_level", "label"])
    splits = make_splits(images, annotations, params.split)
    write_parquet_atomic(splits, params.paths.splits_file)
    return split_summary(splits)


@flow(name="cordwatch-split")
def split_flow(params: Params) -> pd.DataFrame:
    """Split development patients into k folds and an internal test set; hold external sites out whole."""
    summary = split_task(params)
    report = params.paths.reports_dir / "split"
    by_split = {row.pop("split"): row for row in summary.to_dict("records")}
    write_json(report / "summary.json", by_split)
    (report / "summary.md").write_text(summary.to_markdown(index=False) + "\n", encoding="utf-8")
    get_run_logger().info("splits: %s", ", ".join(f"{r.split} {r.patients} patients" for r in summary.itertuples()))
    return summary
