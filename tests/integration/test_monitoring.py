"""Monitoring's feature store on the ci project: one row per study from the quick read, kept once, no identity."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from monitoring.collect import FEATURES_FILE, collect_features, read_store
from pipelines.config import load_params
from pipelines.ingest.deid import Pseudonymizer
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
        first = collect_features(params, site, store=store, out_dir=out, model_uri=MODEL)
        again = collect_features(params, site, store=store, out_dir=out, model_uri=MODEL)
        # one more study: a copy of one with new UIDs
        extra = tmp_path / "extra"
        extra.mkdir()
        study_uid = generate_uid()
        for n, path in enumerate(sorted(next(p for p in site.iterdir() if p.is_dir()).rglob("*.dcm"))):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(extra / f"{n}.dcm", enforce_file_format=True)
        more = collect_features(params, extra, store=store, out_dir=out, model_uri=MODEL)
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
