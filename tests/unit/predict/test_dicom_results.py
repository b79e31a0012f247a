"""DICOM results: the SR and heatmap captures pass dciodvfy, land in the source study and read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom import UID
from pydicom import Dataset

from pipelines.predict.dicom_results import (
    Algorithm,
    ReportedDetection,
    ResultDetection,
    heatmap_capture,
    read_structured_report,
    structured_report,
)
from tests.conftest import CANARY, mr_dataset
from tests.dicom_checks import dciodvfy_errors

ROWS, COLUMNS = 96, 80  # not square, so a swapped axis shows
ALGORITHM = Algorithm(name="cordwatch-detector", version="7", uri="models:/cordwatch-detector/7")
SR_SERIES = "1.2.826.0.1.3680043.8.498.1"
CAPTURE_SERIES = "1.2.826.0.1.3680043.8.498.2"


def study(n: int, **overrides) -> list[Dataset]:
    """`n` sagittal MR images of one study and series, headers as a scanner writes them."""
    study_uid, series_uid = UID(), UID()
    images = []
    for i in range(n):
        tags = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "StudyID": "4711",
            "StudyTime": "101500",
            "SeriesNumber": 3,
            "InstanceNumber": i + 1,
            "ImagePositionPatient": [float(i * 3), -100.0, 100.0],
        }
        ds = mr_dataset(np.random.default_rng(i), shape=(ROWS, COLUMNS), **(tags | overrides))
        images.append(ds)
    return images


def write(ds: Dataset, path: Path) -> Dataset:
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def assert_valid(path: Path) -> None:
    errors = dciodvfy_errors(path)
    assert errors == [], "\n".join(errors)


def test_sr_covers_the_study_and_reads_back(tmp_path: Path) -> None:
    images = study(3)
    del images[1].PixelData  # the caller may drop pixels: only headers are read
    detections = {
        0: [
            ResultDetection("compression", 0.91, (10.5, 20.25, 30.75, 44.0)),
            ResultDetection("normal", 0.42, (0.0, 0.0, 80.0, 96.0)),
        ],
        1: [ResultDetection("normal", 0.777, (12.0, 50.0, 40.125, 70.5))],
        2: [],
    }
    report = structured_report(
        [(images[i], detections[i]) for i in range(3)], ALGORITHM, series_uid=SR_SERIES, series_number=9901
    )
    back = write(report, tmp_path / "sr.dcm")
    assert_valid(tmp_path / "sr.dcm")

    expected = [
        ReportedDetection(images[i].SOPInstanceUID, d.label, d.confidence, d.box)
        for i in range(3)
        for d in detections[i]
    ]
    got = read_structured_report(back)
    assert [(g.sop_instance_uid, g.label) for g in got] == [(e.sop_instance_uid, e.label) for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.confidence == pytest.approx(e.confidence, abs=1e-6)
        assert g.box == pytest.approx(e.box, abs=1e-3)

    # Same study and patient, a new series of its own; an unverified preliminary AI result.
    assert back.StudyInstanceUID == images[0].StudyInstanceUID
    assert back.PatientID == CANARY["PatientID"]
    assert back.SeriesInstanceUID == SR_SERIES != images[0].SeriesInstanceUID
    assert (back.SeriesNumber, back.SeriesDescription, back.Manufacturer) == (9901, "cordwatch AI results", "cordwatch")
    assert (back.CompletionFlag, back.PreliminaryFlag, back.VerificationFlag) == (
        "PARTIAL",
        "PRELIMINARY",
        "UNVERIFIED",
    )
    # Every image, the one without detections included, is evidence.
    evidence = {
        item.ReferencedSOPInstanceUID
        for study_item in back.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {ds.SOPInstanceUID for ds in images}
    text = back.to_json()
    assert "cordwatch-detector" in text and "models:/cordwatch-detector/7" in text
    assert "detection 3" in text and "All algorithms succeeded; without findings" in text
    assert "Image Library" in text


def test_sr_of_a_study_without_detections_is_valid(tmp_path: Path) -> None:
    # Headers missing Type 2 study attributes (no StudyID, StudyTime, AccessionNumber) still make a report; without
    # SliceThickness the images cannot be described in an image library, so the evidence alone lists them.
    images = study(2, AccessionNumber=None, StudyID=None, StudyTime=None, SliceThickness=None)
    report = structured_report([(ds, []) for ds in images], ALGORITHM, series_uid=SR_SERIES, series_number=9901)
    back = write(report, tmp_path / "empty.dcm")
    assert_valid(tmp_path / "empty.dcm")
    assert read_structured_report(back) == []
    assert back.StudyInstanceUID == images[0].StudyInstanceUID
    assert "Image Library" not in back.to_json() and "image 2: no detections" in back.to_json()


def test_sr_is_stable_for_the_same_uids() -> None:
    images = study(1)
    pairs = [(images[0], [ResultDetection("compression", 0.5, (1.0, 2.0, 3.0, 4.0))])]
    a, b = (
        structured_report(pairs, ALGORITHM, series_uid=SR_SERIES, series_number=9901, sop_instance_uid="1.2.3.4")
        for _ in range(2)
    )
    assert a.ContentSequence == b.ContentSequence


def test_heatmap_capture(tmp_path: Path) -> None:
    source = study(1)[0]
    del source.PixelData
    overlay = np.random.default_rng(5).integers(0, 256, size=(ROWS, COLUMNS, 3), dtype=np.uint8)
    detection = ResultDetection("compression", 0.88, (10.0, 20.0, 30.0, 40.0))
    capture = heatmap_capture(
        source,
        overlay,
        detection,
        ALGORITHM,
        series_uid=CAPTURE_SERIES,
        series_number=9902,
        instance_number=4,
        method="hirescam",
    )
    back = write(capture, tmp_path / "sc.dcm")
    assert_valid(tmp_path / "sc.dcm")

    assert back.BodyPartExamined == "CSPINE"
    assert back.StudyInstanceUID == source.StudyInstanceUID and back.PatientID == source.PatientID
    assert (back.SeriesInstanceUID, back.SeriesNumber, back.InstanceNumber) == (CAPTURE_SERIES, 9902, 4)
    assert back.SeriesDescription == "cordwatch AI heatmaps"
    assert back.BurnedInAnnotation == "NO"
    assert "hirescam" in back.DerivationDescription and "compression" in back.DerivationDescription
    assert list(back.PatientOrientation) == ["P", "F"]  # sagittal: rows run posterior, columns run to the feet
    np.testing.assert_array_equal(back.pixel_array, overlay)
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)


def test_heatmap_capture_keeps_the_source_body_part() -> None:
    source = study(1, BodyPartExamined="NECK")[0]
    overlay = np.zeros((ROWS, COLUMNS, 3), dtype=np.uint8)
    detection = ResultDetection("normal", 0.3, (1.0, 1.0, 2.0, 2.0))
    capture = heatmap_capture(
        source, overlay, detection, ALGORITHM, series_uid=CAPTURE_SERIES, series_number=1, instance_number=1, method="x"
    )
    assert capture.BodyPartExamined == "NECK"
    with pytest.raises(ValueError, match="overlay must be uint8"):
        heatmap_capture(
            source,
            overlay[:-1],
            detection,
            ALGORITHM,
            series_uid=CAPTURE_SERIES,
            series_number=1,
            instance_number=1,
            method="x",
        )


@pytest.mark.parametrize(
    ("detection", "message"),
    [
        (ResultDetection("compression", 0.5, (10.0, 10.0, 81.0, 20.0)), "outside the image"),
        (ResultDetection("compression", 0.5, (-1.0, 10.0, 20.0, 20.0)), "outside the image"),
        (ResultDetection("compression", 0.5, (10.0, 10.0, 20.0, 96.5)), "outside the image"),
        (ResultDetection("compression", 0.5, (20.0, 10.0, 20.0, 30.0)), "x_max > x_min"),
        (ResultDetection("compression", 0.5, (10.0, 30.0, 20.0, 10.0)), "y_max > y_min"),
        (ResultDetection("compression", 0.5, (10.0, float("nan"), 20.0, 30.0)), "finite"),
        (ResultDetection("stenosis", 0.5, (10.0, 10.0, 20.0, 20.0)), "unknown label 'stenosis'"),
        (ResultDetection("normal", 1.5, (10.0, 10.0, 20.0, 20.0)), r"not in \[0, 1\]"),
    ],
)
def test_bad_detections_are_refused(detection: ResultDetection, message: str) -> None:
    source = study(1)[0]
    with pytest.raises(ValueError, match=message):
        structured_report([(source, [detection])], ALGORITHM, series_uid=SR_SERIES, series_number=1)
    with pytest.raises(ValueError, match=message):
        heatmap_capture(
            source,
            np.zeros((ROWS, COLUMNS, 3), dtype=np.uint8),
            detection,
            ALGORITHM,
            series_uid=CAPTURE_SERIES,
            series_number=1,
            instance_number=1,
            method="hirescam",
        )


def test_one_report_is_one_study() -> None:
    a, b = study(1)[0], study(1)[0]
    with pytest.raises(ValueError, match="one study"):
        structured_report([(a, []), (b, [])], ALGORITHM, series_uid=SR_SERIES, series_number=1)
    with pytest.raises(ValueError, match="at least one"):
        structured_report([], ALGORITHM, series_uid=SR_SERIES, series_number=1)
