"""Build MR Image Storage datasets for the phantoms and write them atomically.

Every UID comes from `pydicom.uid.generate_uid` with entropy derived from the seed, so reruns are
byte-identical, and nothing reads the clock. The fake identity (name, IDs, dates, physician, address) is
deliberately realistic so the ingest stage's de-identification has something real to remove.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

SYNTHETIC_COMMENT = "SYNTHETIC PHANTOM - cordwatch"
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["cordwatch", "synth", "implementation", "1"])
IMPLEMENTATION_VERSION = "CORDWATCH_SYN1"  # SH, at most 16 characters
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def uid(*parts: object) -> str:
    """Deterministic DICOM UID from the given parts (seed, profile, site, patient, role ...)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


@dataclass(frozen=True)
class Identity:
    """Fake patient and study identity (PHI-shaped, entirely invented)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age_years: int
    study_date: str
    study_time: str
    accession: str
    referring_physician: str
    study_uid: str
    frame_uid: str


@dataclass(frozen=True)
class SeriesInfo:
    """Series-level attributes shared by the images of one series."""

    series_uid: str
    series_number: int
    description: str
    tr_ms: float
    te_ms: float
    echo_train_length: int
    sequence_name: str
    scanning_sequence: str
    sequence_variant: str
    flip_angle: float
    slice_thickness_mm: float
    spacing_mm: float
    iop: Sequence[float]
    phase_encoding: str = "ROW"  # InPlanePhaseEncodingDirection: ROW or COL (the axis motion ghosts and wrap run along)


@dataclass(frozen=True)
class Equipment:
    """Site and scanner attributes."""

    institution_name: str
    institution_address: str
    manufacturer: str
    model: str
    field_strength: float
    station_name: str
    software_versions: str
    device_serial: str


def _ds_str(x: float) -> str:
    """Decimal string (DS, 16 characters max) with a stable format."""
    s = f"{x:.6g}"
    return "0" if s == "-0" else s


def build_dataset(
    pixels: np.ndarray,
    *,
    ident: Identity,
    equip: Equipment,
    series: SeriesInfo,
    sop_uid: str,
    instance_number: int,
    pixel_spacing: float,
    position: Sequence[float],
    slice_location: float,
) -> Dataset:
    """One MR Image Storage dataset (Explicit VR Little Endian, 12 bits stored in 16).

    Args:
        pixels: uint16 image, rows x columns, values below 4096.
        ident: patient/study identity.
        equip: site and scanner.
        series: series attributes, including orientation.
        sop_uid: SOPInstanceUID.
        instance_number: InstanceNumber (also the file name).
        pixel_spacing: square pixel size, mm.
        position: ImagePositionPatient (centre of the first transmitted pixel), mm.
        slice_location: SliceLocation, mm.
    """
    rows, cols = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.InstanceCreationDate = ident.study_date
    ds.InstanceCreationTime = ident.study_time
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ident.study_date
    ds.SeriesDate = ident.study_date
    ds.AcquisitionDate = ident.study_date
    ds.ContentDate = ident.study_date
    ds.StudyTime = ident.study_time
    ds.SeriesTime = ident.study_time
    ds.AcquisitionTime = ident.study_time
    ds.ContentTime = ident.study_time
    ds.AccessionNumber = ident.accession
    ds.Modality = "MR"
    ds.Manufacturer = equip.manufacturer
    ds.InstitutionName = equip.institution_name
    ds.InstitutionAddress = equip.institution_address
    ds.ReferringPhysicianName = ident.referring_physician
    ds.StationName = equip.station_name
    ds.StudyDescription = "MRI CERVICAL SPINE"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = equip.model
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientAge = f"{ident.age_years:03d}Y"
    ds.PatientComments = SYNTHETIC_COMMENT
    ds.BodyPartExamined = "CSPINE"
    ds.ScanningSequence = series.scanning_sequence
    ds.SequenceVariant = series.sequence_variant.split("\\")
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = series.sequence_name
    ds.AngioFlag = "N"
    ds.SliceThickness = _ds_str(series.slice_thickness_mm)
    ds.RepetitionTime = _ds_str(series.tr_ms)
    ds.EchoTime = _ds_str(series.te_ms)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds_str(42.577478 * equip.field_strength)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = _ds_str(equip.field_strength)
    ds.SpacingBetweenSlices = _ds_str(series.spacing_mm)
    ds.EchoTrainLength = series.echo_train_length
    ds.DeviceSerialNumber = equip.device_serial
    ds.SoftwareVersions = equip.software_versions
    ds.ProtocolName = series.description
    # AcquisitionMatrix is frequency rows \ frequency columns \ phase rows \ phase columns: phase along the row
    # direction (ROW) puts the frequency encoding down the columns, and the reverse for COL.
    ds.AcquisitionMatrix = [rows, 0, 0, cols] if series.phase_encoding == "ROW" else [0, cols, rows, 0]
    ds.InPlanePhaseEncodingDirection = series.phase_encoding
    ds.FlipAngle = _ds_str(series.flip_angle)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = ident.accession[-6:]
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds_str(v) for v in position]
    ds.ImageOrientationPatient = [_ds_str(v) for v in series.iop]
    ds.FrameOfReferenceUID = ident.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds_str(slice_location)
    ds.ImageComments = SYNTHETIC_COMMENT
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds_str(pixel_spacing), _ds_str(pixel_spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    lo, hi = np.percentile(pixels, [1.0, 99.5])
    ds.WindowCenter = _ds_str(round(float(lo + hi) / 2.0))
    ds.WindowWidth = _ds_str(max(round(float(hi - lo)), 1))
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def write_atomic(ds: Dataset, path: Path) -> None:
    """Write `ds` as a DICOM Part 10 file via a temporary sibling and a rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
