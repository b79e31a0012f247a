"""Reader annotations (`annotations.csv`) checked against the ingested images and turned into YOLO labels.

Every row ends up either in `annotations.parquet` or quarantined in the manifest with a reason: unknown image,
image quarantined, box outside the image, degenerate box, bad label, bad reader, malformed numbers. The label files
themselves are written with `pipelines.labels.yolo_lines` (shared with train).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.contracts import ANNOTATION_COLUMNS, ANNOTATION_TABLE_COLUMNS, CLASS_IDS, SEVERITIES
from pipelines.settings import ReadersParams

ANN_MISSING_COLUMNS = "annotation_missing_columns"
ANN_MALFORMED = "annotation_malformed"
ANN_UNKNOWN_IMAGE = "annotation_unknown_image"
ANN_IMAGE_QUARANTINED = "annotation_image_quarantined"
ANN_OUTSIDE_IMAGE = "annotation_outside_image"
ANN_DEGENERATE_BOX = "annotation_degenerate_box"
ANN_BAD_LABEL = "annotation_bad_label"
ANN_BAD_READER = "annotation_bad_reader"
ANN_DUPLICATE = "annotation_duplicate"


@dataclass(frozen=True)
class ImageRef:
    """What an annotation needs to know about its image."""

    image_id: str
    patient_key: str
    rows: int
    columns: int


@dataclass
class AnnotationResult:
    """Accepted rows (annotations.parquet) and one manifest row per input row."""

    accepted: pd.DataFrame
    manifest: list[dict[str, object]]


class AnnotationFileError(ValueError):
    """The annotations file as a whole cannot be used (unreadable, or required columns missing)."""


def read_annotations(path: Path) -> pd.DataFrame:
    """Read the CSV as text (numbers are checked row by row, so one bad cell quarantines one row, not the file)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise AnnotationFileError(f"{path.name} cannot be read as CSV: {exc}") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ANNOTATION_COLUMNS if c not in df.columns]
    if missing:
        raise AnnotationFileError(f"{path.name} lacks required column(s) {missing}; needs {list(ANNOTATION_COLUMNS)}")
    return df


def check_annotations(
    df: pd.DataFrame,
    image_of: Callable[[str], str],
    images: Mapping[str, ImageRef],
    quarantined_images: set[str],
    readers: ReadersParams,
) -> AnnotationResult:
    """Validate each row against its image.

    Args:
        df: the CSV as text columns.
        image_of: maps an original SOP Instance UID to its pseudonymous image_id (the keyed hash), so the original
            UID never needs to be stored.
        images: the ok images by image_id.
        quarantined_images: image_ids whose file was quarantined (a row pointing there says so).
        readers: the `readers` section: allowed reader ids (they become folder names) and levels.
    """
    pattern = re.compile(readers.id_pattern)
    levels = tuple(readers.levels)
    accepted: list[dict[str, object]] = []
    manifest: list[dict[str, object]] = []
    seen: set[tuple[object, ...]] = set()
    for i, rec in enumerate(df.to_dict("records")):
        source_id = f"annotations.csv:{i + 2}"  # the line number in the file (header is line 1)
        image_id = image_of(str(rec["sop_instance_uid"]).strip()) if str(rec["sop_instance_uid"]).strip() else ""
        reason, detail, row = _check_row(rec, image_id, images, quarantined_images, pattern, levels)
        if reason is None and row is not None:
            key = tuple(row[c] for c in ("image_id", "reader_id", "label", "x_min", "y_min", "x_max", "y_max"))
            if key in seen:
                reason, detail = ANN_DUPLICATE, "same reader, label and box as an earlier row"
            seen.add(key)
        manifest.append(
            {
                "kind": "annotation",
                "source_id": source_id,
                "status": "ok" if reason is None else "quarantined",
                "reason": reason or "",
                "detail": detail,
                "image_id": image_id if image_id in images else None,
            }
        )
        if reason is None and row is not None:
            accepted.append(row)
    table = pd.DataFrame(accepted, columns=list(ANNOTATION_TABLE_COLUMNS))
    table = table.sort_values(["image_id", "reader_id", "x_min", "y_min", "x_max", "y_max", "label"], kind="stable")
    return AnnotationResult(table.reset_index(drop=True), manifest)


def _check_row(
    rec: Mapping[str, object],
    image_id: str,
    images: Mapping[str, ImageRef],
    quarantined_images: set[str],
    pattern: re.Pattern[str],
    levels: tuple[str, ...],
) -> tuple[str | None, str, dict[str, object] | None]:
    label = str(rec["label"]).strip().lower()
    if label not in CLASS_IDS:
        return ANN_BAD_LABEL, f"label {str(rec['label'])[:20]!r} not in {sorted(CLASS_IDS)}", None
    level = str(rec["reader_level"]).strip().lower()
    reader = str(rec["reader_id"]).strip()
    if level not in levels:
        return ANN_BAD_READER, f"reader_level {level[:20]!r} not in {list(levels)}", None
    if not pattern.match(reader):
        return ANN_BAD_READER, f"reader_id does not match {pattern.pattern}", None
    try:
        x0, y0, x1, y1 = (float(str(rec[c]).strip()) for c in ("x_min", "y_min", "x_max", "y_max"))
    except ValueError:
        return ANN_MALFORMED, "box coordinates are not numbers", None
    if any(v != v or v in (float("inf"), float("-inf")) for v in (x0, y0, x1, y1)):
        return ANN_MALFORMED, "box coordinates are not finite", None
    if not image_id or image_id not in images:
        if image_id in quarantined_images:
            return ANN_IMAGE_QUARANTINED, "its image was quarantined", None
        return ANN_UNKNOWN_IMAGE, "sop_instance_uid matches no ingested image", None
    ref = images[image_id]
    if x1 <= x0 or y1 <= y0:
        return ANN_DEGENERATE_BOX, f"box {x0:g},{y0:g},{x1:g},{y1:g} has no area", None
    if x0 < 0 or y0 < 0 or x1 > ref.columns or y1 > ref.rows:
        return ANN_OUTSIDE_IMAGE, f"box {x0:g},{y0:g},{x1:g},{y1:g} outside {ref.columns}x{ref.rows} image", None
    severity = str(rec.get("severity", "") or "").strip().lower() or None
    if severity is not None and severity not in SEVERITIES:
        return ANN_MALFORMED, f"severity {severity[:20]!r} not in {list(SEVERITIES)}", None
    row = {
        "image_id": image_id,
        "patient_key": ref.patient_key,
        "reader_id": reader,
        "reader_level": level,
        "label": label,
        "class_id": CLASS_IDS[label],
        "x_min": x0,
        "y_min": y0,
        "x_max": x1,
        "y_max": y1,
        "severity": severity,
    }
    return None, "", row
