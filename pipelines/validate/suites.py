"""The data contracts as great-expectations 1.x suites, kept as code: one function per validated frame.

Every expectation is a built-in one, and its `description` is its name: the text Data Docs show and the text a
failure message names (`"splits: no patient in two folds"`). Cross-table rules run on the derived frames of
`pipelines.validate.frames`. great_expectations is imported only when a suite is built, never at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipelines.contracts import (
    ANNOTATION_TABLE_COLUMNS,
    CLASS_IDS,
    CLASS_NAMES,
    CV,
    EXTERNAL_TEST,
    IMAGE_COLUMNS,
    INTERNAL_TEST,
    NO_FOLD,
    SEVERITIES,
    SPLIT_COLUMNS,
    SPLITS,
)
from pipelines.settings import ReadersParams
from pipelines.validate.frames import IDENTITY_PATTERNS, KEY_PATTERNS, REQUIRED
from pipelines.validate.params import ValidateParams

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.expectations import Expectation


def load_gx() -> ModuleType:
    """Import great_expectations with its usage analytics off (set before the import, which reads it), and quiet.

    GX 1.24 ships no analytics client any more, so the variable is a guard against versions that do. Its loggers
    chat at INFO on import (registry notes); unless someone configured them, only warnings get through.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def _condition_column() -> Any:
    """GX's row-condition `Column` (conditions are objects in GX >= 1.9; strings are deprecated)."""
    from great_expectations.expectations.row_conditions import Column

    return Column


def _suite(name: str, expectations: list[Expectation]) -> ExpectationSuite:
    gx = load_gx()
    return gx.ExpectationSuite(name=name, expectations=expectations)


def _fmt(values: Sequence[Any]) -> str:
    return "{" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "}"


_KEY_SHAPES = {"I": "I + 16 hex", "P": "P + 16 hex", "S": "S + 16 hex", "R": "R + 16 hex"}


def _pseudonymous(table: str, column: str) -> Expectation:
    """The column holds the pseudonym format ingest writes, never an original identifier."""
    e = load_gx().expectations
    pattern = KEY_PATTERNS[column]
    shape = _KEY_SHAPES.get(pattern[1], pattern)
    return e.ExpectColumnValuesToMatchRegex(
        column=column, regex=pattern, description=f"{table}: {column} is pseudonymous ({shape})"
    )


def _required(table: str) -> Expectation:
    """One expectation for every required value, on the derived `missing_required` column (names the null ones)."""
    e = load_gx().expectations
    return e.ExpectColumnValuesToBeInSet(
        column="missing_required",
        value_set=[""],
        description=f"{table}: required values never null ({', '.join(REQUIRED[table])})",
    )


def images_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """images.parquet: acquisition in range, one row per image, pseudonymous keys only."""
    e = load_gx().expectations
    lo_mm, hi_mm = params.pixel_spacing_mm
    lo_px, hi_px = params.matrix
    tokens = " or ".join(repr(v) for v in params.null_tokens if v.strip())
    as_null = "blank" + (f" or {tokens}" if tokens else "") + " counts as null"
    t = "images"
    exps: list[Expectation] = [
        e.ExpectTableColumnsToMatchSet(
            column_set=list(IMAGE_COLUMNS), exact_match=False, description="images: has every contract column"
        ),
        _required(t),
        *[_pseudonymous(t, c) for c in ("image_id", "patient_key", "study_key", "series_key")],
        e.ExpectColumnValuesToMatchRegex(
            column="image_path",
            regex=KEY_PATTERNS["image_path"],
            description="images: image_path is images/<image_id>.png",
        ),
        e.ExpectColumnValuesToMatchRegex(
            column="image_sha256", regex=KEY_PATTERNS["image_sha256"], description="images: image_sha256 is a SHA-256"
        ),
        e.ExpectColumnValuesToBeUnique(column="image_id", description="images: one row per image (image_id unique)"),
        e.ExpectColumnValuesToBeUnique(
            column="image_sha256", description="images: no two rows with the same pixel data (image_sha256 unique)"
        ),
        e.ExpectColumnValuesToBeInSet(
            column="modality",
            value_set=list(params.modalities),
            description=f"images: modality in {_fmt(params.modalities)}",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="plane", value_set=list(params.planes), description=f"images: plane in {_fmt(params.planes)}"
        ),
        e.ExpectColumnValuesToBeInSet(
            column="field_strength_nominal",
            value_set=list(params.field_strengths),
            description=(
                f"images: field strength in {_fmt(params.field_strengths)} T "
                f"(within {params.field_strength_tolerance:g} T)"
            ),
        ),
        *[
            e.ExpectColumnValuesToBeBetween(
                column=f"pixel_spacing_{axis}",
                min_value=lo_mm,
                max_value=hi_mm,
                description=f"images: pixel spacing ({axis}) in [{lo_mm:g}, {hi_mm:g}] mm",
            )
            for axis in ("row", "col")
        ],
        *[
            e.ExpectColumnValuesToBeBetween(
                column=c, min_value=lo_px, max_value=hi_px, description=f"images: matrix {c} in [{lo_px}, {hi_px}] px"
            )
            for c in ("rows", "columns")
        ],
        *[
            e.ExpectColumnValuesToNotBeNull(column=f"{c}_present", description=f"images: {c} never null ({as_null})")
            for c in ("site", "manufacturer", "model")
        ],
    ]
    return _suite("images", exps)


def images_identity_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """Every free-text cell of images.parquet: nothing that looks like a name, a date (of birth) or a DICOM UID."""
    e = load_gx().expectations
    names = {
        "person name": "images: no value looks like a person name",
        "date": "images: no value looks like a date (e.g. a date of birth)",
        "DICOM UID": "images: no value looks like an original DICOM UID",
    }
    exps: list[Expectation] = [
        e.ExpectColumnValuesToNotMatchRegex(column="value", regex=IDENTITY_PATTERNS[kind], description=name)
        for kind, name in names.items()
    ]
    return _suite("images_identity", exps)


def annotations_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """annotations.parquet joined with its image: boxes inside their image, known labels and readers."""
    e = load_gx().expectations
    t = "annotations"
    if readers.known is not None:
        reader: Expectation = e.ExpectColumnValuesToBeInSet(
            column="reader_id",
            value_set=list(readers.known),
            description=f"annotations: reader known (reader_id in {_fmt(readers.known)})",
        )
    else:
        reader = e.ExpectColumnValuesToMatchRegex(
            column="reader_id",
            regex=readers.id_pattern,
            description=f"annotations: reader known (reader_id matches {readers.id_pattern})",
        )
    class_ids = ", ".join(f"{name} {i}" for name, i in CLASS_IDS.items())
    either = "either_value_is_missing"  # a missing image is reported once, by "box is on an ingested image"
    exps: list[Expectation] = [
        e.ExpectTableColumnsToMatchSet(
            column_set=list(ANNOTATION_TABLE_COLUMNS),
            exact_match=False,
            description="annotations: has every contract column",
        ),
        _required(t),
        _pseudonymous(t, "image_id"),
        _pseudonymous(t, "patient_key"),
        e.ExpectColumnValuesToNotBeNull(
            column="image_rows", description="annotations: every box is on an ingested image"
        ),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="patient_key",
            column_B="image_patient_key",
            ignore_row_if=either,
            description="annotations: patient_key matches its image",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="label", value_set=list(CLASS_NAMES), description=f"annotations: label in {_fmt(CLASS_NAMES)}"
        ),
        e.ExpectColumnPairValuesToBeInSet(
            column_A="label",
            column_B="class_id",
            value_pairs_set=[(name, i) for name, i in CLASS_IDS.items()],
            description=f"annotations: class_id matches label ({class_ids})",
        ),
        *[
            e.ExpectColumnValuesToBeBetween(
                column=c, min_value=0, description=f"annotations: every box inside its image ({c} >= 0)"
            )
            for c in ("x_min", "y_min")
        ],
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="image_columns",
            column_B="x_max",
            or_equal=True,
            ignore_row_if=either,
            description="annotations: every box inside its image (x_max <= image columns)",
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="image_rows",
            column_B="y_max",
            or_equal=True,
            ignore_row_if=either,
            description="annotations: every box inside its image (y_max <= image rows)",
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="x_max",
            column_B="x_min",
            ignore_row_if=either,
            description="annotations: box has positive width (x_max > x_min)",
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="y_max",
            column_B="y_min",
            ignore_row_if=either,
            description="annotations: box has positive height (y_max > y_min)",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="reader_level",
            value_set=list(readers.levels),
            description=f"annotations: reader level known (in {_fmt(readers.levels)})",
        ),
        reader,
        e.ExpectColumnValuesToBeBetween(
            column="levels_of_reader", min_value=1, max_value=1, description="annotations: each reader has one level"
        ),
        e.ExpectColumnValuesToBeInSet(
            column="severity",
            value_set=list(SEVERITIES),
            description=f"annotations: severity in {_fmt(SEVERITIES)} or empty",
        ),
        e.ExpectCompoundColumnsToBeUnique(
            column_list=["image_id", "reader_id", "label", "x_min", "y_min", "x_max", "y_max"],
            description="annotations: no duplicate box (same image, reader, label and corners)",
        ),
    ]
    return _suite("annotations", exps)


def annotations_per_image_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """One row per image: every image that enters training has a reference (expert) read."""
    e = load_gx().expectations
    Column = _condition_column()
    level = readers.reference_level
    article = "an" if level[0] in "aeiou" else "a"
    exps: list[Expectation] = [
        e.ExpectColumnValuesToBeBetween(
            column="reference_boxes",
            min_value=1,
            row_condition=Column("enters_training") == True,  # noqa: E712 (a GX condition, not a comparison)
            description=f"annotations: every image that enters training has {article} {level} reference read",
        )
    ]
    return _suite("annotations_per_image", exps)


def splits_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """splits.parquet: one row per ingested image, known splits and folds, external sites held out."""
    e = load_gx().expectations
    Column = _condition_column()
    t = "splits"
    external = sorted(external_sites)
    either = "either_value_is_missing"  # an unknown image is reported once, by "every row is an ingested image"
    exps: list[Expectation] = [
        e.ExpectTableColumnsToMatchSet(
            column_set=list(SPLIT_COLUMNS), exact_match=False, description="splits: has every contract column"
        ),
        _required(t),
        _pseudonymous(t, "image_id"),
        _pseudonymous(t, "patient_key"),
        e.ExpectColumnValuesToBeUnique(column="image_id", description="splits: one row per image (image_id unique)"),
        e.ExpectColumnValuesToBeInSet(
            column="split", value_set=list(SPLITS), description=f"splits: split in {_fmt(SPLITS)}"
        ),
        e.ExpectColumnValuesToBeBetween(
            column="fold",
            min_value=0,
            row_condition=Column("split") == CV,
            description="splits: cv rows have a fold >= 0",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="fold",
            value_set=[NO_FOLD],
            row_condition=Column("split").is_in([INTERNAL_TEST, EXTERNAL_TEST]),
            description=f"splits: test rows have fold {NO_FOLD}",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="has_compression", value_set=[True, False], description="splits: has_compression is true or false"
        ),
        e.ExpectColumnValuesToNotBeNull(
            column="ingested_patient_key", description="splits: every row is an ingested image"
        ),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="patient_key",
            column_B="ingested_patient_key",
            ignore_row_if=either,
            description="splits: patient_key matches images.parquet",
        ),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="site",
            column_B="ingested_site",
            ignore_row_if=either,
            description="splits: site matches images.parquet",
        ),
        e.ExpectColumnValuesToNotBeInSet(
            column="site",
            value_set=external,
            row_condition=Column("split") == CV,
            description=f"splits: the external site is never in training ({_fmt(external)} not in cv)",
        ),
        e.ExpectColumnValuesToNotBeInSet(
            column="site",
            value_set=external,
            row_condition=Column("split") == INTERNAL_TEST,
            description=f"splits: internal_test holds no external site ({_fmt(external)})",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="site",
            value_set=external,
            row_condition=Column("split") == EXTERNAL_TEST,
            description=f"splits: external_test holds only external sites ({_fmt(external)})",
        ),
    ]
    return _suite("splits", exps)


def splits_per_patient_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """One row per patient: one split, at most one fold, a compression status that matches the reference reads."""
    e = load_gx().expectations
    exps: list[Expectation] = [
        e.ExpectColumnValuesToBeBetween(
            column="n_cv_folds", min_value=0, max_value=1, description="splits: no patient in two folds"
        ),
        e.ExpectColumnValuesToBeBetween(
            column="n_splits",
            min_value=1,
            max_value=1,
            description="splits: no patient in both training and a test set (one split per patient)",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="n_has_compression_values",
            min_value=1,
            max_value=1,
            description="splits: has_compression is one value per patient",
        ),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="has_compression",
            column_B="reference_compression",
            ignore_row_if="either_value_is_missing",
            description=f"splits: has_compression agrees with the {readers.reference_level} reads",
        ),
    ]
    return _suite("splits_per_patient", exps)


def splits_per_fold_suite(
    params: ValidateParams, readers: ReadersParams, external_sites: Sequence[str] = ()
) -> ExpectationSuite:
    """One row per cv fold: folds 0..k-1, and each fold's compression share close to the share over all of cv."""
    e = load_gx().expectations
    Column = _condition_column()
    tol = params.fold_balance_tolerance
    exps: list[Expectation] = [
        e.ExpectTableRowCountToBeBetween(min_value=2, description="splits: cv has at least two folds"),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="fold", column_B="fold_rank", description="splits: cv folds are numbered 0..k-1 without gaps"
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="allowed_deviation",
            column_B="share_deviation",
            or_equal=True,
            row_condition=Column("n_patients") >= params.fold_balance_min_patients,
            description=(
                f"splits: class balance per fold within tolerance (|fold - cv compression share| <= {tol:g} + "
                f"1/patients, folds of >= {params.fold_balance_min_patients} patients)"
            ),
        ),
    ]
    return _suite("splits_per_fold", exps)


SuiteBuilder = Callable[[ValidateParams, ReadersParams, Sequence[str]], "ExpectationSuite"]

# Frame name (pipelines.validate.frames) -> the suite that validates it.
SUITES: dict[str, SuiteBuilder] = {
    "images": images_suite,
    "images_identity": images_identity_suite,
    "annotations": annotations_suite,
    "annotations_per_image": annotations_per_image_suite,
    "splits": splits_suite,
    "splits_per_patient": splits_per_patient_suite,
    "splits_per_fold": splits_per_fold_suite,
}
