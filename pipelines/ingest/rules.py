"""Series selection as data: named rules on DICOM attributes, read from `params.yaml`.

The first rule a dataset fails is the quarantine reason (`series_rule:<name>`), so an operator sees exactly which
configured rule excluded a series (the MONAI Deploy series-selector idea).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pipelines.ingest.params import SeriesCondition, SeriesRule

# Free-text attributes whose values may carry identity: never echoed verbatim in a quarantine detail.
_FREE_TEXT = {"SeriesDescription", "StudyDescription", "ProtocolName", "ImageComments", "InstitutionName"}

_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class RuleFailure:
    """Why a dataset did not pass the series rules."""

    rule: str
    detail: str

    @property
    def reason(self) -> str:
        return f"series_rule:{self.rule}"


def plane_of(orientation: Sequence[float], tolerance_deg: float = 30.0) -> str:
    """Classify ImageOrientationPatient as sagittal, coronal, axial or oblique.

    The slice normal is the cross product of the row and column direction cosines; the plane is the patient axis
    it lies within `tolerance_deg` of (x: sagittal, y: coronal, z: axial).
    """
    if len(orientation) != 6:
        raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(orientation)}")
    r = [float(v) for v in orientation[:3]]
    c = [float(v) for v in orientation[3:]]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n))
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column vectors are parallel")
    cos_limit = math.cos(math.radians(tolerance_deg))
    for plane, axis in _PLANE_AXIS.items():
        if abs(n[axis]) / norm >= cos_limit:
            return plane
    return "oblique"


def _shown(tag: str, value: Any) -> str:
    if tag in _FREE_TEXT:
        return "<free text withheld>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(ds: Dataset, cond: SeriesCondition) -> str | None:
    """Return None when the condition holds, else a short detail of why not."""
    value = ds.get(cond.tag)
    if value is None or value == "" or (hasattr(value, "__len__") and not isinstance(value, str) and not value):
        return None if cond.missing == "pass" else f"{cond.tag} missing"
    op, want = cond.op, cond.value
    try:
        if op == "equals":
            ok = str(value).strip().upper() == str(want).strip().upper()
        elif op == "absent_or_not_equals":
            ok = str(value).strip().upper() != str(want).strip().upper()
        elif op == "in":
            ok = str(value).strip().upper() in {str(w).strip().upper() for w in want}
        elif op == "regex":
            ok = re.search(str(want), str(value)) is not None
        elif op == "not_regex":
            ok = re.search(str(want), str(value)) is None
        elif op == "range":
            lo, hi = want
            ok = lo <= float(value) <= hi
        elif op == "plane":
            ok = plane_of(list(value)) == want
            if not ok:
                return f"{cond.tag} is {plane_of(list(value))}, rule wants {want}"
        else:  # pragma: no cover - the config model restricts ops
            raise ValueError(f"unknown op {op}")
    except (TypeError, ValueError) as exc:
        return f"{cond.tag} {_shown(cond.tag, value)} cannot be tested with {op}: {exc}"
    return None if ok else f"{cond.tag} {_shown(cond.tag, value)} fails {op} {want!r}"


def first_failure(ds: Dataset, rules: Sequence[SeriesRule]) -> RuleFailure | None:
    """Apply the rules in order; return the first one the dataset fails, or None if it passes all."""
    for rule in rules:
        details = [_check(ds, cond) for cond in rule.conditions()]
        if all(d is not None for d in details):
            return RuleFailure(rule.name, "; ".join(d for d in details if d))
    return None
