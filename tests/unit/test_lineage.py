"""Lineage: the DVC hash recorded for an output (or a file inside it), git commit and params hash."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.lineage import dvc_hash, lineage


def test_dvc_hash_reads_the_lock_for_an_output_and_files_inside_it(tmp_path: Path) -> None:
    lock = {
        "schema": "2.0",
        "stages": {
            "ingest": {"cmd": "cordwatch ingest", "outs": [{"path": "data/ingested", "md5": "abc123.dir"}]},
            "split": {"cmd": "cordwatch split", "outs": [{"path": "data/splits.parquet", "md5": "def456"}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvc_hash(Path("data/ingested"), tmp_path) == "abc123.dir"
    assert dvc_hash(Path("data/ingested/images.parquet"), tmp_path) == "abc123.dir"
    assert dvc_hash(Path("data/splits.parquet"), tmp_path) == "def456"
    assert dvc_hash(Path("data/ingested_other"), tmp_path) is None  # a prefix is not a parent folder
    assert dvc_hash(Path("data/ingested"), tmp_path / "nowhere") is None


def test_lineage_tags(params, tmp_path: Path) -> None:
    info = lineage(params, Path("data/ingested"), tmp_path)  # not a git repo, no lock
    tags = info.as_tags()
    assert tags["cordwatch.lineage.dvc_hash"] == "" and tags["cordwatch.lineage.git_commit"] == ""
    assert len(info.params_hash) == 16
    other = params.model_copy(update={"split": params.split.model_copy(update={"seed": 99})})
    assert lineage(other, Path("data/ingested"), tmp_path).params_hash != info.params_hash
