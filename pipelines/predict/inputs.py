"""What `cordwatch predict PATH` reads: DICOM files grouped into studies, each file through ingestion's own checks.

PATH is a file, a study folder or a tree of studies. Files are grouped by StudyInstanceUID from a header-only read;
then each study's files are read with `pipelines.ingest.files` (size limit, retries, parsing, UIDs, the series
rules, declared-size checks, decoding) and windowed with `pipelines.imaging.model_image`: the same path training
images took. A file is one of:
- `ok`: an image the detector reads;
- `not_selected`: a readable DICOM object the series rules do not select (another series of the study: T1, axial,
  localisers, an SR a PACS holds): expected in real studies, not a failure;
- `failed`: unreadable, truncated, not DICOM, undecodable pixels: a failure, with ingestion's reason code.
A study none of whose files is selected fails as a whole (`no_selected_image`).

Identity stays in memory and in the caller's output folder: nothing here logs a UID, a name or a path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from pipelines.imaging import model_image
from pipelines.ingest.core import iter_files
from pipelines.ingest.files import (
    ImageChecks,
    Quarantine,
    checked_pixels,
    is_monochrome1,
    parse_dicom,
    read_file,
    require_uids,
    series_failure,
)

log = logging.getLogger(__name__)

OK, NOT_SELECTED, FAILED = "ok", "not_selected", "failed"
NO_SELECTED_IMAGE = "no_selected_image"
UNKNOWN_STUDY = ""  # the study key of files whose header names no study (they still get a row)


class PredictInputError(ValueError):
    """The input as a whole is unusable: a path that does not exist, or a folder with no files at all."""


@dataclass(frozen=True)
class FileResult:
    """One input file's fate; `path` is relative to PATH (it stays in the output folder)."""

    path: str
    status: str
    reason: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v != ""}


@dataclass
class SourceImage:
    """A selected image: its header (pixel data dropped), and the detector's input."""

    path: str
    dataset: Dataset
    pixels: np.ndarray  # H x W x 3 uint8, `model_image`

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass
class StudyInput:
    """The files of one study, read."""

    study_uid: str
    images: list[SourceImage] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not self.images or any(f.status == FAILED for f in self.files)


def _study_of(path: Path) -> str:
    """The StudyInstanceUID from a header-only read; UNKNOWN_STUDY when the file has none or is not DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"], force=True)
        return str(ds.get("StudyInstanceUID", "") or "")
    except Exception:  # anything unreadable is reported by the full read, with ingestion's reason
        return UNKNOWN_STUDY


def group_by_study(root: Path) -> dict[str, list[Path]]:
    """PATH's files by study, in path order; raises PredictInputError for a missing path or an empty folder."""
    if not root.exists():
        raise PredictInputError(f"input not found: {root}")
    paths = [root] if root.is_file() else iter_files(root)
    if not paths:
        raise PredictInputError(f"no files under {root}")
    studies: dict[str, list[Path]] = {}
    for p in paths:
        studies.setdefault(_study_of(p), []).append(p)
    return studies


def read_image(path: Path, checks: ImageChecks, clip: tuple[float, float]) -> tuple[Dataset, np.ndarray]:
    """One file through ingestion's checks: its header (pixel data dropped) and the detector's input.

    Raises:
        Quarantine: with `reason` ingestion would give; `series_rule:<name>` means not selected.
    """
    ds = parse_dicom(read_file(path, checks))
    require_uids(ds)
    failure = series_failure(ds, checks)
    if failure is not None:
        raise failure
    pixels = model_image(checked_pixels(ds, checks), clip, is_monochrome1(ds))
    del ds.PixelData  # the header is all the results need; the pixels live on as the model input
    return ds, pixels


def read_studies(
    root: Path,
    groups: dict[str, list[Path]],
    checks: ImageChecks,
    clip: tuple[float, float],
) -> Iterator[StudyInput]:
    """Each study of `groups` (from `group_by_study(root)`), read one at a time: memory holds one study's images,
    not the tree's."""
    base = root if root.is_dir() else root.parent
    for study_uid, paths in groups.items():
        study = StudyInput(study_uid)
        for p in paths:
            rel = p.relative_to(base).as_posix()
            try:
                ds, pixels = read_image(p, checks, clip)
            except Quarantine as q:
                status = NOT_SELECTED if q.reason.startswith("series_rule:") else FAILED
                study.files.append(FileResult(rel, status, q.reason, q.detail))
                continue
            except Exception as exc:  # ingestion's reader raises only Quarantine; never lose a file to a bug
                study.files.append(FileResult(rel, FAILED, "unreadable", f"unexpected {type(exc).__name__}"))
                continue
            study.images.append(SourceImage(rel, ds, pixels))
            study.files.append(FileResult(rel, OK))
        yield study
