"""Ingestion: every bad-input case quarantined with its reason, accounting, canaries, determinism, resume."""

from __future__ import annotations

import csv
import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.ingest import IngestInputError, run_ingest
from tests.conftest import CANARY, all_output_bytes, mr_dataset

ANN_HEADER = ["sop_instance_uid", "reader_id", "reader_level", "label", "x_min", "y_min", "x_max", "y_max", "severity"]


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def _reason_of(out: Path, source_suffix: str, state: Path) -> str:
    """Reason for one input file, found through the local source map."""
    sources = pd.read_csv(state / "ingest" / "sources.csv", keep_default_na=False)
    row = sources[sources["relative_path"].str.endswith(source_suffix)]
    assert len(row) == 1, source_suffix
    return str(row.iloc[0]["reason"]) or "ok"


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_bad_input_is_quarantined_with_its_reason(params, tmp_path: Path, write_mr: Callable) -> None:
    src = tmp_path / "in"
    good = write_mr(src / "a" / "b" / "c" / "good.dcm")
    (src / "notes.txt").write_text("not an image")
    (src / "empty.dcm").write_bytes(b"")
    full = good.read_bytes()
    (src / "cut_header.dcm").write_bytes(full[:200])
    (src / "cut_value.dcm").write_bytes(full[: full.index(b"ZZCANARY") + 3])  # cut inside PatientName
    (src / "cut_pixels.dcm").write_bytes(full[: len(full) - 3000])
    write_mr(src / "nopix.dcm", PixelData=None)
    write_mr(src / "ct.dcm", Modality="CT")
    write_mr(src / "axial.dcm", ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    write_mr(src / "coronal.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    write_mr(src / "t1.dcm", SeriesDescription="SAG T1 TSE", EchoTime=10.0)
    frames = np.zeros((2, 64, 64), np.uint16).tobytes()
    write_mr(src / "multiframe.dcm", NumberOfFrames=2, PixelData=frames)
    write_mr(src / "huge.dcm", Rows=60000, Columns=60000)  # declares 3.6e9 pixels, carries 8 KB
    write_mr(src / "tiny.dcm", shape=(8, 8))
    write_mr(src / "rgb.dcm", SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    write_mr(src / "burned.dcm", BurnedInAnnotation="YES")
    write_mr(src / "noid.dcm", PatientID="")
    (src / "dup").mkdir()
    (src / "dup" / "zz_copy.dcm").write_bytes(full)

    state = params.paths.state_dir
    summary = run_ingest(params, src, tmp_path / "out")
    expected = {
        "good.dcm": "ok",
        "notes.txt": "not_dicom",
        "empty.dcm": "not_dicom",
        "cut_header.dcm": "truncated",
        "cut_pixels.dcm": "truncated",
        "cut_value.dcm": "truncated",
        "nopix.dcm": "no_pixel_data",
        "ct.dcm": "series_rule:modality_mr",
        "axial.dcm": "series_rule:sagittal",
        "coronal.dcm": "series_rule:sagittal",
        "t1.dcm": "series_rule:t2_weighted",
        "multiframe.dcm": "multi_frame",
        "huge.dcm": "declared_size_too_large",
        "tiny.dcm": "matrix_too_small",
        "rgb.dcm": "unsupported_pixel_format",
        "burned.dcm": "burned_in_annotation",
        "noid.dcm": "missing_identifiers",
        "zz_copy.dcm": "duplicate_sop_instance",
    }
    got = {name: _reason_of(tmp_path / "out", name, state) for name in expected}
    assert got == expected
    assert summary.files == len(expected) == summary.ok + sum(summary.quarantined.values())
    manifest = _manifest(tmp_path / "out")
    assert len(manifest) == len(expected)
    assert set(manifest["status"]) == {"ok", "quarantined"}
    assert (manifest["reason"] == "").sum() == 1
    assert "ingest: 18 files, 1 ok, 17 quarantined" in summary.line()


def test_absurd_declared_size_is_refused_before_allocating(params, tmp_path: Path, write_mr: Callable) -> None:
    write_mr(tmp_path / "in" / "huge.dcm", Rows=65535, Columns=65535)
    tracemalloc.start()
    summary = run_ingest(params, tmp_path / "in", tmp_path / "out")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.quarantined == {"declared_size_too_large": 1}
    assert peak < 50 * 2**20  # decoding would need 8 GiB; the refusal costs a few MB


def test_no_canary_identity_in_any_output(params, tmp_path: Path, write_mr: Callable) -> None:
    src = tmp_path / "in" / "ZZCANARY^QUENTIN"  # identity in folder names too, as PACS exports do
    for i in range(3):
        write_mr(src / f"CANARYID93417_{i}.dcm", SeriesDescription="SAG T2 ZZCANARY", ImageComments="CANARYID93417")
    write_mr(src / "axial.dcm", ImageOrientationPatient=[1, 0, 0, 0, 1, 0], SeriesDescription="AX T2 ZZCANARY")
    out = tmp_path / "out"
    summary = run_ingest(params, src.parent, out)
    assert summary.ok == 3
    blob = all_output_bytes(out)
    tables = " ".join(pd.read_parquet(p).to_csv() for p in out.glob("*.parquet")).encode()
    for value in [*CANARY.values(), "CANARYSTATION", "ZZCANARY", "QUENTIN"]:
        assert value.encode() not in blob, value
        assert value.upper().encode() not in tables.upper(), value
    images = pd.read_parquet(out / "images.parquet")
    assert set(images["series_description"]) == {"SAG T2 [removed]"}
    assert images["patient_key"].str.fullmatch(r"P[0-9a-f]{16}").all()
    # the one place that names input paths stays in local state, not in the dataset
    assert b"ZZCANARY" in (params.paths.state_dir / "ingest" / "sources.csv").read_bytes()


def _write_annotations(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ANN_HEADER)
        w.writerows(rows)
    return path


def test_annotations_checked_and_written_as_yolo_labels(params, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = mr_dataset(shape=(100, 80))
    good.save_as(src / "good.dcm", enforce_file_format=True)
    axial = mr_dataset(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    axial.save_as(src / "axial.dcm", enforce_file_format=True)
    uid, ax = str(good.SOPInstanceUID), str(axial.SOPInstanceUID)
    ann = _write_annotations(
        tmp_path / "annotations.csv",
        [
            [uid, "expert_1", "expert", "compression", 10, 20, 30, 40, "moderate"],
            [uid, "expert_1", "expert", "normal", 10, 50, 30, 60, ""],
            [uid, "mid_1", "mid", "compression", 11, 21, 31, 41, "moderate"],
            [uid, "expert_1", "expert", "compression", 10, 20, 30, 40, "moderate"],  # exact duplicate row
            ["1.2.3.999", "expert_1", "expert", "normal", 1, 1, 5, 5, ""],  # unknown image
            [ax, "expert_1", "expert", "normal", 1, 1, 5, 5, ""],  # image was quarantined
            [uid, "expert_1", "expert", "normal", 70, 20, 90, 40, ""],  # x_max 90 > 80 columns
            [uid, "expert_1", "expert", "normal", 30, 20, 10, 40, ""],  # no area
            [uid, "expert_1", "expert", "stenosis", 10, 20, 30, 40, ""],  # bad label
            [uid, "expert_1", "professor", "normal", 10, 20, 30, 40, ""],  # bad level
            [uid, "../etc", "expert", "normal", 10, 20, 30, 40, ""],  # reader id unsafe as a folder name
            [uid, "expert_1", "expert", "normal", "ten", 20, 30, 40, ""],  # not a number
        ],
    )
    out = tmp_path / "out"
    summary = run_ingest(params, src, out, ann)
    assert summary.annotations == 12 and summary.annotations_ok == 3
    assert summary.annotations_quarantined == {
        "annotation_duplicate": 1,
        "annotation_unknown_image": 1,
        "annotation_image_quarantined": 1,
        "annotation_outside_image": 1,
        "annotation_degenerate_box": 1,
        "annotation_bad_label": 1,
        "annotation_bad_reader": 2,
        "annotation_malformed": 1,
    }
    manifest = _manifest(out)
    assert (manifest["kind"] == "annotation").sum() == 12
    table = pd.read_parquet(out / "annotations.parquet")
    assert len(table) == 3 and set(table["reader_level"]) == {"expert", "mid"}
    image_id = table["image_id"].iloc[0]
    lines = (out / "labels" / "expert_1" / f"{image_id}.txt").read_text().splitlines()
    assert sorted(lines) == ["0 0.250000 0.550000 0.250000 0.100000", "1 0.250000 0.300000 0.250000 0.200000"]
    assert (out / "labels" / "mid_1" / f"{image_id}.txt").is_file()
    assert uid.encode() not in all_output_bytes(out)


def test_unusable_inputs_fail_clearly(params, tmp_path: Path) -> None:
    with pytest.raises(IngestInputError, match="input folder not found"):
        run_ingest(params, tmp_path / "nope", tmp_path / "out")
    (tmp_path / "in").mkdir()
    bad = tmp_path / "ann.csv"
    bad.write_text("sop_instance_uid,label\n1.2.3,normal\n")
    with pytest.raises(IngestInputError, match="lacks required column"):
        run_ingest(params, tmp_path / "in", tmp_path / "out", bad)


def _cohort(src: Path, n: int) -> None:
    rng = np.random.default_rng(7)
    for i in range(n):
        ds = mr_dataset(rng, PatientID=f"PID{i % 7}")
        ds.save_as(src / f"p{i % 7}" / f"img{i:03d}.dcm", enforce_file_format=True) if (src / f"p{i % 7}").mkdir(
            parents=True, exist_ok=True
        ) is None else None


def test_rerun_is_byte_identical_and_resumes_after_a_kill(params, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _cohort(src, 30)
    (src / "junk.bin").write_bytes(b"\x00" * 500)
    clean = tmp_path / "clean"
    run_ingest(params, src, clean)
    first = _tree_hashes(clean)
    again = run_ingest(params, src, clean)
    assert _tree_hashes(clean) == first
    assert again.reused == 31  # nothing redone

    # A run that dies after 12 files, with another state folder, then a restart: same dataset as the clean run.
    state2 = tmp_path / ".state2"
    p2 = params.model_copy(update={"paths": params.paths.model_copy(update={"state_dir": state2})})
    killed = tmp_path / "killed"

    def die(done: int, total: int) -> None:
        if done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ingest(p2, src, killed, progress=die)
    assert not (killed / "manifest.parquet").exists()
    resumed = run_ingest(p2, src, killed)
    assert resumed.reused == 12
    assert _tree_hashes(killed) == first
    images = pd.read_parquet(killed / "images.parquet")
    assert images["image_id"].is_unique and len(images) == 30
    assert images["patient_key"].nunique() == 7


def test_removed_inputs_leave_no_stale_images(params, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _cohort(src, 10)
    out = tmp_path / "out"
    run_ingest(params, src, out)
    victim = sorted(src.rglob("*.dcm"))[0]
    victim.unlink()
    summary = run_ingest(params, src, out)
    assert summary.ok == 9
    assert len(list((out / "images").glob("*.png"))) == 9


def test_process_pool_gives_the_same_dataset(params, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _cohort(src, 70)  # above the pool threshold
    one = tmp_path / "one"
    run_ingest(params, src, one)
    p2 = params.model_copy(
        update={
            "ingest": params.ingest.model_copy(update={"workers": 2}),
            "paths": params.paths.model_copy(update={"state_dir": tmp_path / ".s2"}),
        }
    )
    two = tmp_path / "two"
    run_ingest(p2, src, two)
    assert _tree_hashes(one) == _tree_hashes(two)


def test_normalise_histogram_path_matches_percentile_window() -> None:
    from pipelines.ingest.files import normalise

    rng = np.random.default_rng(3)
    arr = rng.integers(100, 3000, size=(128, 96)).astype(np.uint16)
    fast = normalise(arr, (0.5, 99.5))
    slow = normalise(arr.astype(np.float64), (0.5, 99.5))  # float input takes the np.percentile path
    assert fast.dtype == np.uint8 and fast.shape == arr.shape
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 2  # nearest-rank vs interpolated percentiles
    assert fast.min() == 0 and fast.max() == 255
    flat = normalise(np.full((40, 40), 7, np.uint16), (0.5, 99.5))
    assert flat.dtype == np.uint8 and len(np.unique(flat)) == 1  # a blank image does not divide by zero
    assert (normalise(arr, (0.5, 99.5), monochrome1=True) == 255 - fast).all()


def test_empty_or_all_quarantined_input_still_writes_the_contract_tables(params, tmp_path: Path) -> None:
    from pipelines.contracts import ANNOTATION_TABLE_COLUMNS, IMAGE_COLUMNS, MANIFEST_COLUMNS

    src = tmp_path / "in"
    src.mkdir()
    (src / "readme.txt").write_text("no images here")
    summary = run_ingest(params, src, tmp_path / "out")
    assert (summary.files, summary.ok) == (1, 0)
    out = tmp_path / "out"
    assert tuple(pd.read_parquet(out / "images.parquet").columns) == IMAGE_COLUMNS
    assert tuple(pd.read_parquet(out / "annotations.parquet").columns) == ANNOTATION_TABLE_COLUMNS
    assert tuple(pd.read_parquet(out / "manifest.parquet").columns) == MANIFEST_COLUMNS
