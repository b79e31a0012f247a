"""One input file in, one outcome out: safe DICOM reading, series rules, de-identification, normalised image.

Runs inside worker processes, so everything here is a plain function over picklable settings. A file either becomes
an `ok` outcome with a staged PNG and an `images.parquet` row, or a `quarantined` outcome with a stable reason code
and a detail that carries no identity. Nothing raises out of `process_file`.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipelines.contracts import SYNTHETIC_MARKER
from pipelines.imaging import normalise
from pipelines.ingest import deid
from pipelines.ingest.params import IngestParams, SeriesRule
from pipelines.ingest.rules import first_failure, plane_of
from pipelines.io import write_atomic

# Stable quarantine reason codes (series rules add `series_rule:<name>`).
NOT_DICOM = "not_dicom"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
IO_ERROR = "io_error"
FILE_TOO_LARGE = "file_too_large"
MISSING_IDENTIFIERS = "missing_identifiers"
MULTI_FRAME = "multi_frame"
NO_PIXEL_DATA = "no_pixel_data"
BURNED_IN_ANNOTATION = "burned_in_annotation"
DECLARED_SIZE_TOO_LARGE = "declared_size_too_large"
MATRIX_TOO_SMALL = "matrix_too_small"
UNSUPPORTED_PIXELS = "unsupported_pixel_format"
PIXEL_DECODE_FAILED = "pixel_decode_failed"
DEID_LEAK = "deid_leak"
DUPLICATE_SOP = "duplicate_sop_instance"

# Columns of images.parquet that hold free text or codes taken from the header: the leak guard checks these.
_TEXT_COLUMNS = (
    "site", "modality", "manufacturer", "model", "software_versions", "series_description", "transfer_syntax",
)  # fmt: skip


@dataclass(frozen=True)
class ImageChecks:
    """What makes a file an image cordwatch reads: the series rules and the safety limits, picklable.

    Ingestion and prediction (`pipelines.predict`) read files through the same functions (`read_file`,
    `parse_dicom`, `require_uids`, `series_failure`, `checked_pixels`), so a file the detector is shown in the
    reading room passes exactly the rules its training data did.
    """

    rules: tuple[SeriesRule, ...]
    max_file_bytes: int
    max_pixels: int
    min_matrix: int
    clip_percentiles: tuple[float, float]
    read_retries: int
    retry_delay_s: float

    @classmethod
    def from_params(cls, cfg: IngestParams) -> ImageChecks:
        """The checks of the `ingest:` section."""
        return cls(
            rules=tuple(cfg.series_rules),
            max_file_bytes=int(cfg.max_file_mb * 1024 * 1024),
            max_pixels=cfg.max_pixels,
            min_matrix=cfg.min_matrix,
            clip_percentiles=cfg.clip_percentiles,
            read_retries=cfg.retries,
            retry_delay_s=cfg.retry_delay_s,
        )


@dataclass(frozen=True)
class FileSettings(ImageChecks):
    """Everything an ingestion worker needs, picklable: the image checks plus de-identification and output."""

    key: bytes = field(repr=False)
    site_tag: str
    site_map: dict[str, str]
    png_compress_level: int
    staging_dir: Path


@dataclass
class FileOutcome:
    """The result of one input file. `relpath` stays on the ingest machine (never written to the dataset)."""

    source_id: str
    relpath: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    status: str
    reason: str = ""
    detail: str = ""
    image_id: str | None = None
    image: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileOutcome:
        return cls(**data)


class Quarantine(Exception):
    """Internal signal: this file is excluded, for `reason`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _read_bytes(path: Path, retries: int, delay: float) -> bytes:
    """Read a file, retrying transient I/O errors (network shares, PACS exports still being written)."""
    for attempt in range(retries + 1):
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except OSError:
            if attempt == retries:
                raise
            time.sleep(delay * (2**attempt))
    raise AssertionError("unreachable")


def _check_complete(ds: Dataset) -> Dataset:
    """pydicom stops quietly at end of file; catch files cut short inside the header or inside a value."""
    if len(ds) == 0:
        raise Quarantine(TRUNCATED, "no data elements after the file meta (file cut short?)")
    last = ds.get_item(max(ds.keys()))
    cut = isinstance(last, RawDataElement) and last.value is not None and len(last.value) < last.length != 0xFFFFFFFF
    if cut:
        raise Quarantine(TRUNCATED, f"last element {last.tag} has {len(last.value)} of {last.length} bytes")
    return ds


def parse_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes. Files without the 128-byte preamble are accepted only if they look like DICOM.

    Raises:
        Quarantine: truncated, unreadable or not DICOM.
    """
    try:
        return _check_complete(pydicom.dcmread(io.BytesIO(data)))
    except (Quarantine, InvalidDicomError) as exc:
        if isinstance(exc, Quarantine):
            raise
    except (EOFError, OSError) as exc:
        raise Quarantine(TRUNCATED, f"file ends inside the header ({type(exc).__name__})") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise Quarantine(UNREADABLE, f"header cannot be parsed ({type(exc).__name__}: {str(exc)[:80]})") from exc
    # No preamble: raw datasets written without file meta are legal in some exports; accept them only when the
    # forced parse yields an SOP Class UID, else the file is not DICOM at all.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPClassUID" in ds and str(ds.SOPClassUID).startswith("1.2.840.10008."):
            return _check_complete(ds)
    except Exception:
        pass
    raise Quarantine(NOT_DICOM, "no DICOM preamble, and no SOP Class UID in a forced parse")


def _declared_checks(ds: Dataset, settings: ImageChecks) -> tuple[int, int]:
    """Refuse multi-frame, pixel-less, oversized or odd images from the header alone, before decoding."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise Quarantine(MULTI_FRAME, f"{frames} frames; one 2D image per object is expected")
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        raise Quarantine(NO_PIXEL_DATA, "no Pixel Data element" + (f" ({kinds[0]} not supported)" if kinds else ""))
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise Quarantine(BURNED_IN_ANNOTATION, "BurnedInAnnotation is YES: pixels may carry identity text")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise Quarantine(UNREADABLE, f"image pixel module incomplete ({exc})") from exc
    if rows * cols * samples > settings.max_pixels:
        raise Quarantine(
            DECLARED_SIZE_TOO_LARGE, f"declares {rows}x{cols}x{samples} samples, limit {settings.max_pixels}"
        )
    if min(rows, cols) < settings.min_matrix:
        raise Quarantine(MATRIX_TOO_SMALL, f"{rows}x{cols} is below the {settings.min_matrix}-pixel minimum")
    if samples != 1 or bits not in (8, 16, 32):
        raise Quarantine(UNSUPPORTED_PIXELS, f"SamplesPerPixel {samples}, BitsAllocated {bits}: greyscale expected")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_compressed:
        expected = rows * cols * bits // 8
        if len(ds.PixelData) < expected:
            raise Quarantine(TRUNCATED, f"pixel data has {len(ds.PixelData)} of {expected} bytes")
    return rows, cols


def _decode(ds: Dataset) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoder plugins raise assorted types
        msg = str(exc)
        if "less than expected" in msg or "truncat" in msg.lower() or isinstance(exc, EOFError):
            raise Quarantine(TRUNCATED, f"pixel data incomplete ({msg[:80]})") from exc
        raise Quarantine(PIXEL_DECODE_FAILED, f"{type(exc).__name__}: {msg[:100]}") from exc
    if arr.ndim != 2:
        raise Quarantine(UNSUPPORTED_PIXELS, f"decoded array has shape {arr.shape}")
    return arr


def read_file(path: Path, checks: ImageChecks) -> bytes:
    """One file's bytes, with the size limit and I/O retries.

    Raises:
        Quarantine: too large, empty or unreadable, with a stable reason code.
    """
    size = path.stat().st_size
    if size > checks.max_file_bytes:
        raise Quarantine(FILE_TOO_LARGE, f"{size} bytes, limit {checks.max_file_bytes}")
    if size == 0:
        raise Quarantine(NOT_DICOM, "empty file")
    try:
        return _read_bytes(path, checks.read_retries, checks.retry_delay_s)
    except OSError as exc:
        raise Quarantine(IO_ERROR, f"{type(exc).__name__} after {checks.read_retries} retries") from exc


def require_uids(ds: Dataset) -> None:
    """Raises Quarantine unless the SOP, study and series instance UIDs are all present."""
    if not ds.get("SOPInstanceUID") or not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID"):
        raise Quarantine(MISSING_IDENTIFIERS, "SOP, study or series instance UID missing")


def series_failure(ds: Dataset, checks: ImageChecks) -> Quarantine | None:
    """The first series rule this dataset fails, as a Quarantine to raise; None when it passes them all."""
    failure = first_failure(ds, checks.rules)
    return None if failure is None else Quarantine(failure.reason, failure.detail)


def checked_pixels(ds: Dataset, checks: ImageChecks) -> np.ndarray:
    """The decoded 2-D stored values, after refusing multi-frame, pixel-less, oversized or odd images from the
    header alone (before any allocation).

    Raises:
        Quarantine: the image cannot or must not be decoded, with a stable reason code.
    """
    _declared_checks(ds, checks)
    return _decode(ds)


def is_monochrome1(ds: Dataset) -> bool:
    """MONOCHROME1 stores brighter as lower values: the windowing inverts it."""
    return ds.get("PhotometricInterpretation") == "MONOCHROME1"


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Original:
    """The few original (identifying) values ingest needs, taken before de-identification."""

    patient_id: str
    issuer: str
    study_uid: str
    series_uid: str
    sop_uid: str
    institution: str
    series_description: str
    software_versions: str
    study_date: str
    comments: str
    transfer_syntax: str
    tokens: frozenset[str]

    @classmethod
    def of(cls, ds: Dataset, site_tag: str, tokens: frozenset[str]) -> _Original:
        def text(keyword: str) -> str:
            return str(ds.get(keyword, "") or "").strip()

        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        return cls(
            patient_id=text("PatientID"),
            issuer=text("IssuerOfPatientID"),
            study_uid=text("StudyInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            sop_uid=text("SOPInstanceUID"),
            institution=text(site_tag),
            series_description=text("SeriesDescription"),
            software_versions=text("SoftwareVersions"),
            study_date=text("StudyDate"),
            comments=text("ImageComments"),
            transfer_syntax=syntax.name if syntax is not None else "",
            tokens=tokens,
        )


def _metadata(orig: _Original, ds: Dataset, pseudo: deid.Pseudonymizer, settings: FileSettings) -> dict[str, Any]:
    """The images.parquet row: pseudonymous keys from the original identifiers, acquisition facts from the
    de-identified dataset (so nothing the Basic Profile removes can reach it), and two cleaned descriptors."""
    site = settings.site_map.get(orig.institution) or (pseudo.site(orig.institution) if orig.institution else "unknown")
    spacing = ds.get("PixelSpacing") or [None, None]
    return {
        "patient_key": pseudo.patient(orig.patient_id, orig.issuer),
        "study_key": pseudo.study(orig.study_uid),
        "series_key": pseudo.series(orig.series_uid),
        "site": site,
        "modality": str(ds.get("Modality", "") or ""),
        "plane": plane_of(list(ds.ImageOrientationPatient)) if ds.get("ImageOrientationPatient") else "unknown",
        "manufacturer": str(ds.get("Manufacturer", "") or "unknown").strip(),
        "model": str(ds.get("ManufacturerModelName", "") or "unknown").strip(),
        "field_strength": _float(ds, "MagneticFieldStrength"),
        "pixel_spacing_row": float(spacing[0]) if spacing[0] is not None else None,
        "pixel_spacing_col": float(spacing[1]) if spacing[1] is not None else None,
        "slice_thickness": _float(ds, "SliceThickness"),
        "repetition_time": _float(ds, "RepetitionTime"),
        "echo_time": _float(ds, "EchoTime"),
        "echo_train_length": _float(ds, "EchoTrainLength"),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        # Clean Descriptors: the description is kept for series selection audits, with identity tokens removed.
        "series_description": deid.scrub(orig.series_description, orig.tokens)[:64],
        # A scanner software upgrade can change images or only labels: monitoring tells them apart (issue 12).
        "software_versions": deid.scrub(orig.software_versions, orig.tokens)[:64] or "unknown",
        "transfer_syntax": orig.transfer_syntax,
        # Year only (HIPAA Safe Harbor level of date detail), for drift over time.
        "study_year": int(orig.study_date[:4]) if orig.study_date[:4].isdigit() else None,
        "is_synthetic": SYNTHETIC_MARKER in orig.comments.upper(),
    }


def _encode_png(image: np.ndarray, level: int) -> bytes:
    """PNG via OpenCV with zlib's RLE strategy: on MR about 2x faster than Pillow at level 1, and smaller."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", image, params)
    if not ok:  # pragma: no cover - OpenCV reports failure only for unsupported arrays
        raise Quarantine(UNSUPPORTED_PIXELS, f"PNG encoding failed for shape {image.shape}")
    return buf.tobytes()


def process_file(path: Path, root: Path, settings: FileSettings) -> FileOutcome:
    """Ingest one file; never raises."""
    relpath = path.relative_to(root).as_posix()
    pseudo = deid.Pseudonymizer(settings.key)
    outcome = FileOutcome(pseudo.source(relpath), relpath, 0, 0, None, "quarantined")
    tokens: frozenset[str] = frozenset()
    try:
        stat = path.stat()
        outcome.size_bytes, outcome.mtime_ns = stat.st_size, stat.st_mtime_ns
        data = read_file(path, settings)
        outcome.sha256 = hashlib.sha256(data).hexdigest()
        ds = parse_dicom(data)
        tokens = frozenset(deid.identity_tokens(ds))
        require_uids(ds)
        # Known from here on, so annotations on a quarantined image can say so.
        outcome.image_id = pseudo.image(str(ds.SOPInstanceUID))
        failure = series_failure(ds, settings)
        if failure is not None:
            raise failure
        if not str(ds.get("PatientID", "") or "").strip():
            raise Quarantine(MISSING_IDENTIFIERS, "PatientID empty: images could not be grouped by patient")
        pixels = checked_pixels(ds, settings)
        image = normalise(pixels, settings.clip_percentiles, is_monochrome1(ds))
        orig = _Original.of(ds, settings.site_tag, tokens)
        deid.apply_basic_profile(ds)
        row = _metadata(orig, ds, pseudo, settings)
        leaks = deid.leaked((row[c] for c in _TEXT_COLUMNS), tokens)
        if leaks:
            raise Quarantine(DEID_LEAK, f"{len(leaks)} identity value(s) found in kept metadata; file withheld")
        image_id = outcome.image_id
        png = _encode_png(image, settings.png_compress_level)
        write_atomic(settings.staging_dir / f"{outcome.source_id}.png", png)
        row.update(image_id=image_id, image_sha256=hashlib.sha256(png).hexdigest())
        outcome.status, outcome.image = "ok", row
    except Quarantine as q:
        outcome.reason, outcome.detail = q.reason, deid.scrub(q.detail, tokens)
    except Exception as exc:
        detail = f"unexpected {type(exc).__name__}: {str(exc)[:100]}"
        outcome.reason, outcome.detail = UNREADABLE, deid.scrub(detail, tokens)
    return outcome
