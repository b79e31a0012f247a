"""Prefect flow: ingested dataset -> leakage-free splits (`data/splits.parquet`) and a summary table. Thin: one task
around `pipelines.split.run.run_split`."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import Params
from pipelines.split.run import run_split


@task(name="make-splits", cache_policy=NO_CACHE)
def split_task(params: Params) -> pd.DataFrame:
    """Split by patient; write the splits table and its summary; return the summary."""
    return run_split(params)


@flow(name="cordwatch-split")
def split_flow(params: Params) -> pd.DataFrame:
    """Split development patients into k folds and an internal test set; hold external sites out whole."""
    summary = split_task(params)
    get_run_logger().info("splits: %s", ", ".join(f"{r.split} {r.patients} patients" for r in summary.itertuples()))
    return summary
