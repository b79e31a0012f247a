"""A study's triage from its detections: is compression suspected, how urgent, which levels, and whether auto mode
explains it. Pure functions over plain values (unit-tested without a model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

COMPRESSION = "compression"


@dataclass(frozen=True)
class Finding:
    """One kept box on one image (pixels of the source image)."""

    image: int  # position of the image in the study's selected images
    label: str
    confidence: float
    box: tuple[float, float, float, float]


def level_positions(boxes: Sequence[tuple[float, float, float, float]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each box's level by position: `index` 1 = the most cranial detected level (smallest box centre row), and a
    `name` from `names` only when exactly len(names) levels were detected (then the order is the anatomy's; with
    fewer or more a name would be a guess, so none is given)."""
    order = sorted(range(len(boxes)), key=lambda k: (boxes[k][1] + boxes[k][3]) / 2)
    named = len(boxes) == len(names)
    out: list[dict[str, Any]] = [{} for _ in boxes]
    for rank, k in enumerate(order):
        out[k] = {"index": rank + 1, "of": len(boxes), "name": names[rank] if named else None}
    return out


def study_triage(
    findings: Sequence[Finding], levels: Sequence[dict[str, Any]], band: tuple[float, float]
) -> dict[str, Any]:
    """The study-level result.

    - `compression_suspected`: any kept `compression` box (kept = at or above the model's operating confidence);
    - `priority`: the highest `compression` confidence (0 when none): a worklist sorts by it, most likely first;
    - `levels`: the compressed levels, one entry per level name (or per image and position when unnamed), with
      the highest confidence seen for it;
    - `uncertain`: some box's confidence (either class) lies in the uncertainty band [low, high).
    """
    low, high = band
    compressed = [(f, lv) for f, lv in zip(findings, levels, strict=True) if f.label == COMPRESSION]
    by_level: dict[str, dict[str, Any]] = {}
    for f, lv in compressed:
        key = lv.get("name") or f"image {f.image + 1} level {lv['index']} of {lv['of']}"
        best = by_level.get(key)
        if best is None or f.confidence > best["confidence"]:
            by_level[key] = {"level": key, "confidence": round(f.confidence, 4), "image": f.image}
    return {
        "compression_suspected": bool(compressed),
        "priority": round(max((f.confidence for f, _ in compressed), default=0.0), 4),
        "levels": sorted(by_level.values(), key=lambda d: -d["confidence"]),
        "uncertain": any(low <= f.confidence < high for f in findings),
    }


def explain_reason(mode: str, triage: dict[str, Any]) -> str | None:
    """Why a study gets heatmaps, or None: xai always; auto when positive or uncertain (the dual mode of the
    reference: a quick read for every study, the full explanation where it helps); quick never."""
    if mode == "xai":
        return "mode xai"
    if mode == "auto":
        if triage["compression_suspected"]:
            return "positive"
        if triage["uncertain"]:
            return "uncertain"
    return None


def boxes_to_explain(
    mode: str, labels: Sequence[str], confidences: Sequence[float], band: tuple[float, float]
) -> list[int] | None:
    """Which boxes of an explained image get a map: all of them in xai (None); in auto the ones a reader would
    question, a `compression` box or any box whose confidence lies in the band [low, high), not the confident
    normal levels around them."""
    if mode == "xai":
        return None
    low, high = band
    pairs = enumerate(zip(labels, confidences, strict=True))
    return [k for k, (label, conf) in pairs if label == COMPRESSION or low <= conf < high]
