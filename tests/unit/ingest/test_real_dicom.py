"""Real DICOM files nobody here wrote: pydicom's bundled MR test files in several transfer syntaxes.

They are axial, so the repo's rules quarantine them as `series_rule:sagittal` (checked); with the plane and
weighting rules lifted, every syntax must decode to the same normalised image as the uncompressed original.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from pipelines.ingest import run_ingest

SYNTAXES = {
    "MR_small.dcm": "Explicit VR Little Endian",
    "MR_small_implicit.dcm": "Implicit VR Little Endian",
    "MR_small_bigendian.dcm": "Explicit VR Big Endian",
    "MR_small_expb.dcm": "Explicit VR Big Endian",
    "MR_small_RLE.dcm": "RLE Lossless",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless Image Compression",
    "MR_small_jp2klossless.dcm": "JPEG 2000 Image Compression (Lossless Only)",
}


def _testfile(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # never download: only files pydicom ships
    if path is None:
        pytest.skip(f"pydicom does not ship {name} in this version")
    return Path(path)


def _ingest_one(params, tmp_path: Path, name: str, rules) -> tuple[pd.DataFrame, Path]:
    src = tmp_path / name.replace(".", "_")
    src.mkdir()
    shutil.copy(_testfile(name), src / name)
    p = params.model_copy(update={"ingest": params.ingest.model_copy(update={"series_rules": rules})})
    out = tmp_path / f"out_{name}"
    run_ingest(p, src, out)
    return pd.read_parquet(out / "manifest.parquet"), out


def test_repo_rules_quarantine_axial_real_files(params, tmp_path: Path) -> None:
    manifest, _ = _ingest_one(params, tmp_path, "MR_small.dcm", params.ingest.series_rules)
    assert manifest["reason"].tolist() == ["series_rule:sagittal"]


def test_every_transfer_syntax_decodes_to_the_same_image(params, tmp_path: Path) -> None:
    rules = [r for r in params.ingest.series_rules if r.name in ("modality_mr", "mr_image_storage")]
    hashes, syntaxes = {}, {}
    for name in SYNTAXES:
        manifest, out = _ingest_one(params, tmp_path, name, rules)
        assert manifest["status"].tolist() == ["ok"], (name, manifest["detail"].tolist())
        images = pd.read_parquet(out / "images.parquet")
        png = out / images["image_path"].iloc[0]
        hashes[name] = hashlib.sha256(png.read_bytes()).hexdigest()
        syntaxes[name] = images["transfer_syntax"].iloc[0]
    assert syntaxes == SYNTAXES
    assert len(set(hashes.values())) == 1, hashes  # lossless syntaxes: identical pixels after decoding


def test_real_truncated_file_is_quarantined(params, tmp_path: Path) -> None:
    rules = [r for r in params.ingest.series_rules if r.name == "modality_mr"]
    manifest, _ = _ingest_one(params, tmp_path, "MR_truncated.dcm", rules)
    assert manifest["reason"].tolist() == ["truncated"]


def test_real_non_mr_and_non_image_objects_are_quarantined(params, tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    src.mkdir()
    for name in ("CT_small.dcm", "test-SR.dcm", "rtplan.dcm", "no_meta.dcm"):
        shutil.copy(_testfile(name), src / name)
    summary = run_ingest(params, src, tmp_path / "out")
    assert summary.ok == 0 and summary.files == 4
    sources = pd.read_csv(params.paths.state_dir / "ingest" / "sources.csv")
    assert dict(zip(sources["relative_path"], sources["reason"], strict=True)) == {
        "CT_small.dcm": "series_rule:modality_mr",
        "test-SR.dcm": "series_rule:modality_mr",
        "rtplan.dcm": "series_rule:modality_mr",
        "no_meta.dcm": "not_dicom",  # no preamble, no file meta, no SOP Class UID: not identifiable as DICOM
    }
