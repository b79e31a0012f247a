"""Settings shared by several stages: the strict base of every params model, the paths, and who reads.

Low in the import order (only `pipelines.contracts` below it): every `pipelines/<stage>/params.py` and
`pipelines/config.py` import from here, never the other way round, so a stage can name these types without
importing `pipelines.config` (which imports every stage's params and would close a cycle).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.contracts import ANNOTATIONS_TABLE, IMAGES_TABLE, READER_LEVELS


class StrictModel(BaseModel):
    """Base for every params model: unknown keys are an error (a typo must not fall back to a default), values
    are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsParams(StrictModel):
    """Where each stage reads and writes, relative to the project root (named once, here)."""

    synth_dir: Path = Path("data/synth")
    ingested_dir: Path = Path("data/ingested")
    state_dir: Path = Path(".cordwatch")
    reports_dir: Path = Path("reports")
    splits_file: Path = Path("data/splits.parquet")
    models_dir: Path = Path("models")
    mlflow_uri: str = "sqlite:///mlflow.db"
    mlflow_artifacts: Path = Path("mlruns")
    monitoring_dir: Path = Path("data/monitoring")

    # Files and folders derived from the roots above: named here once, used by every stage, flow and driver.
    @property
    def final_weights(self) -> Path:
        """The final model's weights (`models/final.pt`), written by train and read by evaluate."""
        return self.models_dir / "final.pt"

    @property
    def train_run_file(self) -> Path:
        """`models/train_run.json`: the MLflow run that trained the final model."""
        return self.models_dir / "train_run.json"

    @property
    def data_files(self) -> tuple[Path, Path, Path]:
        """The tables a model is trained from and its contracts check: images, annotations, splits."""
        return (self.ingested_dir / IMAGES_TABLE, self.ingested_dir / ANNOTATIONS_TABLE, self.splits_file)

    def report_dir(self, stage: str) -> Path:
        """`reports/<stage>/`: a stage's human-readable reports (validation, train, evaluation, ...)."""
        return self.reports_dir / stage

    def summary_file(self, stage: str) -> Path:
        """`reports/<stage>/summary.json`: the stage's summary, a DVC metric."""
        return self.report_dir(stage) / "summary.json"

    @property
    def evaluation_dir(self) -> Path:
        """`reports/evaluation/`: metrics.json, report.md, predictions.parquet, PR curves."""
        return self.reports_dir / "evaluation"

    @property
    def evaluation_metrics(self) -> Path:
        """`reports/evaluation/metrics.json`."""
        return self.evaluation_dir / "metrics.json"

    @property
    def evaluation_report(self) -> Path:
        """`reports/evaluation/report.md`."""
        return self.evaluation_dir / "report.md"

    @classmethod
    def under(cls, root: Path) -> PathsParams:
        """The default layout with every path inside `root` (a project copy, a benchmark or test folder)."""
        root = Path(root).resolve()
        defaults = cls()
        moved = {k: root / v for k, v in defaults.model_dump().items() if isinstance(v, Path)}
        return cls(**moved, mlflow_uri=f"sqlite:///{root / 'mlflow.db'}")


class RetrainParams(StrictModel):
    """The retraining flow (`cordwatch retrain`): how often a stage's transient failure is retried."""

    retries: int = Field(1, ge=0)  # a retry resumes: ingest from its journal, training from each fold's last.pt
    retry_delay_s: float = Field(10.0, ge=0)


class ExecutionParams(StrictModel):
    """Where fan-out work runs (ingestion's files, prediction's and monitoring's studies, training's folds): `local`
    in this process and its own worker pools, or `dask` through Prefect's DaskTaskRunner (pipelines/execution.py)."""

    engine: Literal["local", "dask"] = "local"
    address: str | None = None  # a running Dask scheduler (tcp://host:8786); None: a LocalCluster on this machine
    n_workers: int = Field(2, ge=1)  # LocalCluster: worker processes; with `address`: its workers, for chunking
    threads_per_worker: int = Field(1, ge=1)  # LocalCluster only: torch takes its own threads inside each task
    chunks_per_worker: int = Field(4, ge=1)  # studies/files go out in this many chunks per worker (fewer task runs)


class ScheduleParams(StrictModel):
    """`cordwatch schedule`: when retraining and monitoring run by themselves (flows/schedule.py)."""

    retrain_cron: str | None = "0 2 * * 0"  # None: no timed retraining (triggers still apply)
    monitor_cron: str | None = "0 * * * *"
    monitor_input: str | None = None  # the folder monitoring reads on its schedule (or the PACS below)
    monitor_pacs_url: str | None = None
    retrain_on_drift: bool = True  # a `monitor.event` (drift at a site) starts a retraining run for that site
    retrain_after_labelled_studies: int = Field(200, ge=0)  # this many newly labelled studies start one; 0: never


class ReadersParams(StrictModel):
    """Who reads the images: the reference standard and the readers' ids and levels (ingest, split, validate,
    train and evaluate all read this one section)."""

    reference_level: str = "expert"
    levels: list[str] = Field(default_factory=lambda: list(READER_LEVELS), min_length=1)
    id_pattern: str = r"^[A-Za-z0-9_.-]{1,32}$"
    known: list[str] | None = None

    @field_validator("id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"id_pattern is not a valid regex: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _reference_is_a_level(self) -> ReadersParams:
        if self.reference_level not in self.levels:
            raise ValueError(f"reference_level {self.reference_level!r} is not one of levels {self.levels}")
        return self
