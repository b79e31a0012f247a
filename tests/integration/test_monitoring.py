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


def _monitor_params(ci_project: Path, tmp_path: Path, **monitor: object) -> Path:
    """The ci project's params with monitoring's store and reports in tmp_path and the registered version 1."""
    import yaml

    raw = yaml.safe_load((ci_project / "params.yaml").read_text())
    raw["paths"]["monitoring_dir"] = str(tmp_path / "monitoring")
    raw["paths"]["reports_dir"] = str(tmp_path / "reports")
    raw["monitor"].update(model_uri=MODEL, **monitor)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    return params_file


def test_cordwatch_monitor_alerts_on_a_new_site_and_emits_the_event(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ci model was trained on the development site only: the external site's studies (another vendor, another
    # scanner model, its own site code) must alert, in the alerts table, the reports, the dashboard workspace and
    # as a Prefect event carrying the site, on a real (test-harness) Prefect server.
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.testing.utilities import prefect_test_harness
    from typer.testing import CliRunner

    from flows.cli import app

    params_file = _monitor_params(ci_project, tmp_path, window_size=3, window_days=None)
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


def test_shadow_challenger_stays_silent_and_delayed_labels_are_scored_as_evaluate_scores(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The challenger here is the champion's own weights under another file: agreement must be perfect and every
    # paired difference zero, and none of its boxes may reach the output folder. The expert reads of the external
    # site, arriving "later", must be scored as evaluate scored the external test set at the operating point.
    import json
    import shutil

    from typer.testing import CliRunner

    from flows.cli import app
    from monitoring.collect import CHALLENGER, IMAGES_FILE, PREDICTIONS_FILE
    from monitoring.shadow import agreement
    from pipelines.evaluate.scoring import match, metrics

    params_file = _monitor_params(ci_project, tmp_path)
    params = load_params(params_file)
    site = next(p for p in (ci_project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("LAKESHORE"))
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.chdir(ci_project)
    champion = resolve_model(MODEL, params)
    twin = tmp_path / "twin.pt"
    shutil.copyfile(champion.weights, twin)
    challenger = resolve_model(str(twin), params)
    store, out = params.paths.monitoring_dir, tmp_path / "reads"
    counts = collect_features(params, site, store=store, out_dir=out, model=champion, challenger=challenger)
    assert counts["shadow"] == f"twin/{challenger.version}"
    preds, images = read_store(store, PREDICTIONS_FILE), read_store(store, IMAGES_FILE)
    mine, its = preds[preds["role"] == "champion"], preds[preds["role"] == CHALLENGER]
    assert len(mine) == len(its)  # the same weights: the same boxes
    results = [json.loads(p.read_text()) for p in out.rglob("result.json")]
    reported = sum(len(im["detections"]) for r in results for im in r["images"])
    assert reported == len(mine)  # the output folder holds the champion's boxes only
    assert not any("twin" in p.read_text() for p in out.rglob("*.json"))
    shadow = {row["site"]: row for row in agreement(preds, images)}
    assert shadow["all"]["study_agreement"] == 1.0 and shadow["ext"]["studies"] == images["study_key"].nunique()
    assert shadow["all"]["box_f1"] in (1.0, None)

    labels = ci_project / "data" / "synth" / "annotations.csv"
    result = CliRunner().invoke(app, ["monitor", "labels", str(labels), "--params", str(params_file)])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((tmp_path / "reports" / "monitoring" / "prospective.json").read_text())
    overall = next(r for r in summary["results"] if r["site"] == "all" and r["window"] is None)
    assert overall["images"] == images["image_id"].nunique()
    for figure in overall["challenger"]["minus_champion"].values():
        assert figure["point"] in (0.0, None)
    # Evaluate's own figure on the same images, from its predictions at the same operating point.
    evaluated = pd.read_parquet(ci_project / "reports" / "evaluation" / "predictions.parquet")
    ingested = pd.read_parquet(ci_project / "data" / "ingested" / "images.parquet")
    ext = ingested[ingested["site"] == "ext"]
    truth = pd.read_parquet(ci_project / "data" / "ingested" / "annotations.parquet")
    truth = truth[(truth["reader_level"] == "expert") & truth["image_id"].isin(set(ext["image_id"]))]
    patient_of = dict(zip(ext["image_id"], ext["patient_key"], strict=True))
    expected = metrics(
        match(evaluated[evaluated["image_id"].isin(set(ext["image_id"]))], truth, patient_of),
        conf=params.evaluate.operating_conf,
    )
    for name in ("sensitivity", "ppv"):
        got = overall[name]["point"]
        if got is None or pd.isna(expected[name]):
            assert got is None and pd.isna(expected[name]), name
        else:
            assert got == pytest.approx(expected[name], abs=0.05), name
    bad = tmp_path / "bad.csv"
    bad.write_text("sop_instance_uid,reader_id\n1.2.3,x\n")
    refused = CliRunner().invoke(app, ["monitor", "labels", str(bad), "--params", str(params_file)])
    assert refused.exit_code == 2 and "lacks required column" in refused.output
