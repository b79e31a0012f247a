"""A contact sheet of the SYNTHETIC cohort, for people: a few patients per site and worst compression grade, each
image windowed as ingest does and overlaid with the expert's boxes; then close-ups of each sign: a level of each
Kang grade and of each look-alike (not compression), so the difference a reader must see is visible at a glance.

Reads only what the generator wrote (`cohort.csv`, `annotations.csv`, the DICOM files), so it shows exactly what
every later stage sees. Deterministic: patients are taken in id order and the PNG has no timestamp, so the same
cohort gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image, ImageDraw, ImageFont

from pipelines.contracts import SEVERITIES
from pipelines.synth.params import LEVEL_NAMES, LOOKALIKE_NAMES

PREVIEW_FILE = "preview.png"
TILE = 224  # px, each image scaled to fit a square tile
CAPTION = 14  # px above each tile for its caption
BOX_COLOURS = {"normal": (60, 200, 90), "compression": (235, 60, 50)}
BANNER = "SYNTHETIC PHANTOMS, not patient data. Expert boxes: green normal, red compression."


def _windowed(path: Path, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """8-bit image, percentile-windowed as ingest's default `clip_percentiles`."""
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    low, high = np.percentile(pixels, [low_pct, high_pct])
    scaled = np.clip((pixels - low) / max(high - low, 1e-9), 0, 1)
    return (scaled * 255).round().astype(np.uint8)


def _tile(image: np.ndarray, boxes: pd.DataFrame, caption: str, font: ImageFont.ImageFont) -> Image.Image:
    rows, cols = image.shape
    scale = TILE / max(rows, cols)
    picture = Image.fromarray(image).convert("RGB").resize((round(cols * scale), round(rows * scale)))
    draw = ImageDraw.Draw(picture)
    for box in boxes.itertuples():
        xy = [box.x_min * scale, box.y_min * scale, box.x_max * scale, box.y_max * scale]
        draw.rectangle(xy, outline=BOX_COLOURS.get(box.label, (255, 255, 0)), width=1)
    tile = Image.new("RGB", (TILE, TILE + CAPTION), (0, 0, 0))
    tile.paste(picture, (0, CAPTION))
    ImageDraw.Draw(tile).text((2, 1), caption, fill=(255, 255, 255), font=font)
    return tile


SIGN_ZOOM = 3.0  # a close-up shows this many box sizes around the level


def sign_examples(cohort: pd.DataFrame, expert: pd.DataFrame) -> list[tuple[str, pd.Series, int]]:
    """(caption, cohort row, level index) of the first image (in patient id order) showing each Kang grade 1-3 and
    each look-alike. Only images with the expert's box at every level are used, so box order is level order.

    Cohorts from generators before grades and look-alikes were recorded (no `grades` column) give none.
    """
    if "grades" not in cohort or "lookalikes" not in cohort:
        return []
    counts = expert.groupby("sop_instance_uid").size()
    full = cohort[cohort["sop_instance_uid"].map(counts).fillna(0).astype(int) == len(LEVEL_NAMES)]
    wanted = [(f"grade {g} ({SEVERITIES[g]})", "grades", str(g)) for g in (1, 2, 3)]
    wanted += [(f"not compression: {k.replace('_', ' ')}", "lookalikes", k) for k in LOOKALIKE_NAMES]
    out = []
    for caption, column, value in wanted:
        for _, row in full.iterrows():
            values = row[column].split(";")
            if value in values:
                level = values.index(value)
                out.append((f"{caption} {LEVEL_NAMES[level]}", row, level))
                break
    return out


def _close_up(image: np.ndarray, box: pd.Series, caption: str, font: ImageFont.ImageFont) -> Image.Image:
    cx, cy = (box.x_min + box.x_max) / 2.0, (box.y_min + box.y_max) / 2.0
    half = SIGN_ZOOM * max(box.x_max - box.x_min, box.y_max - box.y_min) / 2.0
    x0, y0 = cx - half, cy - half
    crop = (
        Image.fromarray(image).convert("RGB").crop((round(x0), round(y0), round(x0 + 2 * half), round(y0 + 2 * half)))
    )
    scale = TILE / crop.width
    picture = crop.resize((TILE, TILE), Image.Resampling.LANCZOS)
    xy = [(box.x_min - round(x0)) * scale, (box.y_min - round(y0)) * scale]
    xy += [(box.x_max - round(x0)) * scale, (box.y_max - round(y0)) * scale]
    ImageDraw.Draw(picture).rectangle(xy, outline=BOX_COLOURS.get(box.label, (255, 255, 0)), width=2)
    tile = Image.new("RGB", (TILE, TILE + CAPTION), (0, 0, 0))
    tile.paste(picture, (0, CAPTION))
    ImageDraw.Draw(tile).text((2, 1), caption, fill=(255, 255, 255), font=font)
    return tile


def write_preview(synth_dir: Path, out_png: Path | None = None, per_group: int = 3) -> Path:
    """Write the contact sheet of the cohort in `synth_dir`: one row per (site, worst grade), `per_group` patients.

    Args:
        synth_dir: a generated cohort (`cohort.csv`, `annotations.csv`, `dicom/`).
        out_png: where to write it (default `<synth_dir>/preview.png`).
        per_group: patients shown per site and grade (one image each, the first slice in file order).

    Raises:
        FileNotFoundError: `synth_dir` holds no generated cohort.
    """
    synth_dir = Path(synth_dir)
    cohort_csv, annotations_csv = synth_dir / "cohort.csv", synth_dir / "annotations.csv"
    for needed in (cohort_csv, annotations_csv):
        if not needed.is_file():
            raise FileNotFoundError(
                f"no synthetic cohort in {synth_dir}: {needed.name} missing (run `cordwatch synth`)"
            )
    cohort = pd.read_csv(cohort_csv, dtype=str, keep_default_na=False)
    cohort = cohort[(cohort["is_distractor"] == "0") & (cohort["series_kind"] == "sag_t2")]
    cohort = cohort.sort_values(["site", "patient_id", "rel_path"], kind="stable").drop_duplicates("patient_id")
    expert = pd.read_csv(annotations_csv, dtype={"sop_instance_uid": str}, keep_default_na=False)
    expert = expert[expert["reader_level"] == "expert"]
    boxes_of = {uid: group for uid, group in expert.groupby("sop_instance_uid")}
    font = ImageFont.load_default()
    grade_order = {name: i for i, name in enumerate(SEVERITIES)}
    rows: list[list[Image.Image]] = []
    groups = cohort.groupby(["site", "max_severity"], sort=False)
    for (site, grade), group in sorted(groups, key=lambda g: (g[0][0], grade_order.get(g[0][1], len(SEVERITIES)))):
        row = []
        for item in group.head(per_group).itertuples():
            caption = f"{site} | worst: {grade} | {item.manufacturer} {item.field_strength} T"
            image = _windowed(synth_dir / item.rel_path)
            row.append(_tile(image, boxes_of.get(item.sop_instance_uid, expert.iloc[0:0]), caption, font))
        rows.append(row)
    signs = []
    for caption, item, level in sign_examples(cohort, expert):
        boxes = boxes_of[item.sop_instance_uid].sort_values("y_min", kind="stable")
        signs.append(_close_up(_windowed(synth_dir / item.rel_path), boxes.iloc[level], caption, font))
    per_row = max(max((len(r) for r in rows), default=1), 4)
    rows += [signs[i : i + per_row] for i in range(0, len(signs), per_row)]
    width = TILE * max((len(r) for r in rows), default=1)
    height = (TILE + CAPTION) * len(rows) + 2 * CAPTION
    sheet = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(sheet).text((4, 4), BANNER, fill=(255, 220, 0), font=font)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * TILE, 2 * CAPTION + r * (TILE + CAPTION)))
    out_png = Path(out_png) if out_png is not None else synth_dir / PREVIEW_FILE
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    sheet.save(tmp, format="PNG", optimize=True)
    tmp.replace(out_png)
    return out_png
