"""Typed view of `params.yaml`, parsed once at the edge.

Every tunable lives in `params.yaml`, sectioned by stage. This module turns it into pydantic models that reject
unknown keys (a typo must fail loudly, not silently fall back to a default), in the spirit of ultralytics'
`check_cfg_mismatch`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.evaluate.params import EvaluateParams
from pipelines.synth.params import SynthParams
from pipelines.train.params import TrainParams
from pipelines.validate.params import ValidateParams

DEFAULT_PARAMS_FILE = Path("params.yaml")


class StrictModel(BaseModel):
    """Base for every params section: unknown keys are an error, values are immutable."""

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

    # Files and folders derived from the roots above: named here once, used by every stage, flow and driver.
    @property
    def final_weights(self) -> Path:
        """The final model's weights (`models/final.pt`), written by train and read by evaluate."""
        return self.models_dir / "final.pt"

    @property
    def train_run_file(self) -> Path:
        """`models/train_run.json`: the MLflow run that trained the final model."""
        return self.models_dir / "train_run.json"

    def report_dir(self, stage: str) -> Path:
        """`reports/<stage>/`: a stage's human-readable reports (validation, train, evaluation, ...)."""
        return self.reports_dir / stage

    def summary_file(self, stage: str) -> Path:
        """`reports/<stage>/summary.json`: the stage's summary, a DVC metric."""
        return self.reports_dir / stage / "summary.json"

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


RuleOp = Literal["equals", "in", "regex", "not_regex", "range", "plane", "absent_or_not_equals"]


class SeriesCondition(StrictModel):
    """One test on one DICOM attribute (by keyword)."""

    tag: str
    op: RuleOp
    value: Any = None
    missing: Literal["fail", "pass"] = "fail"


class SeriesRule(StrictModel):
    """A named series-selection rule: a single condition, or `any_of` several (passes if one does)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    tag: str | None = None
    op: RuleOp | None = None
    value: Any = None
    missing: Literal["fail", "pass"] = "fail"
    any_of: list[SeriesCondition] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SeriesRule:
        single = self.tag is not None or self.op is not None
        if single == (self.any_of is not None):
            raise ValueError(f"rule {self.name!r}: give either tag+op(+value) or any_of, not both or neither")
        if single and (self.tag is None or self.op is None):
            raise ValueError(f"rule {self.name!r}: a single-condition rule needs both tag and op")
        return self

    def conditions(self) -> list[SeriesCondition]:
        """The rule as a list of alternatives."""
        if self.any_of is not None:
            return list(self.any_of)
        return [SeriesCondition(tag=self.tag or "", op=self.op or "equals", value=self.value, missing=self.missing)]


class IngestParams(StrictModel):
    """DICOM ingestion: series rules, de-identification and safety limits."""

    input_dir: Path | None = None
    annotations_csv: Path | None = None
    series_rules: list[SeriesRule]
    site_tag: str = "InstitutionName"
    site_map: dict[str, str] = Field(default_factory=dict)
    pseudonym_key_env: str = "CORDWATCH_PSEUDONYM_KEY"
    max_file_mb: float = Field(512, gt=0)
    max_pixels: int = Field(64_000_000, gt=0)
    min_matrix: int = Field(32, gt=0)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    png_compress_level: int = Field(1, ge=0, le=9)
    workers: int = Field(2, ge=1)
    reader_id_pattern: str = r"^[A-Za-z0-9_.-]{1,32}$"
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(1.0, ge=0)

    # Keys that change how a run executes but never what it writes: left out of the output-settings hash, so
    # resuming with another worker count still reuses finished files.
    EXECUTION_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"input_dir", "annotations_csv", "workers", "retries", "retry_delay_s"}
    )

    def output_hash(self) -> str:
        """Stable short hash of the settings that shape the ingested dataset."""
        dumped = self.model_dump(mode="json", exclude=set(self.EXECUTION_ONLY))
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


class SplitParams(StrictModel):
    """Patient-grouped splits: k stratified folds and an internal test set from development sites, external held out."""

    seed: int = 2026
    k_folds: int = Field(5, ge=2)
    internal_test_fraction: float = Field(0.1, ge=0, lt=1)
    external_sites: list[str] = Field(default_factory=lambda: ["ext"])
    reference_reader_level: Literal["expert", "mid", "junior"] = "expert"


class Params(StrictModel):
    """The whole of `params.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    profile: str
    paths: PathsParams = PathsParams()
    synth: SynthParams
    ingest: IngestParams
    split: SplitParams = SplitParams()
    # The YAML section is `validate`; the attribute is `validation` (pydantic's BaseModel owns `.validate`).
    validation: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    def with_profile(self, profile: str | None) -> Params:
        """Return a copy with another active profile (validated against the synth profiles)."""
        if profile is None:
            return self
        self.synth.profile(profile)  # raises with the list of known profiles
        self.train.profile(profile)
        return self.model_copy(update={"profile": profile})


class ParamsError(ValueError):
    """`params.yaml` is missing, malformed or has keys nobody reads."""


def _explain(err: ValidationError, known: dict[str, type[BaseModel]]) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            parent = str(item["loc"][0]) if item["loc"] else ""
            model = known.get(parent)
            key = str(item["loc"][-1])
            if model is not None:
                close = difflib.get_close_matches(key, list(model.model_fields), n=1)
                if close:
                    msg += f" (did you mean {close[0]!r}?)"
            msg = f"unknown key: {msg}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_params(path: Path = DEFAULT_PARAMS_FILE, profile: str | None = None) -> Params:
    """Parse and validate `params.yaml`.

    Args:
        path: the YAML file.
        profile: override the file's active `profile` (e.g. from `--profile`).

    Raises:
        ParamsError: with one line per problem, naming the key.
    """
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
        return params.with_profile(profile)
    except ValidationError as exc:
        known = {
            "paths": PathsParams,
            "synth": SynthParams,
            "ingest": IngestParams,
            "split": SplitParams,
            "validate": ValidateParams,
            "train": TrainParams,
            "evaluate": EvaluateParams,
        }
        raise ParamsError(f"{path} is invalid:\n{_explain(exc, known)}") from exc
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from exc
