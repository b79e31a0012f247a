"""Small helpers the flows share for writing stage reports (deterministic JSON, so DVC metrics diff cleanly)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.io import write_atomic


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write sorted, indented JSON atomically (no timestamps: reruns on the same data give the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path
