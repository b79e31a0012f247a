"""Names shared by every stage: classes, reader levels, the ingested dataset and the splits table (see DESIGN.md).

The bottom of the import order: imports nothing from the project, so every module may import it.
"""

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

# Columns of the ingested tables (DESIGN.md data contracts), in file order.
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_id", "patient_key", "study_key", "series_key", "site", "modality", "plane", "manufacturer", "model",
    "field_strength",
    "pixel_spacing_row", "pixel_spacing_col", "slice_thickness", "repetition_time", "echo_time",
    "echo_train_length", "rows", "columns", "series_description", "software_versions", "transfer_syntax",
    "study_year", "is_synthetic", "image_sha256", "image_path",
)  # fmt: skip
ANNOTATION_TABLE_COLUMNS: tuple[str, ...] = (
    "image_id", "patient_key", "reader_id", "reader_level", "label", "class_id",
    "x_min", "y_min", "x_max", "y_max", "severity",
)  # fmt: skip
MANIFEST_COLUMNS: tuple[str, ...] = (
    "kind",
    "source_id",
    "status",
    "reason",
    "detail",
    "image_id",
    "sha256",
    "size_bytes",
)

# Ingested dataset layout, relative to the ingested directory.
IMAGES_DIR = "images"
LABELS_DIR = "labels"
IMAGES_TABLE = "images.parquet"
ANNOTATIONS_TABLE = "annotations.parquet"
MANIFEST_TABLE = "manifest.parquet"

# The splits table (`paths.splits_file`, data/splits.parquet): written by split; read by validate, train, evaluate.
SPLIT_COLUMNS: tuple[str, ...] = ("image_id", "patient_key", "site", "split", "fold", "has_compression")
CV, INTERNAL_TEST, EXTERNAL_TEST = "cv", "internal_test", "external_test"  # values of its `split` column
SPLITS: tuple[str, ...] = (CV, INTERNAL_TEST, EXTERNAL_TEST)
TEST_SETS: tuple[str, ...] = (INTERNAL_TEST, EXTERNAL_TEST)  # the sets evaluate scores, in report order
NO_FOLD = -1  # `fold` of every row outside cross-validation (the test sets)

# Marker the synthetic generator writes into ImageComments; ingest carries it as `is_synthetic` so every later
# report can say its figures come from synthetic phantoms.
SYNTHETIC_MARKER = "SYNTHETIC PHANTOM"
