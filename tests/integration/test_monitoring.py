"""Monitoring's feature store on the ci project: one row per study from the quick read, kept once, no identity."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from monitoring.collect import FEATURES_FILE, collect_features, read_store
from pipelines.config import load_params
from pipelines.ingest.deid import Pseudonymizer
from pipelines.predict.model import resolve_model
from tests.integration.conftest import PSEUDONYM_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "models:/cordwatch-detector/1"


def test_features_are_computed_once_per_study_and_keep_no_identity(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(ci_project / "params.yaml")
    site = next(p for p in (ci_project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    store, out = tmp_path / "store", tmp_path / "predictions"
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)  # the project's key: labels join on its pseudonyms
    cwd = Path.cwd()
    os.chdir(ci_project)
    try:
        first = collect_features(params, site, store=store, out_dir=out, model=resolve_model(MODEL, params))
        again = collect_features(params, site, store=store, out_dir=out, model=resolve_model(MODEL, params))
        # one more study: a copy of one with new UIDs
        extra = tmp_path / "extra"
        extra.mkdir()
        study_uid = generate_uid()
        for n, path in enumerate(sorted(next(p for p in site.iterdir() if p.is_dir()).rglob("*.dcm"))):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(extra / f"{n}.dcm", enforce_file_format=True)
        more = collect_features(params, extra, store=store, out_dir=out, model=resolve_model(MODEL, params))
    finally:
        os.chdir(cwd)
    uids = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in site.rglob("*.dcm")}
    rows = read_store(store)
    assert first["new_rows"] == len(rows) - 1 and again["new_rows"] == 0 and again["already_kept"] == len(uids)
    assert more["new_rows"] == 1 and len(rows) == len(uids) + 1
    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    assert {pseudo.study(u) for u in uids} | {pseudo.study(study_uid)} == set(rows["study_key"])
    assert set(rows["meta_site"]) == {"ext"}  # ingestion's site code for the external centre
    embedding = [c for c in rows.columns if c.startswith("emb_")]
    assert len(embedding) == 64 + 128 + 256  # YOLO11n's P3-P5 channels, pooled
    assert rows[embedding].notna().all().all() and rows["img_snr"].gt(0).all()
    stored = (store / FEATURES_FILE).read_bytes()
    patient_ids = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in site.rglob("*.dcm")}
    for canary in uids | patient_ids | {study_uid, "Lakeshore"}:
        assert canary.encode() not in stored


def test_the_reference_stored_with_the_model_equals_monitoring_the_same_studies(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registration stores the training studies' feature rows with the model, made from ingestion's images and
    # table; monitoring makes its rows from the DICOM. Same study, same row: else drift would be measured against
    # a reference computed differently.
    params = load_params(ci_project / "params.yaml")
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    cwd = Path.cwd()
    os.chdir(ci_project)
    try:
        model = resolve_model(MODEL, params)
        site = next(p for p in (ci_project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("NORTH"))
        collect_features(params, site, store=tmp_path / "store", out_dir=tmp_path / "out", model=model)
    finally:
        os.chdir(cwd)
    assert model.reference is not None and model.reference.is_file()
    reference = pd.read_parquet(model.reference).set_index("study_key")
    monitored = read_store(tmp_path / "store").set_index("study_key")
    splits = pd.read_parquet(ci_project / "data" / "splits.parquet")
    images = pd.read_parquet(ci_project / "data" / "ingested" / "images.parquet")
    training = set(images.loc[images["image_id"].isin(splits.loc[splits["split"] == "cv", "image_id"]), "study_key"])
    assert set(reference.index) == training  # the reference is the training data, every study of it
    both = sorted(set(reference.index) & set(monitored.index))
    assert both == sorted(training)  # the dev site's folder holds every training study
    columns = [c for c in reference.columns if c.startswith(("meta_", "img_", "out_", "emb_"))]
    assert columns == [c for c in monitored.columns if c.startswith(("meta_", "img_", "out_", "emb_"))]
    categorical = [c for c in columns if reference[c].dtype == object]
    assert reference.loc[both, categorical].equals(monitored.loc[both, categorical])
    numerical = [c for c in columns if c not in categorical]
    np.testing.assert_allclose(
        reference.loc[both, numerical].to_numpy(float), monitored.loc[both, numerical].to_numpy(float),
        rtol=1e-4, atol=1e-5, equal_nan=True,
    )  # fmt: skip


def test_cordwatch_monitor_alerts_on_a_new_site_and_emits_the_event(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ci model was trained on the development site only: the external site's studies (another vendor, another
    # scanner model, its own site code) must alert, in the alerts table, the reports, the dashboard workspace and
    # as a Prefect event carrying the site, on a real (test-harness) Prefect server.
    import time

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.testing.utilities import prefect_test_harness
    from typer.testing import CliRunner

    from flows.cli import app

    raw = yaml.safe_load((ci_project / "params.yaml").read_text())
    raw["paths"]["monitoring_dir"] = str(tmp_path / "monitoring")
    raw["paths"]["reports_dir"] = str(tmp_path / "reports")
    raw["monitor"].update(model_uri=MODEL, window_size=3, window_days=None)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    site = next(p for p in (ci_project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.chdir(ci_project)
    with prefect_test_harness(server_startup_timeout=120):
        first = CliRunner().invoke(app, ["monitor", str(site), "--params", str(params_file)])
        again = CliRunner().invoke(app, ["monitor", str(site), "--params", str(params_file)])
        deadline, events = time.monotonic() + 30, []
        while time.monotonic() < deadline and not events:  # the server files events asynchronously
            with get_client(sync_client=True) as client:
                names = EventNameFilter(name=["cordwatch.drift.detected"])
                page = client.read_events(EventFilter(event=names), limit=50)  # the server refuses more
            events = page.events
            time.sleep(0.5)
    assert first.exit_code == 0, (first.output, first.exception)
    assert "ALERT window 0 all (sites ext)" in first.output and "new meta_manufacturer: Philips" in first.output
    assert again.exit_code == 0 and "0 new" in again.output and "ALERT" not in again.output  # analysed once
    alerts = pd.read_parquet(tmp_path / "monitoring" / "alerts.parquet")
    assert {"all", "site:ext", "scanner:Philips", "field:3.0"} <= set(alerts["segment"])
    assert alerts["sites"].eq("ext").all()
    assert events and {e.resource["cordwatch.site"] for e in events} == {"ext"}
    assert events[0].resource.id == "cordwatch.site.ext" and events[0].payload["alerts"]
    assert list((tmp_path / "reports" / "monitoring" / "windows").glob("window00000-site-ext.html"))
    assert (tmp_path / "monitoring" / "workspace").is_dir()
    weights = CliRunner().invoke(
        app, ["monitor", str(site), "--params", str(params_file), "--model", str(ci_project / "models" / "final.pt")]
    )
    assert weights.exit_code == 2 and "carries no monitoring reference" in weights.output
