"""The contact sheet: a row per (site, worst grade), the expert's boxes drawn, the same bytes for the same cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.synth import SynthParams, generate_cohort
from pipelines.synth.preview import BOX_COLOURS, CAPTION, TILE, sign_examples, write_preview


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("preview") / "synth"
    generate_cohort(SynthParams(), "ci", out)
    return out


def test_one_row_per_site_and_grade_with_expert_boxes(cohort_dir: Path, tmp_path: Path) -> None:
    png = write_preview(cohort_dir, tmp_path / "sheet.png", per_group=2)
    cohort = pd.read_csv(cohort_dir / "cohort.csv")
    images = cohort[(cohort["is_distractor"] == 0) & (cohort["series_kind"] == "sag_t2")]
    groups = images.drop_duplicates("patient_id").groupby(["site", "max_severity"]).size()
    sheet = np.asarray(Image.open(png).convert("RGB"))
    first = images.sort_values(["site", "patient_id", "rel_path"]).drop_duplicates("patient_id")
    expert = pd.read_csv(cohort_dir / "annotations.csv").query("reader_level == 'expert'")
    signs = sign_examples(first.astype(str), expert)
    assert len(signs) >= 3  # the ci cohort shows at least every grade or some look-alikes
    per_row = max(min(2, int(groups.max())), 4)
    sign_rows = -(-len(signs) // per_row)
    assert sheet.shape[0] == 2 * CAPTION + (len(groups) + sign_rows) * (TILE + CAPTION)
    assert sheet.shape[1] == TILE * min(per_row, max(len(signs), min(2, int(groups.max()))))
    # The boxes are drawn: both box colours appear (the ci cohort has normal and compressed levels).
    for colour in BOX_COLOURS.values():
        assert (sheet == np.array(colour, dtype=np.uint8)).all(axis=2).any()


def test_same_cohort_same_bytes_and_default_place(cohort_dir: Path, tmp_path: Path) -> None:
    first = write_preview(cohort_dir, tmp_path / "a.png").read_bytes()
    assert write_preview(cohort_dir, tmp_path / "b.png").read_bytes() == first
    assert write_preview(cohort_dir) == cohort_dir / "preview.png"


def test_no_cohort_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no synthetic cohort"):
        write_preview(tmp_path)
