"""The frames the expectation suites run on.

The ingested tables go in as read; every cross-table rule (a box inside its image, an expert read per training
image, one fold per patient, fold balance) is prepared here in pandas as a derived frame or column, so that each
rule is then one plain built-in expectation on it. No great_expectations import here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contracts import CV, SPLIT_COLUMNS
from pipelines.settings import ReadersParams
from pipelines.validate.params import ValidateParams

# The pseudonym formats ingest writes (pipelines/ingest/deid.py): a value not matching them may be an original
# identifier, so it is both a contract failure and something never echoed into a message or report.
KEY_PATTERNS: dict[str, str] = {
    "image_id": r"^I[0-9a-f]{16}$",
    "patient_key": r"^P[0-9a-f]{16}$",
    "study_key": r"^S[0-9a-f]{16}$",
    "series_key": r"^R[0-9a-f]{16}$",
    "image_sha256": r"^[0-9a-f]{64}$",
    "image_path": r"^images/I[0-9a-f]{16}\.png$",
}

# What identity looks like in a free-text value. Non-capturing groups only: pandas warns on match groups.
IDENTITY_PATTERNS: dict[str, str] = {
    # DICOM PN separates name components with '^' (DOE^JOHN); an honorific with a dot is the other common tell.
    "person name": r"\^|(?i:\b(?:mr|mrs|ms|dr)\.\s*[a-z])",
    # YYYYMMDD (the DICOM DA form of a birth date), with or without separators, and D/M/YYYY or M/D/YYYY.
    "date": (
        r"(?<!\d)(?:19|20)\d\d[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])(?!\d)"
        r"|(?<!\d)\d{1,2}[-./]\d{1,2}[-./](?:19|20)\d\d(?!\d)"
    ),
    # An ISO OID of four or more arcs (1.2.840.113619...) or a UUID-derived 2.25.<big integer>.
    "DICOM UID": r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){3,}(?![\w.])|(?<![\w.])2\.25\.\d{6,}",
}

# Free-text columns not scanned for identity: keys and hashes have strict patterns instead, and transfer_syntax
# holds DICOM dictionary names (a private syntax shows as its UID, which names a codec, not a person).
_NOT_SCANNED: frozenset[str] = frozenset({*KEY_PATTERNS, "transfer_syntax"})

REDACTED = "[redacted]"  # no angle brackets: Data Docs would render them as an HTML tag


@dataclass(frozen=True)
class Frame:
    """One pandas frame validated by one suite of the same name.

    Attributes:
        name: suite, data asset and validation definition name (e.g. "splits_per_patient").
        table: the contract it belongs to: images, annotations or splits.
        data: the frame.
        keys: columns that identify an offending row in messages and Data Docs.
        rows: rows of the source table (for the summary).
    """

    name: str
    table: str
    data: pd.DataFrame
    keys: tuple[str, ...]
    rows: int


def _col(df: pd.DataFrame, name: str, numeric: bool = False) -> pd.Series:
    """A column, or all-missing if the table lacks it (its own expectations then fail and say so)."""
    if name in df.columns:
        s = df[name]
        return pd.to_numeric(s, errors="coerce") if numeric else s
    return pd.Series(np.nan if numeric else None, index=df.index, dtype="float64" if numeric else "object")


# Values every row needs (site, manufacturer and model have their own, named, expectations).
REQUIRED: dict[str, tuple[str, ...]] = {
    "images": (
        "image_id", "patient_key", "study_key", "series_key", "modality", "plane", "field_strength",
        "pixel_spacing_row", "pixel_spacing_col", "rows", "columns", "image_sha256", "image_path",
    ),
    "annotations": (
        "image_id", "patient_key", "reader_id", "reader_level", "label", "x_min", "y_min", "x_max", "y_max",
    ),
    "splits": SPLIT_COLUMNS,
}  # fmt: skip


def _missing(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Per row, the required columns that are null, comma-joined ("" when none). Absent columns are left to the
    column-set expectation, so a missing column is reported once, not once per row."""
    out = pd.Series("", index=df.index, dtype="object")
    for c in (c for c in columns if c in df.columns):
        out = out + np.where(df[c].isna(), f"{c},", "")
    return out.str.rstrip(",").astype("object")


def images_frame(images: pd.DataFrame, params: ValidateParams) -> Frame:
    """images.parquet plus derived columns: nominal field strength, missing required values, null-token text."""
    df = images.copy()
    df["missing_required"] = _missing(images, REQUIRED["images"])
    fs = _col(df, "field_strength", numeric=True).to_numpy()
    allowed = np.asarray(params.field_strengths, dtype=float)
    # Scanners report their exact field (Siemens: 2.89362 for 3 T); snap to the nominal value within tolerance.
    dist = np.abs(fs[:, None] - allowed[None, :])
    nearest = allowed[dist.argmin(axis=1)]
    snapped = np.where(dist.min(axis=1) <= params.field_strength_tolerance, nearest, fs)
    df["field_strength_nominal"] = pd.Series(snapped, index=df.index, dtype="float64")
    tokens = {t.strip().lower() for t in params.null_tokens}
    for name in ("site", "manufacturer", "model"):
        s = _col(df, name).astype("object")
        # Ingest writes "unknown" for an absent tag: a null by another name, which would blind drift by scanner.
        blank = s.isna() | s.astype(str).str.strip().str.lower().isin(tokens)
        df[f"{name}_present"] = s.where(~blank, None)
    return Frame("images", "images", df, ("image_id",), len(images))


def identity_frame(images: pd.DataFrame) -> Frame:
    """Every free-text cell of images.parquet as one row (image_id, column, value), to scan for identity."""
    cols = [c for c in images.columns if c not in _NOT_SCANNED and _is_text(images[c])]
    ids = _col(images, "image_id").astype("object")
    parts = [
        pd.DataFrame({"image_id": ids, "column": c, "value": images[c].astype("object")}).dropna(subset=["value"])
        for c in cols
    ]
    df = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"image_id": pd.Series(dtype="object"), "column": [], "value": []})
    )
    df["value"] = df["value"].astype(str)
    return Frame("images_identity", "images", df.reset_index(drop=True), ("image_id", "column"), len(images))


def _is_text(s: pd.Series) -> bool:
    return bool(pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s))


def annotations_frame(annotations: pd.DataFrame, images: pd.DataFrame, params: ValidateParams) -> Frame:
    """annotations.parquet joined with its image's size and patient (left join: an unknown image gets nulls)."""
    df = annotations.copy()
    df["missing_required"] = _missing(annotations, REQUIRED["annotations"])
    ref = pd.DataFrame(
        {
            "image_id": _col(images, "image_id"),
            "image_rows": _col(images, "rows", numeric=True),
            "image_columns": _col(images, "columns", numeric=True),
            "image_patient_key": _col(images, "patient_key"),
        }
    ).drop_duplicates("image_id")
    ann_ids = _col(df, "image_id")
    joined = pd.DataFrame({"image_id": ann_ids}).merge(ref, on="image_id", how="left", validate="many_to_one")
    for c in ("image_rows", "image_columns", "image_patient_key"):
        df[c] = joined[c].to_numpy()
    for c in ("x_min", "y_min", "x_max", "y_max"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    # One reader, one level: a reader listed as expert on one row and junior on another breaks the reference standard.
    readers = _col(df, "reader_id")
    levels = _col(df, "reader_level")
    df["levels_of_reader"] = (
        pd.DataFrame({"r": readers, "l": levels}).groupby("r", dropna=False)["l"].transform("nunique").astype("int64")
        if len(df)
        else pd.Series(dtype="int64")
    )
    return Frame("annotations", "annotations", df, ("image_id", "reader_id"), len(annotations))


def reads_frame(
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    splits: pd.DataFrame | None,
    params: ValidateParams,
    readers: ReadersParams,
) -> Frame:
    """One row per ingested image: how many reference-reader boxes it has and whether it enters training.

    Without a splits table every image may still enter training, so every image needs its reference read.
    """
    ids = _col(images, "image_id")
    df = pd.DataFrame({"image_id": ids, "patient_key": _col(images, "patient_key")})
    ann_level = _col(annotations, "reader_level")
    ref = _col(annotations, "image_id")[ann_level == readers.reference_level]
    counts = ref.value_counts()
    df["reference_boxes"] = df["image_id"].map(counts).fillna(0).astype("int64")
    if params.expert_read_required_for == "all" or splits is None:
        df["split"] = None if splits is None else df["image_id"].map(_split_of(splits))
        df["enters_training"] = True
    else:
        df["split"] = df["image_id"].map(_split_of(splits))
        df["enters_training"] = df["split"] == CV
    return Frame("annotations_per_image", "annotations", df, ("image_id", "patient_key", "split"), len(annotations))


def _split_of(splits: pd.DataFrame) -> dict[Any, Any]:
    if "image_id" not in splits.columns:  # reported by the splits column-set expectation
        return {}
    s = splits.drop_duplicates("image_id")
    return dict(zip(s["image_id"], _col(s, "split"), strict=True))


def _bool(s: pd.Series) -> pd.Series:
    """True/False as a nullable boolean; anything else (reported by its own expectation) as NA."""
    return s.map(lambda v: bool(v) if isinstance(v, bool | np.bool_) else pd.NA).astype("boolean")


def splits_frame(splits: pd.DataFrame, images: pd.DataFrame) -> Frame:
    """splits.parquet with the ingested patient and site of each image (nulls where the image is unknown)."""
    df = splits.copy()
    df["missing_required"] = _missing(splits, REQUIRED["splits"])
    ref = pd.DataFrame(
        {"image_id": _col(images, "image_id"), "ingested_patient_key": _col(images, "patient_key"),
         "ingested_site": _col(images, "site")}
    ).drop_duplicates("image_id")  # fmt: skip
    joined = pd.DataFrame({"image_id": _col(df, "image_id")}).merge(ref, on="image_id", how="left")
    df["ingested_patient_key"] = joined["ingested_patient_key"].to_numpy()
    df["ingested_site"] = joined["ingested_site"].to_numpy()
    return Frame("splits", "splits", df, ("image_id", "patient_key", "split", "fold"), len(splits))


def patients_frame(splits: pd.DataFrame, annotations: pd.DataFrame, readers: ReadersParams) -> Frame:
    """One row per patient in the splits: in how many splits and cv folds, and their compression status."""
    s = pd.DataFrame(
        {
            "patient_key": _col(splits, "patient_key"),
            "split": _col(splits, "split"),
            "fold": _col(splits, "fold", numeric=True),
            "has_compression": _col(splits, "has_compression"),
        }
    )
    g = s.groupby("patient_key", dropna=False, sort=True)
    df = pd.DataFrame(
        {
            "splits": g["split"].agg(lambda v: ",".join(sorted({str(x) for x in v}))),
            "n_splits": g["split"].nunique(dropna=False),
            "n_cv_folds": s[s["split"] == CV].groupby("patient_key", dropna=False)["fold"].nunique(),
            "n_has_compression_values": g["has_compression"].nunique(dropna=False),
            "has_compression": g["has_compression"].first(),
        }
    )
    df["n_cv_folds"] = df["n_cv_folds"].fillna(0).astype("int64")
    level = _col(annotations, "reader_level")
    label = _col(annotations, "label")
    compressed = set(_col(annotations, "patient_key")[(level == readers.reference_level) & (label == "compression")])
    df = df.reset_index()
    df["reference_compression"] = df["patient_key"].isin(compressed)
    df["has_compression"] = df["has_compression"].astype("object")
    return Frame("splits_per_patient", "splits", df, ("patient_key", "splits"), len(splits))


def folds_frame(splits: pd.DataFrame, params: ValidateParams) -> Frame:
    """One row per cv fold: patients, compression share, and its distance from the share over all cv patients.

    The allowed distance is the tolerance plus one patient's worth (1 / patients in the fold): a fold's share moves
    in steps of 1/n, so a perfectly stratified split of small folds cannot do better than that.
    """
    s = pd.DataFrame(
        {
            "patient_key": _col(splits, "patient_key"),
            "split": _col(splits, "split"),
            "fold": _col(splits, "fold", numeric=True),
            "has_compression": _bool(_col(splits, "has_compression")),
        }
    )
    cv = s[s["split"] == CV].drop_duplicates(["fold", "patient_key"])
    per_patient = cv.drop_duplicates("patient_key")
    overall = float(per_patient["has_compression"].fillna(False).mean()) if len(per_patient) else 0.0
    g = cv.groupby("fold", sort=True)
    df = pd.DataFrame(
        {
            "n_patients": g["patient_key"].nunique(),
            "n_compression": g["has_compression"].agg(lambda v: int(v.fillna(False).sum())),
        }
    ).reset_index()
    df["fold"] = df["fold"].astype("int64")
    df["fold_rank"] = np.arange(len(df), dtype="int64")  # folds are numbered 0..k-1 without gaps
    df["compression_share"] = (df["n_compression"] / df["n_patients"]).round(6)
    df["cv_share"] = round(overall, 6)
    df["share_deviation"] = (df["compression_share"] - overall).abs().round(6)
    df["allowed_deviation"] = (params.fold_balance_tolerance + 1.0 / df["n_patients"]).round(6)
    keys = ("fold", "n_patients", "compression_share", "cv_share")
    return Frame("splits_per_fold", "splits", df, keys, len(splits))


def build_frames(
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    splits: pd.DataFrame | None,
    params: ValidateParams,
    readers: ReadersParams,
) -> list[Frame]:
    """Every frame to validate, in report order; the splits frames only when a splits table is given."""
    frames = [
        images_frame(images, params),
        identity_frame(images),
        annotations_frame(annotations, images, params),
        reads_frame(images, annotations, splits, params, readers),
    ]
    if splits is not None:
        frames += [
            splits_frame(splits, images),
            patients_frame(splits, annotations, readers),
            folds_frame(splits, params),
        ]
    return frames


class Redactor:
    """Hides any value that may be identity before it reaches a message, a log or the Data Docs."""

    def __init__(self, readers: ReadersParams) -> None:
        self._keys = {name: re.compile(p) for name, p in KEY_PATTERNS.items()}
        self._keys["reader_id"] = re.compile(readers.id_pattern)
        self._identity = [(kind, re.compile(p)) for kind, p in IDENTITY_PATTERNS.items()]

    def value(self, column: str | None, value: Any) -> Any:
        """The value as plain Python, or a marker if it is not a pseudonymous key or looks like identity."""
        value = plain(value)
        if not isinstance(value, str):
            return value
        pattern = self._key_pattern(column or "")
        if pattern is not None and not pattern.search(value):
            return f"{REDACTED} (not in the {column} format)"
        for kind, rx in self._identity:
            if rx.search(value):
                return f"{REDACTED} (looks like a {kind})"
        return value

    def _key_pattern(self, column: str) -> re.Pattern[str] | None:
        """The pattern of a key column, also under a derived name (image_patient_key is a patient_key)."""
        if column in self._keys:
            return self._keys[column]
        return next((p for name, p in self._keys.items() if column.endswith(f"_{name}")), None)

    def text(self, text: str) -> str:
        """Free text (an exception message) with anything that looks like identity cut out."""
        for _, rx in self._identity:
            text = rx.sub(REDACTED, text)
        return text

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row dict with each value redacted by its column."""
        return {str(k): self.value(str(k), v) for k, v in row.items()}


def plain(value: Any) -> Any:
    """numpy / pandas scalars as plain Python (JSON- and message-friendly); NaN and NA as None."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
