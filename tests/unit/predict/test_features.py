"""Feature rows for monitoring: each statistic moves with what it claims to measure, and no identity is kept."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipelines.predict.features import (
    IMAGE_NUMERICAL,
    META_CATEGORICAL,
    META_NUMERICAL,
    OUTPUT_NUMERICAL,
    acquisition_metadata,
    image_statistics,
    metadata_from_table,
    output_features,
    pooled_embedding,
    study_row,
)
from pipelines.synth.probes import compression_probe
from tests.conftest import CANARY, mr_dataset


@pytest.fixture(scope="module")
def phantom():
    from pipelines.config import load_params
    from tests.conftest import REPO

    return compression_probe(load_params(REPO / "params.yaml").synth, 3, 2)


def test_noise_lowers_snr_and_blur_lowers_sharpness(phantom) -> None:
    clean = phantom.pixels.astype(np.float32)
    base = image_statistics(clean, phantom.boxes)
    noisy = clean + np.abs(np.random.default_rng(0).normal(0, 60, clean.shape)).astype(np.float32)
    blurred = cv2.GaussianBlur(clean, (0, 0), 2.0)
    assert image_statistics(noisy, phantom.boxes)["img_snr"] < 0.7 * base["img_snr"]
    assert image_statistics(blurred, phantom.boxes)["img_sharpness"] < 0.5 * base["img_sharpness"]
    assert 0 < base["img_csf_cord_contrast"] < 1


def test_a_gain_change_moves_percentiles_but_not_snr_or_contrast(phantom) -> None:
    base = image_statistics(phantom.pixels, phantom.boxes)
    doubled = image_statistics(phantom.pixels.astype(np.float32) * 2, phantom.boxes)
    for column in ("img_p01", "img_p50", "img_p99"):
        assert doubled[column] == pytest.approx(2 * base[column], rel=1e-4)
    for column in ("img_snr", "img_csf_cord_contrast", "img_sharpness"):
        assert doubled[column] == pytest.approx(base[column], rel=1e-3)
    assert math.isnan(image_statistics(phantom.pixels)["img_csf_cord_contrast"])  # no boxes, no canal


def test_metadata_keeps_acquisition_facts_and_no_identity() -> None:
    ds = mr_dataset(SoftwareVersions=f"syngo {CANARY['PatientName']}", EchoTrainLength=17)
    meta = acquisition_metadata(ds, "site-1234abcd")
    assert set(meta) == set(META_CATEGORICAL) | set(META_NUMERICAL)
    assert meta["meta_site"] == "site-1234abcd" and meta["meta_manufacturer"] == "SIEMENS"
    assert meta["meta_field_strength"] == 3.0 and meta["meta_pixel_spacing"] == 0.8
    assert meta["meta_te"] == 100.0 and meta["meta_echo_train_length"] == 17.0
    assert str(CANARY["PatientName"]) not in meta["meta_software"]
    assert math.isnan(acquisition_metadata(mr_dataset(EchoTime=None), "s")["meta_te"])


def test_output_features_and_study_row() -> None:
    out = output_features(["normal", "compression", "normal"], [0.9, 0.5, 0.3], (0.25, 0.6))
    assert out == {
        "out_max_confidence": 0.9, "out_n_normal": 2.0, "out_n_compression": 1.0, "out_positive": 1.0,
        "out_band_share": pytest.approx(2 / 3),
    }  # fmt: skip
    outputs = {16: torch.ones(1, 4, 8, 8), 19: torch.full((1, 2, 4, 4), 2.0)}
    emb = pooled_embedding(outputs, [16, 19])
    assert emb.tolist() == [1.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    meta = acquisition_metadata(mr_dataset(), "ext")
    gray = np.random.default_rng(1).integers(0, 256, (64, 64)).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)  # the detector's input; its statistics are the gray plane's
    row = study_row("S1", meta, [(rgb, None), (gray, None)], ["normal"], [0.8], (0.25, 0.6), [emb, emb])
    assert row["study_key"] == "S1" and row["images"] == 2 and row["meta_site"] == "ext"
    assert set(IMAGE_NUMERICAL + OUTPUT_NUMERICAL) <= set(row)
    assert row["img_snr"] == image_statistics(gray)["img_snr"]
    assert [row[f"emb_{i:03d}"] for i in range(6)] == emb.tolist()
    with pytest.raises(ValueError, match="no image"):
        study_row("S2", meta, [], [], [], (0.25, 0.6), [])


def test_table_metadata_equals_header_metadata() -> None:
    # The reference's rows come from ingestion's images table, a monitored study's from its header: same columns,
    # same values for the same image.
    ds = mr_dataset(SoftwareVersions="syngo MR E11", EchoTrainLength=17)
    header = acquisition_metadata(ds, "dev")
    table_row = {
        "site": "dev", "manufacturer": "SIEMENS", "model": str(ds.ManufacturerModelName),
        "software_versions": "syngo MR E11", "field_strength": 3.0, "pixel_spacing_row": 0.8,
        "rows": float(ds.Rows), "columns": float(ds.Columns), "slice_thickness": float(ds.SliceThickness),
        "repetition_time": float(ds.RepetitionTime), "echo_time": 100.0, "echo_train_length": 17.0,
    }  # fmt: skip
    assert metadata_from_table(table_row) == header
    missing = metadata_from_table({**table_row, "software_versions": None, "echo_train_length": None})
    assert missing["meta_software"] == "unknown" and math.isnan(missing["meta_echo_train_length"])
