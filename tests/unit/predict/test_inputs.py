"""What predict reads: files grouped by study, each through ingestion's checks; nothing lost, reasons kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from pipelines.ingest.files import ImageChecks
from pipelines.predict.inputs import FAILED, NOT_SELECTED, OK, PredictInputError, group_by_study, read_studies


def test_files_are_grouped_by_study_and_each_gets_a_fate(params, tmp_path: Path, write_mr) -> None:
    checks = ImageChecks.from_params(params.ingest)
    a, b = generate_uid(), generate_uid()
    root = tmp_path / "in"
    write_mr(root / "p1" / "t2_1.dcm", StudyInstanceUID=a)
    write_mr(root / "p1" / "t2_2.dcm", StudyInstanceUID=a)
    write_mr(root / "p1" / "t1.dcm", StudyInstanceUID=a, SeriesDescription="SAG T1", EchoTime=12.0)
    good = write_mr(root / "p2" / "t2.dcm", StudyInstanceUID=b)
    (root / "p2" / "cut.dcm").write_bytes(good.read_bytes()[:-500])  # pixel data cut short
    (root / "readme.txt").write_text("not DICOM")
    groups = group_by_study(root)
    assert set(groups) == {a, b, ""}
    studies = {s.study_uid: s for s in read_studies(root, groups, checks, (0.5, 99.5))}
    fate = {f.path: (f.status, f.reason) for s in studies.values() for f in s.files}
    assert len(fate) == 6  # every file accounted for
    assert fate["p1/t2_1.dcm"] == (OK, "") and fate["p2/t2.dcm"] == (OK, "")
    assert fate["p1/t1.dcm"][0] == NOT_SELECTED and fate["p1/t1.dcm"][1].startswith("series_rule:")
    assert fate["p2/cut.dcm"] == (FAILED, "truncated")
    assert fate["readme.txt"][0] == FAILED
    assert len(studies[a].images) == 2 and not studies[a].failed  # a T1 beside the T2s is no failure
    assert studies[b].failed and len(studies[b].images) == 1
    image = studies[a].images[0]
    assert image.pixels.shape == (64, 64, 3) and "PixelData" not in image.dataset  # header kept, pixels dropped


def test_a_missing_path_or_an_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(PredictInputError, match="not found"):
        group_by_study(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictInputError, match="no files"):
        group_by_study(tmp_path / "empty")
