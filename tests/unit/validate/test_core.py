"""Data contracts: a clean dataset passes; each contract broken on purpose once fails and the failure names it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipelines.contracts import ANNOTATION_TABLE_COLUMNS, ANNOTATIONS_TABLE, IMAGE_COLUMNS, IMAGES_TABLE
from pipelines.settings import PathsParams, ReadersParams
from pipelines.validate import DataContractError, ValidateParams, ValidationReport, validate_dataset
from pipelines.validate.suites import SUITES

EXTERNAL = ("ext",)


def _hex(*parts: object, n: int = 16) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


@dataclass
class Dataset:
    images: pd.DataFrame
    annotations: pd.DataFrame
    splits: pd.DataFrame


def clean_dataset() -> Dataset:
    """66 patients (50 cv in 5 balanced folds of 10, 6 internal test, 10 external), 1-2 images each, readers."""
    images, boxes, splits = [], [], []
    plan = [("cv", f) for f in range(5) for _ in range(10)] + [("internal_test", -1)] * 6 + [("external_test", -1)] * 10
    for p, (split, fold) in enumerate(plan):
        site = "ext" if split == "external_test" else "dev"
        patient = "P" + _hex("patient", p)
        compressed = (p % 10) < 6  # 6 of every 10 patients: each fold holds exactly the cv share
        for k in range(2 if p % 3 == 0 else 1):
            image_id = "I" + _hex("image", p, k)
            size = 256 if site == "dev" else 320
            images.append(
                {
                    "image_id": image_id,
                    "patient_key": patient,
                    "study_key": "S" + _hex("study", p),
                    "series_key": "R" + _hex("series", p),
                    "site": site,
                    "modality": "MR",
                    "plane": "sagittal",
                    "manufacturer": "SIEMENS" if site == "dev" else "Philips",
                    "model": "MAGNETOM Skyra" if site == "dev" else "Ingenia",
                    # Siemens reports its 3 T field as 2.89362: must count as 3.0
                    "field_strength": 2.89362 if site == "dev" else 1.5,
                    "pixel_spacing_row": 240 / size,
                    "pixel_spacing_col": 240 / size,
                    "slice_thickness": 3.0,
                    "repetition_time": 3500.0,
                    "echo_time": 95.0,
                    "rows": size,
                    "columns": size,
                    "series_description": "SAG T2 TSE",
                    "transfer_syntax": "Explicit VR Little Endian",
                    "study_year": 2022,
                    "is_synthetic": True,
                    "image_sha256": _hex("pixels", p, k, n=64),
                    "image_path": f"images/{image_id}.png",
                }
            )
            splits.append(
                {
                    "image_id": image_id,
                    "patient_key": patient,
                    "site": site,
                    "split": split,
                    "fold": fold,
                    "has_compression": compressed,
                }
            )
            for reader, level in (("expert_1", "expert"), ("mid_1", "mid")):
                for level_i in range(3):
                    label = "compression" if compressed and level_i == 1 else "normal"
                    y0 = 40.0 + 50 * level_i
                    boxes.append(
                        {
                            "image_id": image_id,
                            "patient_key": patient,
                            "reader_id": reader,
                            "reader_level": level,
                            "label": label,
                            "class_id": 1 if label == "compression" else 0,
                            "x_min": 100.0,
                            "y_min": y0,
                            "x_max": 140.0,
                            "y_max": y0 + 20,
                            "severity": "moderate" if label == "compression" else None,
                        }
                    )
    return Dataset(
        pd.DataFrame(images, columns=list(IMAGE_COLUMNS)),
        pd.DataFrame(boxes, columns=list(ANNOTATION_TABLE_COLUMNS)),
        pd.DataFrame(splits),
    )


def _paths(tmp_path: Path) -> PathsParams:
    return PathsParams(
        ingested_dir=tmp_path / "ingested", splits_file=tmp_path / "splits.parquet", reports_dir=tmp_path / "reports"
    )


def run(
    tmp_path: Path,
    ds: Dataset,
    params: ValidateParams | None = None,
    with_splits: bool = True,
    readers: ReadersParams | None = None,
) -> ValidationReport:
    paths = _paths(tmp_path)
    paths.ingested_dir.mkdir(exist_ok=True)
    ds.images.to_parquet(paths.ingested_dir / IMAGES_TABLE, index=False)
    ds.annotations.to_parquet(paths.ingested_dir / ANNOTATIONS_TABLE, index=False)
    if with_splits:
        ds.splits.to_parquet(paths.splits_file, index=False)
    return validate_dataset(params or ValidateParams(), readers or ReadersParams(), paths, EXTERNAL)


@dataclass
class CleanRun:
    first: ValidationReport
    second: ValidationReport
    summaries: tuple[bytes, bytes]
    stderr: str
    tmp: Path


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """The clean dataset validated twice in one folder, with sockets refused and stderr captured."""
    tmp = tmp_path_factory.mktemp("clean")
    summary = tmp / "reports" / "validation" / "summary.json"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        first = run(tmp, clean_dataset())
        first_summary = summary.read_bytes()
        second = run(tmp, clean_dataset())
    return CleanRun(first, second, (first_summary, summary.read_bytes()), err.getvalue(), tmp)


# --- breakages: each mutates a clean dataset once -----------------------------------------------------------------


def _cv_patient_with_two_images(ds: Dataset) -> str:
    counts = ds.splits[ds.splits["split"] == "cv"].groupby("patient_key").size()
    return str(counts[counts == 2].index[0])


def _set(table: str, column: str, value: object, row: int = 0) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        getattr(ds, table).loc[row, column] = value

    return mutate


def _duplicate_image(ds: Dataset) -> None:
    ds.images = pd.concat([ds.images, ds.images.iloc[[3]]], ignore_index=True)


def _box_outside(ds: Dataset) -> None:
    ds.annotations.loc[0, "x_max"] = 256 + 50.0


def _zero_width(ds: Dataset) -> None:
    ds.annotations.loc[1, "x_max"] = ds.annotations.loc[1, "x_min"]


def _no_expert_read(ds: Dataset) -> None:
    image_id = ds.splits.loc[ds.splits["split"] == "cv", "image_id"].iloc[0]
    a = ds.annotations
    ds.annotations = a[~((a["image_id"] == image_id) & (a["reader_level"] == "expert"))].reset_index(drop=True)


def _two_folds(ds: Dataset) -> None:
    patient = _cv_patient_with_two_images(ds)
    rows = ds.splits.index[ds.splits["patient_key"] == patient]
    ds.splits.loc[rows[1], "fold"] = (ds.splits.loc[rows[0], "fold"] + 1) % 5


def _cv_and_test(ds: Dataset) -> None:
    patient = _cv_patient_with_two_images(ds)
    row = ds.splits.index[ds.splits["patient_key"] == patient][1]
    ds.splits.loc[row, ["split", "fold"]] = ["internal_test", -1]


def _external_in_cv(ds: Dataset) -> None:
    rows = ds.splits.index[ds.splits["site"] == "ext"]
    patient = ds.splits.loc[rows[0], "patient_key"]
    mask = ds.splits["patient_key"] == patient
    ds.splits.loc[mask, "split"] = "cv"
    ds.splits.loc[mask, "fold"] = 0


def _fold_imbalance(ds: Dataset) -> None:
    # Every compressed cv patient to folds 0-2 and every normal one to folds 3-4 (same fold sizes, no leakage).
    cv = ds.splits[ds.splits["split"] == "cv"]
    patients = cv.drop_duplicates("patient_key").sort_values("has_compression", ascending=False, kind="stable")
    fold_of = {key: i // 10 for i, key in enumerate(patients["patient_key"])}
    ds.splits.loc[cv.index, "fold"] = cv["patient_key"].map(fold_of)


BREAKAGES: list[tuple[str, Callable[[Dataset], None], str]] = [
    ("wrong_modality", _set("images", "modality", "CT"), "images: modality in {MR}"),
    ("axial_plane", _set("images", "plane", "axial"), "images: plane in {sagittal}"),
    ("field_strength_7t", _set("images", "field_strength", 7.0), "images: field strength in {1.5, 3} T"),
    ("spacing_5mm", _set("images", "pixel_spacing_row", 5.0), "images: pixel spacing (row) in [0.2, 2.5] mm"),
    ("matrix_4000", _set("images", "columns", 4000), "images: matrix columns in [64, 1024] px"),
    ("null_manufacturer", _set("images", "manufacturer", None), "images: manufacturer never null"),
    ("duplicate_image_id", _duplicate_image, "images: one row per image (image_id unique)"),
    ("name_as_patient_key", _set("images", "patient_key", "DOE^JOHN"), "images: patient_key is pseudonymous"),
    ("dob_in_text", _set("images", "series_description", "SAG T2 19650312"), "images: no value looks like a date"),
    ("uid_in_text", _set("images", "model", "1.2.840.113619.2.55.3"), "images: no value looks like an original DICOM"),
    ("box_outside_image", _box_outside, "annotations: every box inside its image (x_max <= image columns)"),
    ("zero_width_box", _zero_width, "annotations: box has positive width"),
    ("bad_label", _set("annotations", "label", "stenosis"), "annotations: label in {normal, compression}"),
    ("cv_image_without_expert", _no_expert_read, "annotations: every image that enters training has an expert"),
    ("unknown_reader_level", _set("annotations", "reader_level", "resident"), "annotations: reader level known"),
    ("unknown_reader", _set("annotations", "reader_id", "dr who"), "annotations: reader known"),
    ("patient_in_two_folds", _two_folds, "splits: no patient in two folds"),
    ("patient_in_cv_and_test", _cv_and_test, "splits: no patient in both training and a test set"),
    ("external_site_in_cv", _external_in_cv, "splits: the external site is never in training"),
    ("fold_imbalance", _fold_imbalance, "splits: class balance per fold within tolerance"),
]
IDENTITIES = {"DOE^JOHN", "19650312", "1.2.840.113619.2.55.3"}


def _docs_text(reports: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in reports.rglob("*.html"))


# --- tests --------------------------------------------------------------------------------------------------------


def test_clean_dataset_passes(clean: CleanRun) -> None:
    report = clean.first
    assert report.success, report.message()
    assert report.failures == []
    report.raise_for_failures()  # no exception
    docs = clean.tmp / "reports" / "validation"
    assert report.docs_index == docs / "index.html" and report.docs_index.is_file()
    summary = json.loads((docs / "summary.json").read_text())
    assert summary == report.summary
    assert summary["success"] and summary["splits_validated"] and summary["failed_expectations"] == []
    assert set(summary["tables"]) == {"images", "annotations", "splits"}
    assert all(t["success"] and t["failed"] == 0 and t["expectations"] > 0 for t in summary["tables"].values())
    suites = {p.parent.parent.parent.name for p in (docs / "validations").rglob("*.html")}
    assert suites == set(SUITES)  # one Data Docs page per suite run
    assert report.message().startswith("data contracts hold")


def test_rerun_gives_the_same_summary_and_replaces_the_docs(clean: CleanRun) -> None:
    assert clean.summaries[0] == clean.summaries[1]  # deterministic: usable as a DVC metric
    assert clean.first.summary == clean.second.summary
    runs = list((clean.tmp / "reports" / "validation" / "validations" / "images").iterdir())
    assert len(runs) == 1  # the first run's pages were replaced, not accumulated
    assert not any(p.name.startswith(".") for p in (clean.tmp / "reports").iterdir())  # no staging left behind


def test_no_network_and_no_progress_bars(clean: CleanRun) -> None:
    # The fixture refused every socket connection: reaching here means GX never phoned home.
    assert clean.first.success
    assert "Calculating Metrics" not in clean.stderr and "%|" not in clean.stderr, clean.stderr


@pytest.mark.parametrize(("case", "mutate", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_broken_contract_fails_and_is_named(
    tmp_path: Path, case: str, mutate: Callable[[Dataset], None], expected: str
) -> None:
    ds = clean_dataset()
    mutate(ds)
    readers = ReadersParams(known=["expert_1", "mid_1"]) if case == "unknown_reader" else None
    # The images and annotations contracts do not read the splits; leaving them out keeps each run short.
    with_splits = expected.startswith("splits") or case == "cv_image_without_expert"
    report = run(tmp_path, ds, with_splits=with_splits, readers=readers)
    assert not report.success
    with pytest.raises(DataContractError) as err:
        report.raise_for_failures()
    message = str(err.value)
    assert expected in message, message
    named = [f for f in report.failures if f.expectation.startswith(expected)]
    assert named, [f.expectation for f in report.failures]
    failure = named[0]
    assert failure.examples or failure.error, failure  # a few offending rows, or why it could not run
    assert not json.loads(_paths(tmp_path).summary_file("validation").read_text())["success"]
    # Identity never leaves in the message, the summary or the Data Docs, even when it is the offending value.
    docs = _docs_text(tmp_path / "reports")
    for value in IDENTITIES:
        assert value not in message and value not in docs, value
    if case in {"name_as_patient_key", "dob_in_text", "uid_in_text"}:
        assert "[redacted]" in message and "[redacted]" in docs  # named and pointed at, but not shown


def test_message_names_every_failed_expectation_with_examples(tmp_path: Path) -> None:
    ds = clean_dataset()
    _set("images", "plane", "axial", row=2)(ds)
    _zero_width(ds)
    _two_folds(ds)
    ds.images = ds.images.drop(columns=["series_key"])  # a contract column gone: reported, and its checks cannot run
    report = run(tmp_path, ds)
    message = report.message()
    names = [f.expectation for f in report.failures]
    assert names == [
        "images: has every contract column",
        "images: series_key is pseudonymous (R + 16 hex)",
        "images: plane in {sagittal}",
        "annotations: box has positive width (x_max > x_min)",
        "splits: no patient in two folds",
    ]
    assert all(name in message for name in names)
    assert message.count("\n- ") == len(names)
    by_name = {f.expectation: f for f in report.failures}
    assert by_name["images: has every contract column"].examples == [{"missing": ["series_key"]}]
    assert "does not exist" in (by_name["images: series_key is pseudonymous (R + 16 hex)"].error or "")
    plane = by_name["images: plane in {sagittal}"]
    assert plane.unexpected_count == 1 and plane.element_count == len(ds.images)
    assert plane.examples == [{"image_id": ds.images.loc[2, "image_id"], "plane": "axial"}]
    assert f'{{"image_id": "{ds.images.loc[2, "image_id"]}", "plane": "axial"}}' in message
    assert all(len(f.examples) <= ValidateParams().max_examples for f in report.failures)
    assert report.summary["failed_expectations"] == names
    assert {t: v["failed"] for t, v in report.summary["tables"].items()} == {"images": 3, "annotations": 1, "splits": 1}


def test_without_splits_only_images_and_annotations_run_and_every_image_needs_an_expert_read(tmp_path: Path) -> None:
    # With no splits yet, any image may enter training: an external image without an expert read fails too.
    ds = clean_dataset()
    ext_image = ds.images.loc[ds.images["site"] == "ext", "image_id"].iloc[0]
    a = ds.annotations
    ds.annotations = a[~((a["image_id"] == ext_image) & (a["reader_level"] == "expert"))].reset_index(drop=True)
    report = run(tmp_path, ds, with_splits=False)
    assert set(report.summary["tables"]) == {"images", "annotations"} and not report.summary["splits_validated"]
    assert [f.expectation for f in report.failures] == [
        "annotations: every image that enters training has an expert reference read"
    ]
    assert report.failures[0].examples[0]["image_id"] == ext_image


def test_missing_ingested_table_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images\.parquet"):
        validate_dataset(ValidateParams(), ReadersParams(), _paths(tmp_path), EXTERNAL)


def test_params_reject_unknown_keys_and_bad_ranges() -> None:
    with pytest.raises(ValueError, match="extra"):
        ValidateParams.model_validate({"fold_balance_tolerence": 0.1})
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        ValidateParams(pixel_spacing_mm=(2.0, 1.0))
    with pytest.raises(ValueError, match="reader_id_pattern"):  # moved to readers.id_pattern
        ValidateParams.model_validate({"reader_id_pattern": "^a$"})
    with pytest.raises(ValueError, match="id_pattern is not a valid regex"):
        ReadersParams(id_pattern="([")
    with pytest.raises(ValueError, match="reference_level 'resident' is not one of levels"):
        ReadersParams(reference_level="resident")
