"""Atomic writes shared by every stage (a killed run never leaves a half-written file behind), and the content
fingerprint that ties a model to the exact data its contracts were checked on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling and rename (atomic on POSIX within one file system); creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Parquet without the index, zstd-compressed, written atomically (same input -> same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Sorted, indented JSON written atomically (no timestamps: reruns on the same data give the same bytes, so DVC
    metrics diff cleanly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def files_fingerprint(files: Sequence[Path]) -> str:
    """SHA-256 (first 16 hex digits) over the names and bytes of `files`, in the order given; a missing file counts
    as absent. Validate records it for the data it checked and train for the data it trained on; registration's
    data-contract gate compares the two (DVC's own hash covers only runs made through `dvc repro`)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).name.encode() + b"\0")
        digest.update(Path(path).read_bytes() if Path(path).is_file() else b"<absent>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]
