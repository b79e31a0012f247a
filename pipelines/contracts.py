"""Names shared by every stage: classes, reader levels, file names of the ingested dataset (see DESIGN.md)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("normal", "compression")  # YOLO class id = index
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
READER_LEVELS: tuple[str, ...] = ("expert", "mid", "junior")
SEVERITIES: tuple[str, ...] = ("none", "mild", "moderate", "severe")

ANNOTATION_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "reader_id",
    "reader_level",
    "label",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
)
OPTIONAL_ANNOTATION_COLUMNS: tuple[str, ...] = ("severity",)

# Ingested dataset layout, relative to the ingested directory.
IMAGES_DIR = "images"
LABELS_DIR = "labels"
IMAGES_TABLE = "images.parquet"
ANNOTATIONS_TABLE = "annotations.parquet"
MANIFEST_TABLE = "manifest.parquet"
SUMMARY_FILE = "summary.json"

# Marker the synthetic generator writes into ImageComments; ingest carries it as `is_synthetic` so every later
# report can say its figures come from synthetic phantoms.
SYNTHETIC_MARKER = "SYNTHETIC PHANTOM"
