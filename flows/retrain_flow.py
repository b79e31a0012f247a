"""Prefect flow: the whole retraining, ingest -> split -> validate -> train -> evaluate -> register, as sub-flows of
the stage flows the single commands run (each a thin task around the stage's `run_<stage>`, as DVC calls them).

Each stage runs inside a task cached on what the stage reads and writes and on the code that runs it:
- the key is `INPUTS + TASK_SOURCE` over the stage name and a fingerprint (`stage_fingerprint`) of the stage's
  dependencies and outputs as `dvc.yaml` lists them (data files and folders, the code paths, the params keys), so
  one list says what a stage depends on for DVC and for Prefect. The Params object itself is left out of the key
  (`INPUTS - "params"`): a change in a section a stage does not read must not re-run it;
- keys and results are kept under the project's state (`paths.state_dir/prefect-cache`), not in Prefect's default
  in-memory/run-scoped cache, so a re-run in a new process after a crash or with nothing changed skips what is done;
- the outputs are part of the fingerprint: a stage whose outputs were deleted or changed by hand runs again.
Transient failures are retried (`retrain.retries`): ingest resumes from its journal and training from each fold's
`last.pt`, so a retry redoes only what was unfinished. A stage that fails after its retries stops the flow; the
summary says which stages ran, which were cached, the gates and the new version.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from pipelines.config import Params
from pipelines.io import write_json

REPO = Path(__file__).resolve().parents[1]
DVC_FILE = REPO / "dvc.yaml"
STAGES: tuple[str, ...] = ("ingest", "split", "validate", "train", "evaluate", "register")
STAGE = "retrain"
SMALL_FILE = 1 << 20  # files up to this size are hashed by content (code, tables); larger ones by size and mtime


def _lookup(raw: dict[str, Any], key: str) -> Any:
    """The value of a dotted params key (`readers.reference_level`) in dumped params; None when absent."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _resolve(template: str, raw: dict[str, Any]) -> str | None:
    """A dvc.yaml path with its `${section.key}` filled from dumped params (None when a value is unset)."""
    values = [_lookup(raw, key) for key in re.findall(r"\$\{([^}]+)\}", template)]
    if any(v is None for v in values):
        return None
    filled = iter(values)
    return re.sub(r"\$\{[^}]+\}", lambda _: str(next(filled)), template)


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries]


def _hash_path(digest: Any, path: Path) -> None:
    """Add a file or a folder (recursively, in name order) to `digest`: content for small files, size and mtime
    for large ones (a DICOM tree, the images), a marker for a missing path."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    digest.update(f"{path}:{len(files) if path.exists() else 'missing'}\n".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{stat.st_size}\n".encode())
        if stat.st_size <= SMALL_FILE:
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            digest.update(str(stat.st_mtime_ns).encode())


def _spec(stage: str, dvc_file: Path) -> dict[str, Any]:
    return yaml.safe_load(dvc_file.read_text())["stages"][stage]


def _hash_entries(digest: Any, entries: list[str], raw: dict[str, Any]) -> None:
    for entry in entries:
        resolved = _resolve(entry, raw)
        if resolved is not None:
            path = Path(resolved)
            _hash_path(digest, path if path.is_absolute() or "${" in entry else REPO / path)


def stage_fingerprint(params: Params, stage: str, dvc_file: Path = DVC_FILE) -> str:
    """What `stage` reads, as `dvc.yaml` lists it (its params keys and its deps: data, code), hashed: the cache key."""
    spec = _spec(stage, dvc_file)
    digest = hashlib.sha256(f"{stage}\n".encode())
    raw = params.model_dump(mode="json")
    for key in _paths(spec.get("params", [])):
        digest.update(f"{key}={json.dumps(_lookup(raw, key), sort_keys=True, default=str)}\n".encode())
    _hash_entries(digest, _paths(spec.get("deps", [])), raw)
    return digest.hexdigest()


def outputs_fingerprint(params: Params, stage: str, dvc_file: Path = DVC_FILE) -> str:
    """What `stage` wrote (its outs and metrics in `dvc.yaml`), hashed: a cached result is used only while these are
    as the run that made it left them."""
    spec = _spec(stage, dvc_file)
    digest = hashlib.sha256(f"{stage} outputs\n".encode())
    _hash_entries(
        digest, _paths(spec.get("outs", [])) + _paths(spec.get("metrics", [])), params.model_dump(mode="json")
    )
    return digest.hexdigest()


def _run_stage_flow(stage: str, params: Params) -> str:
    """The stage's own flow (a sub-flow of the retraining); returns its one-line summary."""
    if stage == "synth":
        from flows.synth_flow import synth_flow

        return synth_flow(params, None, False).line()
    if stage == "ingest":
        from flows.ingest_flow import ingest_flow, ingest_inputs

        source, annotations = ingest_inputs(params)
        return ingest_flow(params, source, params.paths.ingested_dir, annotations).line()
    if stage == "split":
        from flows.split_flow import split_flow

        summary = split_flow(params)
        return "splits: " + ", ".join(f"{r.split} {r.patients} patients" for r in summary.itertuples())
    if stage == "validate":
        from flows.validate_flow import validate_flow

        return f"all data contracts hold ({validate_flow(params).docs_index})"
    if stage == "train":
        from flows.train_flow import train_flow

        return train_flow(params).line()
    if stage == "evaluate":
        from flows.evaluate_flow import evaluate_flow

        evaluate_flow(params)
        return f"evaluation report: {params.paths.evaluation_report}"
    if stage == "register":
        from flows.register_flow import register_flow

        summary = register_flow(params)
        return json.dumps({k: summary[k] for k in ("model", "version", "aliases", "gates", "passed")})
    raise ValueError(f"unknown stage {stage!r}")


@task(name="retrain-stage", cache_policy=(INPUTS - "params") + TASK_SOURCE, persist_result=True)
def stage_task(stage: str, params: Params, fingerprint: str) -> dict[str, Any]:
    """Run one stage as a sub-flow; the result (kept by the cache) says what it did and what it left behind."""
    start = time.perf_counter()
    line = _run_stage_flow(stage, params)
    seconds = round(time.perf_counter() - start, 1)
    return {"stage": stage, "line": line, "seconds": seconds, "outputs": outputs_fingerprint(params, stage)}


def run_cached_stage(params: Params, stage: str) -> dict[str, Any]:
    """One stage through its cached task (inside a flow); its result with `status` ran or cached and `wall_s`."""
    logger = get_run_logger()
    cache = (params.paths.state_dir / "prefect-cache").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    storage = cache / "results"  # a local folder (a Path is resolved to local file storage, no block to save)
    policy = ((INPUTS - "params") + TASK_SOURCE).configure(key_storage=str(cache / "keys"))
    began = time.perf_counter()
    configured = stage_task.with_options(
        name=f"retrain-{stage}", cache_policy=policy, result_storage=storage,
        retries=params.retrain.retries, retry_delay_seconds=params.retrain.retry_delay_s,
    )  # fmt: skip
    key = stage_fingerprint(params, stage)
    state = configured(stage, params, key, return_state=True)
    result = state.result()  # raises the stage's own error after its retries
    cached = state.name == "Cached"
    if cached and result["outputs"] != outputs_fingerprint(params, stage):  # outputs deleted or changed since
        logger.info("%s: cached, but its outputs changed since: running it again", stage)
        state = configured.with_options(refresh_cache=True)(stage, params, key, return_state=True)
        result, cached = state.result(), False
    entry = {**result, "status": "cached" if cached else "ran", "wall_s": round(time.perf_counter() - began, 1)}
    logger.info("%s: %s (%s s) %s", stage, entry["status"], entry["wall_s"], result["line"][:200])
    return entry


@flow(name="cordwatch-retrain")
def retrain_flow(params: Params) -> dict[str, Any]:
    """Every stage from ingestion to registration, each cached on its inputs, outputs and code; writes
    `reports/retrain/summary.json`."""
    start = time.perf_counter()
    stages = [run_cached_stage(params, stage) for stage in STAGES]
    registered = json.loads(stages[-1]["line"])
    summary = {
        "stage": STAGE,
        "profile": params.profile,
        "stages": stages,
        "ran": [s["stage"] for s in stages if s["status"] == "ran"],
        "cached": [s["stage"] for s in stages if s["status"] == "cached"],
        "model": registered["model"],
        "version": registered["version"],
        "aliases": registered["aliases"],
        "gates": registered["gates"],
        "passed": registered["passed"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(params.paths.summary_file(STAGE), summary)
    return summary
