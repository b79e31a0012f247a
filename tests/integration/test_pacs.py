"""`DicomWebPacs` against a real PACS: Debian's Orthanc with its DICOMweb plugin (basic auth), started per module.

Two synthetic sagittal MR studies (two images each) are stored with STOW-RS; then QIDO-RS finds exactly them (with
the date and modality filters), WADO-RS writes Part 10 files with the same pixels and UIDs, a Secondary Capture
stored back lands in its study and is never fetched as an input, refusals and an unreachable server become a
`PacsError`, and no UID or name reaches the logs.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pipelines.predict.pacs import PASSWORD_ENV, USERNAME_ENV, DicomWebPacs, PacsError
from tests.servers import LOCALHOST, Orthanc, free_port, orthanc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 64


@dataclass(frozen=True)
class Study:
    uid: str
    date: datetime.date
    patient_name: str
    images: tuple[Dataset, ...]


def mr_image(study_uid: str, series_uid: str, date: datetime.date, patient: str, number: int, seed: int) -> Dataset:
    """A single-frame sagittal MR image (MONOCHROME2, 16-bit), patient/study/series/image modules, no preamble."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    # One PatientID per study: Orthanc files a StudyInstanceUID under two PatientIDs as two studies
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, f"ID-{seed // 10}", "19600101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, f"{date:%Y%m%d}", "101500"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = f"S{seed // 10}", "", ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 3, "MR"
    ds.SeriesDescription, ds.BodyPartExamined = "SAG T2", "CSPINE"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = generate_uid(), ""
    ds.Manufacturer, ds.MagneticFieldStrength = "Synthetic", 1.5
    ds.InstanceNumber = number
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    ds.ImagePositionPatient = [float(number - 1) * 3.0, -120.0, 120.0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 3.0
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 3000.0, 100.0, 16
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, size=(SIZE, SIZE), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def make_study(date: datetime.date, patient: str, seed: int) -> Study:
    study_uid, series_uid = generate_uid(), generate_uid()
    images = tuple(mr_image(study_uid, series_uid, date, patient, n, seed * 10 + n) for n in (1, 2))
    return Study(study_uid, date, patient, images)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as running:
        yield running


@pytest.fixture(scope="module")
def pacs(server: Orthanc) -> DicomWebPacs:
    return DicomWebPacs(server.dicomweb, timeout_s=30, username=server.user.username, password=server.user.password)


@pytest.fixture(scope="module")
def studies(pacs: DicomWebPacs) -> tuple[Study, Study]:
    """Two MR studies, older (2024) and newer (2025), stored through DicomWebPacs.store."""
    old = make_study(datetime.date(2024, 1, 10), "Synthetic^Older", 1)
    new = make_study(datetime.date(2025, 3, 15), "Synthetic^Newer", 2)
    pacs.store([*old.images, *new.images])
    return old, new


def raw_client(server: Orthanc) -> DICOMwebClient:
    """An independent client to check what the server holds."""
    session = requests.Session()
    session.auth = (server.user.username, server.user.password)
    return DICOMwebClient(server.dicomweb, session=session)


def test_find_studies_finds_exactly_the_stored_ones(pacs: DicomWebPacs, studies: tuple[Study, Study]) -> None:
    old, new = studies
    found = {ref.study_uid: ref for ref in pacs.find_studies()}
    assert set(found) == {old.uid, new.uid}
    for ref in found.values():
        assert (ref.modalities, ref.n_series, ref.n_instances) == (("MR",), 1, 2)
    assert [ref.study_uid for ref in pacs.find_studies(since=datetime.date(2025, 1, 1))] == [new.uid]
    assert [ref.study_uid for ref in pacs.find_studies(since=new.date)] == [new.uid]  # the day itself counts
    assert pacs.find_studies(since=datetime.date(2026, 1, 1)) == []
    assert pacs.find_studies(modality="CT") == []
    assert {ref.study_uid for ref in pacs.find_studies(modality=None)} == {old.uid, new.uid}
    assert len(pacs.find_studies(limit=1)) == 1


def test_fetch_study_writes_part10_files_with_the_same_pixels_and_uids(
    pacs: DicomWebPacs, studies: tuple[Study, Study], tmp_path: Path
) -> None:
    old, _ = studies
    paths = pacs.fetch_study(old.uid, tmp_path)
    sent = {ds.SOPInstanceUID: ds for ds in old.images}
    assert sorted(p.name for p in paths) == sorted(f"{uid}.dcm" for uid in sent)
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no partial files left
    for path in paths:
        got = pydicom.dcmread(path)  # no force: a Part 10 file with preamble and file meta
        assert got.preamble is not None and got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
        original = sent[got.SOPInstanceUID]
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            assert got[keyword].value == original[keyword].value
        assert got.pixel_array.dtype == np.uint16
        np.testing.assert_array_equal(got.pixel_array, original.pixel_array)
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    assert pacs.fetch_study(old.uid, tmp_path) == paths  # already there: not fetched again
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes
    assert pacs.fetch_study(generate_uid(), tmp_path / "none") == []  # a study the server does not hold


def secondary_capture(source: Dataset) -> hd.sc.SCImage:
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.zeros((SIZE, SIZE), dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cordwatch",
        patient_orientation=("P", "F"),
    )
    capture.BodyPartExamined = "CSPINE"
    return capture


def test_a_derived_object_lands_in_its_study_and_is_not_fetched(
    pacs: DicomWebPacs, server: Orthanc, studies: tuple[Study, Study], tmp_path: Path
) -> None:
    _, new = studies
    capture = secondary_capture(new.images[0])
    pacs.store([capture])
    pacs.store([capture])  # a re-run stores the same object again: not a failure, still one instance
    client = raw_client(server)
    series = client.search_for_series(study_instance_uid=new.uid)
    assert len(series) == 2
    instances = client.search_for_instances(study_instance_uid=new.uid)
    assert len(instances) == 3
    assert capture.SOPInstanceUID in {item["00080018"]["Value"][0] for item in instances}
    paths = pacs.fetch_study(new.uid, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in new.images)
    assert len(list(tmp_path.iterdir())) == 2


def test_a_refused_instance_names_how_many_and_why(pacs: DicomWebPacs, server: Orthanc) -> None:
    good = make_study(datetime.date(2025, 6, 1), "Synthetic^Refused", 3)
    bad = mr_image(good.uid, generate_uid(), good.date, good.patient_name, 9, 33)
    del bad.StudyInstanceUID
    with pytest.raises(PacsError, match=r"failed for 1 of 2 \(1 x reason 0xC000") as exc:
        pacs.store([good.images[0], bad])
    assert server.dicomweb in str(exc.value) and good.uid not in str(exc.value)
    assert len(raw_client(server).search_for_instances(study_instance_uid=good.uid)) == 1  # the other is stored
    no_meta = mr_image(good.uid, generate_uid(), good.date, good.patient_name, 8, 34)
    del no_meta.file_meta
    with pytest.raises(ValueError, match="Transfer Syntax"):
        pacs.store([no_meta])


def test_an_unreachable_server_fails_fast_and_plainly(tmp_path: Path) -> None:
    url = f"http://{LOCALHOST}:{free_port()}/dicom-web"  # nothing listens there
    pacs = DicomWebPacs(url, timeout_s=30)
    study = make_study(datetime.date(2025, 1, 1), "Synthetic^Nobody", 4)
    calls = (
        ("searching studies", pacs.find_studies),
        ("listing a study's instances", lambda: pacs.fetch_study(study.uid, tmp_path)),
        ("storing 2 instances", lambda: pacs.store(study.images)),
    )
    for what, call in calls:
        started = time.monotonic()
        with pytest.raises(PacsError) as exc:
            call()
        assert time.monotonic() - started < 5
        message = str(exc.value)
        assert url in message and what in message and "cannot connect (Connection refused)" in message
        assert study.uid not in message
        assert exc.value.__suppress_context__  # one error, not a chain of requests' and urllib3's


def test_credentials_wrong_or_from_the_environment(
    server: Orthanc, studies: tuple[Study, Study], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PacsError, match=r"HTTP 401 .*check the credentials"):
        DicomWebPacs(server.dicomweb, username=server.user.username, password="wrong").find_studies()
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    with pytest.raises(PacsError, match="HTTP 401"):
        DicomWebPacs(server.dicomweb).find_studies()
    monkeypatch.setenv(USERNAME_ENV, server.user.username)
    monkeypatch.setenv(PASSWORD_ENV, server.user.password)
    pacs = DicomWebPacs(server.dicomweb + "/")
    assert {ref.study_uid for ref in pacs.find_studies()} >= {study.uid for study in studies}
    assert server.user.password not in repr(pacs)


def test_logs_name_no_uid_and_no_patient(
    pacs: DicomWebPacs, studies: tuple[Study, Study], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, _ = studies
    caplog.set_level(logging.DEBUG)
    pacs.find_studies()
    paths = pacs.fetch_study(old.uid, tmp_path)
    pacs.store([pydicom.dcmread(paths[0])])
    assert caplog.records, "the library logs nothing at DEBUG: the check would be empty"
    text = caplog.text
    for secret in (old.uid, old.images[0].SeriesInstanceUID, old.images[0].SOPInstanceUID, "Synthetic", "ID-"):
        assert secret not in text
    assert "2 fetched" in text or "2 of a study" in text
