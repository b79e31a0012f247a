"""Fan-out of independent work (files, studies, folds) on the configured engine: `execution:` in params.yaml.

- `local`: the caller's own path (a spawn pool of `workers`, or one by one). Nothing new starts.
- `dask`: one Prefect sub-flow whose task runner is prefect-dask's `DaskTaskRunner`, on a `distributed.LocalCluster`
  of `n_workers` processes, or on the running scheduler at `address` (a real cluster: every worker needs cordwatch
  installed, the same params and the data at the same paths, e.g. a shared file system). Items go out in chunks
  (`chunks_per_worker` per worker), one Prefect task run each, so a thousand studies are not a thousand task runs.

Results always come back in input order, so a stage's outputs do not depend on the engine; the tests compare a
2-worker LocalCluster with the single-process run. Work functions must be importable module-level functions (Dask
pickles them by reference) taking one item.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pipelines.settings import ExecutionParams

Item = TypeVar("Item")
Result = TypeVar("Result")


def chunked(items: Sequence[Item], chunks: int) -> list[list[Item]]:
    """`items` in at most `chunks` contiguous, nearly equal runs (order kept)."""
    if not items:
        return []
    size = math.ceil(len(items) / max(1, chunks))
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def _run_chunk(work: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [work(item) for item in chunk]


def quieten_dask() -> None:
    """The cluster's own INFO lines (each worker starting and closing) would drown the stage's progress."""
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logging.getLogger(name).setLevel(logging.WARNING)


def dask_task_runner(execution: ExecutionParams) -> Any:
    """prefect-dask's runner for `execution`: the scheduler at `address`, else a LocalCluster of worker processes
    on loopback."""
    from prefect_dask import DaskTaskRunner

    if execution.address:
        return DaskTaskRunner(address=execution.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": execution.n_workers,
            "threads_per_worker": execution.threads_per_worker,
            "processes": True,  # ultralytics and torch keep process-wide state: one process per worker
            # The scheduler serves HTTP (health, metrics) even with the dashboard off; on a free loopback port, so two
            # runs side by side never fight over distributed's default 8787.
            "dashboard_address": "127.0.0.1:0",
        },
    )


def workers_of(execution: ExecutionParams) -> int:
    """How many workers the items are chunked for: `n_workers`, also with a scheduler `address` (set it to that
    cluster's worker count; the cluster is not asked)."""
    return execution.n_workers


def dask_map(
    work: Callable[[Item], Result],
    items: Sequence[Item],
    execution: ExecutionParams,
    *,
    name: str,
    on_chunk: Callable[[list[Result]], None] | None = None,
) -> list[Result]:
    """`[work(item) for item in items]` as Prefect task runs on Dask, in input order.

    A sub-flow of whatever flow calls it (the stage's own), so the Prefect UI shows the fan-out and each chunk.
    `on_chunk` is called here, in this process, with each chunk's results as it finishes (progress)."""
    from prefect import flow, task, unmapped
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import as_completed

    chunks = chunked(items, workers_of(execution) * execution.chunks_per_worker)
    run_chunk = task(_run_chunk, name=f"{name}-chunk", cache_policy=NO_CACHE, persist_result=False)

    runner = dask_task_runner(execution)

    @flow(name=f"{name}-on-dask", task_runner=runner, persist_result=False, validate_parameters=False)
    def fan_out() -> list[list[Any]]:
        quieten_dask()  # here: the runner has just started the cluster (and its loggers)
        futures = run_chunk.map(unmapped(work), chunks)
        if on_chunk is not None:
            for future in as_completed(list(futures)):
                on_chunk(future.result())
        return [future.result() for future in futures]

    with _prefect_api_for_local_workers(execution):
        results = fan_out()
    return [result for chunk in results for result in chunk]


@contextmanager
def _prefect_api_for_local_workers(execution: ExecutionParams) -> Iterator[None]:
    """A LocalCluster's workers inherit this process's environment when they start. Give them this process's
    Prefect API: a temporary server's address is in no variable, and without it each worker would start a server of
    its own and record its task runs there, out of the stage flow's sight. (A real cluster's workers are pointed at
    the Prefect server by whoever starts them.)"""
    if execution.address:
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def fan_out(
    work: Callable[[Item], Result],
    items: Sequence[Item],
    execution: ExecutionParams,
    *,
    name: str,
    local_workers: int = 1,
) -> Iterator[Result]:
    """`work` over `items` in input order on the configured engine.

    `local`: one by one when `local_workers` <= 1, else a spawn-started pool of that size (spawn: fork is unsafe
    under Prefect's and torch's threads), results streamed as they come. `dask`: `dask_map`, results at the end.
    """
    if execution.engine == "dask" and items:
        yield from dask_map(work, items, execution, name=name)
        return
    if local_workers <= 1 or len(items) < 2:
        for item in items:
            yield work(item)
        return
    with mp.get_context("spawn").Pool(local_workers) as pool:
        yield from pool.imap(work, items, chunksize=max(1, min(8, len(items) // (4 * local_workers))))
