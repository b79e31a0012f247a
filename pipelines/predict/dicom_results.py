"""The DICOM results a PACS can show: a TID 1500 Structured Report per study and a Secondary Capture per heatmap.

Results go back into the study they were computed on, so these objects carry the source study's real patient and
study identifiers (copied by highdicom from the source headers). This is the one place in the project where
identity is written; nothing here logs or stores it elsewhere.

Only source headers are read (Rows/Columns, UIDs, patient/study modules, geometry): a source dataset may arrive
without PixelData.

Codes (all from pydicom's code dictionary, `pydicom.sr.codedict.codes`, so none is invented):

- finding type "compression": SCT 71173004 "Compression" (a morphologic abnormality), with finding sites SCT 2748008
  "Spinal cord" and SCT 122494005 "Cervical spine": the post-coordinated "compression of the cervical spinal cord";
- finding type "normal": SCT 17621005 "Normal" (the value DICOM's normality context groups use), same sites;
- detector confidence: a NUM DCM 111012 "Certainty of Finding", unit UCUM "1" (no units), value in [0, 1];
- an image the detector ran on and found nothing in: a TID 1501 group whose qualitative evaluation is
  DCM 111017 "CAD Processing and Findings Summary" = DCM 111241 "All algorithms succeeded; without findings"
  (the CAD SR way to say "ran, found nothing", which is not the same claim as "normal");
- algorithm family DCM 123110 "Artificial Intelligence"; procedure reported LN 25056-3 "MRI unspecified body region"
  (CID 100); document title DCM 126000 "Imaging Measurement Report" (TID 1500's default).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from highdicom import sr
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.contracts import CLASS_NAMES

MANUFACTURER = "cordwatch"
SR_SERIES_DESCRIPTION = "cordwatch AI results"
CAPTURE_SERIES_DESCRIPTION = "cordwatch AI heatmaps"
DEFAULT_BODY_PART = "CSPINE"

FINDING_TYPES: dict[str, Code] = {
    "compression": codes.SCT.Compression,  # 71173004, located by FINDING_SITES below
    "normal": codes.SCT.Normal,  # 17621005
}
FINDING_SITES: tuple[Code, ...] = (codes.SCT.SpinalCord, codes.SCT.CervicalSpine)  # 2748008, 122494005
CONFIDENCE: Code = codes.DCM.CertaintyOfFinding  # 111012
NO_UNITS: Code = codes.UCUM.NoUnits  # "1"
NOTHING_FOUND_NAME: Code = codes.DCM.CADProcessingAndFindingsSummary  # 111017
NOTHING_FOUND_VALUE: Code = codes.DCM.AllAlgorithmsSucceededWithoutFindings  # 111241
PROCEDURE_REPORTED: Code = codes.LN.MRIUnspecifiedBodyRegion  # 25056-3
MODEL_URI_PARAMETER = "model_uri="
# "Source image for image processing operation" (CID 7202): why the capture references its source image.
_SOURCE_PURPOSE = Code("121322", "DCM", "Source image for image processing operation")

if set(FINDING_TYPES) != set(CLASS_NAMES):  # pragma: no cover - a contracts change must come here too
    raise RuntimeError(f"FINDING_TYPES {sorted(FINDING_TYPES)} do not cover CLASS_NAMES {list(CLASS_NAMES)}")


@dataclass(frozen=True)
class ResultDetection:
    """One detection predict found on one image.

    Attributes:
        label: "normal" or "compression" (pipelines.contracts.CLASS_NAMES).
        confidence: the detector's score, 0..1.
        box: x_min, y_min, x_max, y_max in pixels of the source image (column, row; 0,0 = top-left corner).
    """

    label: str
    confidence: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Algorithm:
    """The model that produced the detections, as the SR's algorithm identification names it."""

    name: str  # e.g. "cordwatch-detector"
    version: str  # the registered model version
    uri: str = ""  # e.g. "models:/cordwatch-detector/7"; written as an algorithm parameter when set
    family: Code = field(default_factory=lambda: codes.DCM.ArtificialIntelligence)
    manufacturer: str = MANUFACTURER


@dataclass(frozen=True)
class ReportedDetection:
    """One detection as read back from an SR."""

    sop_instance_uid: str
    label: str
    confidence: float
    box: tuple[float, float, float, float]


def _check_detection(source: Dataset, detection: ResultDetection) -> None:
    """Raise ValueError when a detection cannot be placed on its source image."""
    where = f"image {source.SOPInstanceUID}"
    if detection.label not in FINDING_TYPES:
        raise ValueError(f"unknown label {detection.label!r} on {where}; expected one of {list(CLASS_NAMES)}")
    if not (math.isfinite(detection.confidence) and 0.0 <= detection.confidence <= 1.0):
        raise ValueError(f"confidence {detection.confidence!r} on {where} is not in [0, 1]")
    if len(detection.box) != 4 or not all(math.isfinite(v) for v in detection.box):
        raise ValueError(f"box {detection.box!r} on {where} must be 4 finite numbers (x_min, y_min, x_max, y_max)")
    x_min, y_min, x_max, y_max = detection.box
    if x_max <= x_min or y_max <= y_min:
        raise ValueError(f"empty box {detection.box!r} on {where}: needs x_max > x_min and y_max > y_min")
    columns, rows = int(source.Columns), int(source.Rows)
    if x_min < 0 or y_min < 0 or x_max > columns or y_max > rows:
        raise ValueError(f"box {detection.box!r} on {where} lies outside the image ({columns} columns x {rows} rows)")


def _algorithm_id(algorithm: Algorithm) -> sr.AlgorithmIdentification:
    parameters = [f"{MODEL_URI_PARAMETER}{algorithm.uri}"] if algorithm.uri else None
    return sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=parameters,
        family=algorithm.family,
        manufacturer=algorithm.manufacturer,
    )


def _rectangle(box: tuple[float, float, float, float]) -> np.ndarray:
    """The box as a closed 5-point polyline: SR SCOORD has no rectangle graphic type."""
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    return np.array([[x_min, y_min], [x_max, y_min], [x_max, y_max], [x_min, y_max], [x_min, y_min]], dtype=np.float64)


# Patient and study attributes highdicom's SR constructor reads unconditionally; Type 2 in the source IODs, so a
# header may lack them: they are filled in empty rather than failing with an AttributeError.
_SR_TYPE2 = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
)  # fmt: skip
_PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})


def _header(source: Dataset) -> Dataset:
    """A copy of the source's header: no pixel data, the Type 2 patient/study attributes present (maybe empty)."""
    header = Dataset()
    for element in source:
        if element.keyword not in _PIXEL_KEYWORDS:
            header.add(copy.deepcopy(element))  # the SR copies from it: never share elements with the caller's
    for keyword in _SR_TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _has_library_geometry(image: Dataset) -> bool:
    """Whether highdicom can describe `image` in an image library (TID 1604 needs the geometry, with values)."""
    keywords = ("Modality", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness")
    return all(image.get(k) not in (None, "") for k in keywords)


def structured_report(
    images: Sequence[tuple[Dataset, Sequence[ResultDetection]]],
    algorithm: Algorithm,
    *,
    series_uid: str,
    series_number: int,
    sop_instance_uid: str | None = None,
    instance_number: int = 1,
    series_description: str = SR_SERIES_DESCRIPTION,
) -> sr.Comprehensive3DSR:
    """Build one TID 1500 Measurement Report covering every image of one study.

    Each detection becomes a TID 1410 planar ROI group: a closed POLYLINE rectangle on its source image, a finding
    type (compression or normal) at the cervical spinal cord, its confidence as a NUM, the algorithm and a tracking
    identifier ("detection N", numbered across the study, with a UID derived from the SR's UID so a re-run with the
    same UIDs writes the same document). An image with no detections gets a TID 1501 group referencing it that says
    the algorithm ran and found nothing; so every image is covered, and a study with no detections at all still
    yields a valid report. Every image is also listed as evidence and, when its headers carry the geometry, in the
    report's image library.

    The SR is an AI result awaiting a radiologist: PARTIAL, PRELIMINARY and UNVERIFIED.

    Args:
        images: (source image header, its detections) for each image of the study, in reading order.
        algorithm: the model that produced the detections.
        series_uid: the SR series' SeriesInstanceUID (the caller keeps it stable across re-runs).
        series_number: the SR series' SeriesNumber.
        sop_instance_uid: the SR's SOPInstanceUID; a new UID when None.
        instance_number: the SR's InstanceNumber.
        series_description: the SR series' SeriesDescription.

    Returns:
        The SR document, ready for `dcmwrite`.

    Raises:
        ValueError: no images, images from several studies, a repeated image, or a detection with an unknown label,
            a confidence outside [0, 1] or a box empty or outside its image.
    """
    if not images:
        raise ValueError("structured_report needs at least one source image")
    sources = [_header(source) for source, _ in images]
    studies = {str(s.StudyInstanceUID) for s in sources}
    if len(studies) != 1:
        raise ValueError(f"one SR covers one study; got images from {len(studies)} studies")
    uids = [str(s.SOPInstanceUID) for s in sources]
    if len(set(uids)) != len(uids):
        raise ValueError("an image appears more than once in `images`")
    for source, detections in images:
        for detection in detections:
            _check_detection(source, detection)

    sop_instance_uid = sop_instance_uid or hd.UID()
    algorithm_id = _algorithm_id(algorithm)
    finding_sites = [sr.FindingSite(site) for site in FINDING_SITES]
    groups: list[sr.PlanarROIMeasurementsAndQualitativeEvaluations | sr.MeasurementsAndQualitativeEvaluations] = []
    number = 0
    for index, (source, (_, detections)) in enumerate(zip(sources, images, strict=True), start=1):
        if not detections:
            groups.append(_nothing_found(source, index, algorithm_id, sop_instance_uid))
            continue
        for detection in detections:
            number += 1
            region = sr.ImageRegion(
                graphic_type=sr.GraphicTypeValues.POLYLINE,
                graphic_data=_rectangle(detection.box),
                source_image=sr.SourceImageForRegion(
                    referenced_sop_class_uid=source.SOPClassUID,
                    referenced_sop_instance_uid=source.SOPInstanceUID,
                ),
            )
            confidence = sr.Measurement(
                name=CONFIDENCE,
                value=float(detection.confidence),
                unit=NO_UNITS,  # the group's algorithm identification covers it
            )
            groups.append(
                sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=sr.TrackingIdentifier(
                        uid=generate_uid(entropy_srcs=[sop_instance_uid, "detection", str(number)]),
                        identifier=f"detection {number}",
                    ),
                    referenced_region=region,
                    finding_type=FINDING_TYPES[detection.label],
                    algorithm_id=algorithm_id,
                    finding_sites=finding_sites,
                    measurements=[confidence],
                )
            )

    observer = sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=sr.DeviceObserverIdentifyingAttributes(
            # The device UID names the model version, so it is the same in every report that version writes.
            uid=generate_uid(entropy_srcs=[MANUFACTURER, algorithm.name, algorithm.version]),
            name=algorithm.name,
            manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}",
        ),
    )
    library = [s for s in sources if _has_library_geometry(s)]
    report = sr.MeasurementReport(
        observation_context=sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
        # An image library entry needs the geometry; with any image lacking it, the evidence alone lists them.
        referenced_images=sources if len(library) == len(sources) else None,
    )
    return sr.Comprehensive3DSR(
        evidence=sources,
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        # PARTIAL and PRELIMINARY: the AI read is one input to a report a radiologist has yet to make.
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description=series_description,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
    )


def _nothing_found(
    source: Dataset, index: int, algorithm_id: sr.AlgorithmIdentification, sop_instance_uid: str
) -> sr.MeasurementsAndQualitativeEvaluations:
    """The TID 1501 group saying the detector ran on `source` (the report's image `index`) and found nothing."""
    return sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[sop_instance_uid, "image", str(source.SOPInstanceUID)]),
            identifier=f"image {index}: no detections",
        ),
        algorithm_id=algorithm_id,
        qualitative_evaluations=[sr.QualitativeEvaluation(NOTHING_FOUND_NAME, NOTHING_FOUND_VALUE)],
        source_images=[sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID)],
    )


def read_structured_report(ds: Dataset) -> list[ReportedDetection]:
    """Read the detections back from an SR `structured_report` wrote, in document order.

    Groups without an image region (images with no detections) are skipped.

    Raises:
        ValueError: `ds` is not a TID 1500 report, or a region is not the closed 5-point rectangle written here, or a
            finding type or confidence is missing or unknown.
    """
    report = sr.Comprehensive3DSR.from_dataset(ds).content
    if not isinstance(report, sr.MeasurementReport):
        raise ValueError("not a TID 1500 Measurement Report (ContentTemplateSequence does not name TID 1500)")
    labels = {(code.value, code.scheme_designator): label for label, code in FINDING_TYPES.items()}
    detections: list[ReportedDetection] = []
    for group in report.get_planar_roi_measurement_groups():
        region = group.roi
        if region is None:
            continue
        points = np.asarray(region.value, dtype=np.float64)
        if region.graphic_type != sr.GraphicTypeValues.POLYLINE or points.shape != (5, 2):
            raise ValueError(f"region of {group.tracking_identifier!r} is not a closed 5-point polyline")
        finding = group.finding_type
        if finding is None or (finding.value, finding.scheme_designator) not in labels:
            raise ValueError(f"finding type {finding!r} of {group.tracking_identifier!r} is not a cordwatch label")
        confidences = group.get_measurements(name=CONFIDENCE)
        if len(confidences) != 1:
            raise ValueError(f"{group.tracking_identifier!r} has {len(confidences)} confidence values, expected 1")
        reference = region.ContentSequence[0].ReferencedSOPSequence[0]
        detections.append(
            ReportedDetection(
                sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
                label=labels[(finding.value, finding.scheme_designator)],
                confidence=float(confidences[0].value),
                box=(
                    float(points[:, 0].min()),
                    float(points[:, 1].min()),
                    float(points[:, 0].max()),
                    float(points[:, 1].max()),
                ),
            )
        )
    return detections


def _orientation_letters(vector: Sequence[float]) -> str:
    """Patient orientation letters of one image direction (PS3.3 C.7.6.1.1.1), strongest axis first."""
    letters = []
    for axis in np.argsort(-np.abs(np.asarray(vector, dtype=np.float64))):
        component = float(vector[axis])
        if abs(component) < 0.25:  # a minor obliquity adds no letter
            continue
        letters.append(("LR", "PA", "HF")[axis][0 if component > 0 else 1])
    return "".join(letters)


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    """PatientOrientation of an image from its ImageOrientationPatient (or copied when the source has it)."""
    if source.get("PatientOrientation") and len(source.PatientOrientation) == 2:
        return str(source.PatientOrientation[0]), str(source.PatientOrientation[1])
    orientation = source.get("ImageOrientationPatient")
    if not orientation or len(orientation) != 6:
        raise ValueError(f"image {source.SOPInstanceUID} has neither ImageOrientationPatient nor PatientOrientation")
    return _orientation_letters(orientation[:3]), _orientation_letters(orientation[3:])


def heatmap_capture(
    source: Dataset,
    overlay_rgb: np.ndarray,
    detection: ResultDetection,
    algorithm: Algorithm,
    *,
    series_uid: str,
    series_number: int,
    instance_number: int,
    method: str,
    sop_instance_uid: str | None = None,
    series_description: str = CAPTURE_SERIES_DESCRIPTION,
) -> hd.sc.SCImage:
    """Build a Secondary Capture of one detection's heatmap overlay, in the source image's study.

    The capture references its source image (SourceImageSequence), copies its BodyPartExamined (default "CSPINE":
    `SCImage.from_ref_dataset` does not, and dciodvfy wants it), its pixel spacing and its patient orientation, and
    says in DerivationDescription and ImageComments what it shows. No text is burned into the overlay, so
    BurnedInAnnotation is "NO".

    Args:
        source: the source image's header (PixelData not needed).
        overlay_rgb: the overlay, uint8, Rows x Columns x 3 of the source.
        detection: the detection the heatmap explains.
        algorithm: the model that produced it.
        series_uid: the heatmap series' SeriesInstanceUID (shared by every capture of the study).
        series_number: the heatmap series' SeriesNumber.
        instance_number: this capture's InstanceNumber in its series.
        method: the class-activation map method, e.g. "hirescam".
        sop_instance_uid: the capture's SOPInstanceUID; a new UID when None.
        series_description: the heatmap series' SeriesDescription.

    Raises:
        ValueError: the overlay is not uint8 Rows x Columns x 3 of the source, or the detection is invalid.
    """
    _check_detection(source, detection)
    expected = (int(source.Rows), int(source.Columns), 3)
    if overlay_rgb.dtype != np.uint8 or overlay_rgb.shape != expected:
        raise ValueError(f"overlay must be uint8 of shape {expected}; got {overlay_rgb.dtype} {overlay_rgb.shape}")
    spacing = source.get("PixelSpacing")
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay_rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        patient_orientation=_patient_orientation(source),
        series_description=series_description,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
    )
    capture.BodyPartExamined = source.get("BodyPartExamined") or DEFAULT_BODY_PART
    capture.BurnedInAnnotation = "NO"
    what = (
        f"{method} class-activation map of the {detection.label} detection (confidence {detection.confidence:.2f}) "
        f"by {algorithm.name} {algorithm.version}, overlaid on the source image; AI result, not verified"
    )
    capture.DerivationDescription = what
    capture.ImageComments = what
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        _SOURCE_PURPOSE.value,
        _SOURCE_PURPOSE.scheme_designator,
        _SOURCE_PURPOSE.meaning,
    )
    reference.PurposeOfReferenceCodeSequence = [purpose]
    capture.SourceImageSequence = [reference]
    return capture
