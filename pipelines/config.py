"""Typed view of `params.yaml`, parsed once at the edge.

Every tunable lives in `params.yaml`, sectioned by stage. This module turns it into pydantic models that reject
unknown keys (a typo must fail loudly, not silently fall back to a default), in the spirit of ultralytics'
`check_cfg_mismatch`: an unknown key is named by its full path, with the closest known key at that place.

Import order: `pipelines.contracts` and `pipelines.settings` at the bottom, the stage packages above them (each
defines its own section in `pipelines/<stage>/params.py`), this module above the stages (it imports only their
`params` modules), `flows/` on top. No stage imports this module at run time (tests/unit/test_layering.py).
"""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from monitoring.params import MonitorParams
from pipelines.evaluate.params import EvaluateParams
from pipelines.ingest.params import IngestParams, SeriesCondition, SeriesRule
from pipelines.predict.params import PredictParams
from pipelines.register.params import RegisterParams
from pipelines.settings import (
    ExecutionParams,
    PathsParams,
    ReadersParams,
    RetrainParams,
    ScheduleParams,
    StrictModel,
)
from pipelines.split.params import SplitParams
from pipelines.synth.params import SynthParams
from pipelines.train.params import TrainParams
from pipelines.validate.params import ValidateParams

# Re-exported: callers may keep importing the section models from here.
__all__ = [
    "DEFAULT_PARAMS_FILE",
    "EvaluateParams",
    "IngestParams",
    "Params",
    "ParamsError",
    "PathsParams",
    "PredictParams",
    "ReadersParams",
    "RegisterParams",
    "SeriesCondition",
    "SeriesRule",
    "SplitParams",
    "StrictModel",
    "SynthParams",
    "TrainParams",
    "ValidateParams",
    "load_params",
]

DEFAULT_PARAMS_FILE = Path("params.yaml")


class Params(StrictModel):
    """The whole of `params.yaml`: one attribute per top-level section, named as in the YAML."""

    profile: str
    paths: PathsParams = PathsParams()
    readers: ReadersParams = ReadersParams()
    synth: SynthParams
    ingest: IngestParams
    split: SplitParams = SplitParams()
    # `validation`, not `validate`: pydantic's BaseModel owns `.validate`, and the YAML uses the same name.
    validation: ValidateParams = ValidateParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    registry: RegisterParams = RegisterParams()
    predict: PredictParams = PredictParams()
    monitor: MonitorParams = MonitorParams()
    retrain: RetrainParams = RetrainParams()
    schedule: ScheduleParams = ScheduleParams()
    execution: ExecutionParams = ExecutionParams()

    def with_profile(self, profile: str | None) -> Params:
        """Return a copy with another active profile (validated against the synth profiles)."""
        if profile is None:
            return self
        self.synth.profile(profile)  # raises with the list of known profiles
        self.train.profile(profile)
        return self.model_copy(update={"profile": profile})


class ParamsError(ValueError):
    """`params.yaml` is missing, malformed or has keys nobody reads."""


# Keys that moved to another place: an old params file gets told where, not just "unknown key".
MOVED: dict[str, str] = {
    "validate": "validation",
    "split.reference_reader_level": "readers.reference_level",
    "train.reference_reader_level": "readers.reference_level",
    "validation.reference_reader_level": "readers.reference_level",
    "validation.known_reader_levels": "readers.levels",
    "validation.reader_id_pattern": "readers.id_pattern",
    "validation.known_readers": "readers.known",
    "ingest.reader_id_pattern": "readers.id_pattern",
}


def _unwrap(tp: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` -> X (pydantic adds no location step for either)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, part: str | int) -> Any:
    """The type found one location step below `tp`: a model's field, a list's item or a dict's value."""
    tp = _unwrap(tp)
    if _is_model(tp):
        field = tp.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset) and args and isinstance(part, int):
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def model_at(loc: tuple[str | int, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model that holds the key at the end of a pydantic error location (None when it is not a model).

    Args:
        loc: e.g. ("train", "profiles", "demo", "epoch") or ("synth", "sites", "dev", "scanners", 0, "fov_mmm").
        root: the model the location starts from (default `Params`).
    """
    tp: Any = root or Params
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp)
    return tp if _is_model(tp) else None


def suggest(loc: tuple[str | int, ...], root: type[BaseModel] | None = None) -> str:
    """Where an unknown key went, or the closest key its model has (" (did you mean 'epochs'?)"), or ""."""
    path = ".".join(str(p) for p in loc)
    if path in MOVED:
        return f" (moved to {MOVED[path]!r})"
    model = model_at(loc, root)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _explain(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = f"unknown key: {msg}{suggest(tuple(item['loc']))}"
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
        raise ParamsError(f"{path} is invalid:\n{_explain(exc)}") from exc
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from exc
