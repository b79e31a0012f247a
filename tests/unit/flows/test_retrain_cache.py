"""The retraining cache's keys: what a stage reads (dvc.yaml's deps and params keys) and what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.retrain_flow import outputs_fingerprint, stage_fingerprint
from pipelines.config import PathsParams, load_params
from tests.conftest import REPO

DVC = """
stages:
  split:
    cmd: cordwatch split
    deps:
      - ${paths.ingested_dir}/images.parquet
      - pipelines/split
    params:
      - split
      - readers.reference_level
    outs:
      - ${paths.splits_file}
    metrics:
      - ${paths.reports_dir}/split/summary.json:
          cache: false
"""


@pytest.fixture
def project(tmp_path: Path):
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"paths": PathsParams.under(tmp_path)})
    (tmp_path / "data" / "ingested").mkdir(parents=True)
    (tmp_path / "data" / "ingested" / "images.parquet").write_bytes(b"v1")
    (tmp_path / "data" / "splits.parquet").write_bytes(b"splits")
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(DVC)
    return params, dvc, tmp_path


def test_the_key_follows_the_stage_inputs_and_its_params_only(project) -> None:
    params, dvc, root = project
    key = stage_fingerprint(params, "split", dvc)
    assert stage_fingerprint(params, "split", dvc) == key  # stable
    other = params.model_copy(update={"monitor": params.monitor.model_copy(update={"alpha": 0.01})})
    assert stage_fingerprint(other, "split", dvc) == key  # a section split does not read
    changed = params.model_copy(update={"split": params.split.model_copy(update={"seed": params.split.seed + 1})})
    assert stage_fingerprint(changed, "split", dvc) != key  # its own section
    (root / "data" / "ingested" / "images.parquet").write_bytes(b"v2")
    assert stage_fingerprint(params, "split", dvc) != key  # its input's content


def test_the_outputs_fingerprint_sees_a_deleted_or_edited_output(project) -> None:
    params, dvc, root = project
    before = outputs_fingerprint(params, "split", dvc)
    (root / "data" / "splits.parquet").write_bytes(b"edited by hand")
    edited = outputs_fingerprint(params, "split", dvc)
    (root / "data" / "splits.parquet").unlink()
    assert len({before, edited, outputs_fingerprint(params, "split", dvc)}) == 3
