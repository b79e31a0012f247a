"""Fan-out on Dask (issue 13): each stage run on a 2-worker LocalCluster through Prefect's DaskTaskRunner writes what
the single-process run writes. Only timings (and the time a feature row was kept) may differ."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest
from prefect.testing.utilities import prefect_test_harness

from monitoring.collect import FEATURES_FILE, IMAGES_FILE, PREDICTIONS_FILE, collect_features, read_store
from pipelines.config import Params, load_params
from pipelines.predict.model import resolve_model
from pipelines.predict.run import run_predict
from pipelines.progress import Progress
from pipelines.settings import ExecutionParams
from tests.integration.conftest import PSEUDONYM_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "models:/cordwatch-detector/1"  # a version, not an alias: other tests move `champion`
PATIENTS = 6  # of the external site (at most: the ci profile has fewer), a study each: shards on both workers
DASK = ExecutionParams(engine="dask", n_workers=2, threads_per_worker=1)
TIMINGS = {"seconds", "images_per_second"}  # summary.json's counts that legitimately differ between engines
TIME_COLUMNS = ["monitored_at"]  # a feature row's wall-clock time


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def studies(ci_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A handful of the external site's patients (a study each, some with series the rules do not select), copied:
    the project is shared with other tests."""
    site = next(p for p in (ci_project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    root = tmp_path_factory.mktemp("external") / site.name
    for patient in sorted(p for p in site.iterdir() if p.is_dir())[:PATIENTS]:
        shutil.copytree(patient, root / patient.name)
    return root


@pytest.fixture
def project(ci_project: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    """The ci project's params, run from its folder (its registry, model cache and pseudonym key)."""
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.chdir(ci_project)
    params = load_params(ci_project / "params.yaml")
    # conf 0.001: the ci model (one epoch on tiny images) keeps no box at its operating point; boxes make the
    # comparison mean something (heatmaps, SR content, box rows).
    return params.model_copy(update={"predict": params.predict.model_copy(update={"conf": 0.001})})


def _on(params: Params, engine: str) -> Params:
    return params if engine == "local" else params.model_copy(update={"execution": DASK})


def _without(mapping: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def _fan_outs(flow_name: str = "predict-studies-on-dask") -> int:
    """Completed runs of a fan-out flow on Dask so far (proof the Dask path ran, not the local one)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
        )
    return len(runs)


def _files(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


def _dicom_without_times(path: Path) -> pydicom.Dataset:
    """A DICOM result with its creation dates and times dropped (highdicom stamps them when it builds the object)."""
    ds = pydicom.dcmread(path)
    ds.walk(lambda d, elem: d.__delitem__(elem.tag) if elem.VR in ("DA", "TM", "DT") else None)
    return ds


def test_prediction_from_a_folder_on_dask_equals_the_local_run(
    project: Params, studies: Path, tmp_path: Path, harness: None
) -> None:
    updates: list[Progress] = []
    before = _fan_outs()
    runs = {
        engine: run_predict(
            _on(project, engine),
            studies,
            out_dir=tmp_path / engine,
            mode="xai",
            model_uri=MODEL,
            progress=updates.append if engine == "dask" else None,
        )
        for engine in ("local", "dask")
    }
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert _fan_outs() == before + 1
    studied = runs["local"]["studies"]
    assert studied >= 4 and runs["local"]["explained"] > 0  # something to compare, in several shards
    assert _without(runs["local"], TIMINGS | {"out_dir"}) == _without(runs["dask"], TIMINGS | {"out_dir"})
    assert (local / "summary.csv").read_bytes() == (dask / "summary.csv").read_bytes()
    summaries = [json.loads((out / "summary.json").read_text()) for out in (local, dask)]
    assert _without(summaries[0], TIMINGS) == _without(summaries[1], TIMINGS)

    files = _files(local)
    assert sorted(files) == sorted(_files(dask))
    assert any(name.endswith(".png") for name in files) and any(name.endswith("capture-01.dcm") for name in files)
    for name, path in files.items():
        if name.startswith("summary."):
            continue
        if name.endswith(".dcm"):
            assert _dicom_without_times(path) == _dicom_without_times(dask / name), name
        else:  # result.json and the heatmaps, byte for byte
            assert path.read_bytes() == (dask / name).read_bytes(), name

    # Progress per shard as each finishes, up to every study.
    assert len(updates) > 1 and all(u.stage == "predict" and u.total == studied for u in updates)
    assert [u.done for u in updates] == sorted(u.done for u in updates) and updates[-1].done == studied


def test_monitoring_features_from_a_folder_on_dask_equal_the_local_run(
    project: Params, studies: Path, tmp_path: Path, harness: None
) -> None:
    # A challenger (the champion's weights under another file) reads in shadow: its detector is rebuilt on each
    # worker and its box rows must come back too.
    champion = resolve_model(MODEL, project)
    twin = tmp_path / "twin.pt"
    shutil.copyfile(champion.weights, twin)
    challenger = resolve_model(str(twin), project)
    before = _fan_outs()
    counts = {
        engine: collect_features(
            _on(project, engine),
            studies,
            store=tmp_path / engine / "store",
            out_dir=tmp_path / engine / "reads",
            model=champion,
            challenger=challenger,
        )
        for engine in ("local", "dask")
    }
    assert _without(counts["local"], TIMINGS | {"store"}) == _without(counts["dask"], TIMINGS | {"store"})
    assert counts["local"]["new_rows"] == counts["local"]["studies"] >= 4
    assert _fan_outs() == before + 1

    local, dask = tmp_path / "local" / "store", tmp_path / "dask" / "store"
    features = [read_store(store, FEATURES_FILE) for store in (local, dask)]
    assert (features[0]["monitored_at"] > 0).all() and (features[1]["monitored_at"] > 0).all()
    pd.testing.assert_frame_equal(features[0].drop(columns=TIME_COLUMNS), features[1].drop(columns=TIME_COLUMNS),
                                  check_exact=True)  # fmt: skip
    for table in (PREDICTIONS_FILE, IMAGES_FILE):
        pd.testing.assert_frame_equal(read_store(local, table), read_store(dask, table), check_exact=True)
    boxes = read_store(local, PREDICTIONS_FILE)
    assert set(boxes["role"]) == {"champion", "challenger"}

    reads = [_files(tmp_path / engine / "reads") for engine in ("local", "dask")]
    assert sorted(reads[0]) == sorted(reads[1]) and reads[0]
    for name, path in reads[0].items():
        assert path.read_bytes() == reads[1][name].read_bytes(), name

    # A second run on Dask finds every study kept: nothing is read again.
    again = collect_features(
        _on(project, "dask"), studies, store=dask, out_dir=tmp_path / "dask" / "reads", model=champion
    )
    assert again["new_rows"] == 0 and again["already_kept"] == counts["local"]["studies"] and again["studies"] == 0


# (Room for the ingestion and cross-validation folds comparisons on the same LocalCluster settings.)


def test_ingestion_on_dask_equals_the_local_run(project: Params, tmp_path: Path, harness: None) -> None:
    """The ci project's whole SYNTHETIC cohort (both sites, with annotations) ingested twice, each with its own
    journal: the tables, PNGs and YOLO labels are the same bytes whichever engine processed the files."""
    from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE, MANIFEST_TABLE
    from pipelines.ingest.core import run_ingest

    cohort = Path("data") / "synth"
    before = _fan_outs("ingest-files-on-dask")
    outputs = {}
    for engine in ("local", "dask"):
        paths = project.paths.model_copy(update={"state_dir": tmp_path / f"state-{engine}"})
        params = _on(project, engine).model_copy(update={"paths": paths})
        summary = run_ingest(params, cohort / "dicom", tmp_path / engine, cohort / "annotations.csv")
        outputs[engine] = (tmp_path / engine, summary)
    (local, local_summary), (dask, dask_summary) = outputs["local"], outputs["dask"]
    assert _fan_outs("ingest-files-on-dask") == before + 1
    assert local_summary.counts() == dask_summary.counts() and local_summary.counts()["ok"] > 0
    for table in (IMAGES_TABLE, ANNOTATIONS_TABLE, MANIFEST_TABLE):
        pd.testing.assert_frame_equal(pd.read_parquet(local / table), pd.read_parquet(dask / table))
    files = _files(local)
    assert set(files) == set(_files(dask))
    assert any(name.endswith(".png") for name in files) and any(name.endswith(".txt") for name in files)
    for name, path in files.items():
        if name.endswith((".png", ".txt")):
            assert path.read_bytes() == (dask / name).read_bytes(), name
