"""Shared fixtures: an isolated project state per test, params from the repo, and a DICOM factory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]

# Canary identity planted in factory files; de-identification tests look for these in every output byte.
CANARY = {
    "PatientName": "ZZCANARY^QUENTIN",
    "PatientID": "CANARYID93417",
    "PatientBirthDate": "19410923",
    "AccessionNumber": "ACCCANARY5521",
    "InstitutionName": "Canary Memorial Hospital",
    "ReferringPhysicianName": "ZZREFDOC^WINIFRED",
}

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own state folder and a fixed pseudonym key; nothing touches the user's home."""
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", "test-key-0123456789abcdef")
    for key in ("DO_NOT_TRACK", "DVC_NO_ANALYTICS", "YOLO_OFFLINE"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / ".state" / "ultralytics"))


@pytest.fixture
def params(tmp_path: Path):
    """The repo's params.yaml, ci profile, with every path inside tmp_path and one worker."""
    from pipelines.config import load_params

    p = load_params(REPO / "params.yaml", "ci")
    paths = p.paths.model_copy(
        update={
            "synth_dir": tmp_path / "synth",
            "ingested_dir": tmp_path / "ingested",
            "state_dir": tmp_path / ".state",
            "reports_dir": tmp_path / "reports",
            "splits_file": tmp_path / "splits.parquet",
        }
    )
    # Inputs null: the synthetic cohort under the moved synth_dir (params.yaml names data/synth/... for dvc.yaml).
    ingest = p.ingest.model_copy(update={"workers": 1, "input_dir": None, "annotations_csv": None})
    return p.model_copy(update={"paths": paths, "ingest": ingest})


def mr_dataset(rng: np.random.Generator | None = None, shape: tuple[int, int] = (64, 64), **overrides: Any) -> Dataset:
    """A small valid single-frame sagittal T2 MR Image Storage dataset carrying canary identity.

    `shape` sets the pixels; Rows/Columns overrides change only the header (to forge declared sizes).
    """
    rng = rng or np.random.default_rng(0)
    rows, cols = shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    for key, value in CANARY.items():
        setattr(ds, key, value)
    ds.PatientSex = "F"
    ds.StudyDate = "20240611"
    ds.Modality = "MR"
    ds.SeriesDescription = "SAG T2 TSE"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Skyra"
    ds.MagneticFieldStrength = 3.0
    ds.StationName = "CANARYSTATION"
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.ImagePositionPatient = [0, -100, 100]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 3.0
    ds.RepetitionTime = 3000.0
    ds.EchoTime = 100.0
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4000, size=(rows, cols), dtype=np.uint16).tobytes()
    for key, value in overrides.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


@pytest.fixture
def write_mr() -> Callable[..., Path]:
    """Write a factory MR file: write_mr(path, **tag_overrides) -> path."""

    def _write(path: Path, **overrides: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = mr_dataset(**overrides)
        ds.save_as(path, enforce_file_format=True)
        return path

    return _write


def all_output_bytes(*roots: Path) -> bytes:
    """Every byte under the given folders (for canary scans)."""
    chunks = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                chunks.append(Path(dirpath, name).read_bytes())
    return b"\n".join(chunks)
