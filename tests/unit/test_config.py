"""params.yaml: one documented source of every tunable, equal to the typed defaults, unknown keys rejected and named
along their full path, each setting in one place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import Params, ParamsError, load_params, model_at, suggest
from pipelines.evaluate.params import EvaluateParams
from pipelines.settings import PathsParams, ReadersParams, StrictModel
from pipelines.split.params import SplitParams
from pipelines.synth.params import ScannerParams
from pipelines.train.params import TrainParams, TrainProfile
from pipelines.validate.params import ValidateParams
from tests.conftest import REPO

TEXT = (REPO / "params.yaml").read_text(encoding="utf-8")
RAW = yaml.safe_load(TEXT)


def _section_lines(name: str) -> list[str]:
    start = TEXT.index(f"\n{name}:")
    ends = [TEXT.find(f"\n{other}:", start + 1) for other in RAW if other != name]
    end = min([e for e in ends if e > start], default=len(TEXT))
    return TEXT[start:end].splitlines()[2:]


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("paths", PathsParams),
        ("readers", ReadersParams),
        ("split", SplitParams),
        ("validation", ValidateParams),
        ("train", TrainParams),
        ("evaluate", EvaluateParams),
    ],
)
def test_section_documents_the_model_defaults(section: str, model: type) -> None:
    assert model.model_validate(RAW[section]) == model()
    for line in _section_lines(section):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # (" in line, f"{section}: uncommented key line {line!r}"


def test_yaml_sections_are_the_params_attributes() -> None:
    # One name per section: `validation:` in the YAML is `Params.validation` in code (no alias in between).
    assert set(RAW) == set(Params.model_fields)
    assert all(field.alias is None for field in Params.model_fields.values())


def test_each_reader_setting_is_written_once() -> None:
    keys = [m.group(1) for m in re.finditer(r"^\s*([a-z_]+):", TEXT, re.M)]
    for key in ("reference_level", "id_pattern", "levels"):
        assert keys.count(key) == 1, key
    for old in ("reference_reader_level", "reader_id_pattern", "known_reader_levels", "known_readers"):
        assert old not in keys, old
    params = load_params(REPO / "params.yaml")
    assert params.readers == ReadersParams()


def test_one_strict_base() -> None:
    # Every params model derives from settings.StrictModel; nothing else sets extra="forbid" on its own.
    defining = [
        str(p.relative_to(REPO))
        for p in (REPO / "pipelines").rglob("*.py")
        if 'extra="forbid"' in p.read_text(encoding="utf-8")
    ]
    assert defining == ["pipelines/settings.py"]
    for model in (Params, PathsParams, ReadersParams, SplitParams, ValidateParams, TrainParams, EvaluateParams):
        assert issubclass(model, StrictModel), model


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw() -> dict[str, Any]:
    return yaml.safe_load(TEXT)


def test_unknown_key_is_named_with_a_suggestion(tmp_path) -> None:
    raw = _raw()
    raw["evaluate"]["bootstrap_resample"] = 10
    with pytest.raises(
        ParamsError, match=r"evaluate.bootstrap_resample: unknown key.*did you mean 'bootstrap_resamples'"
    ):
        load_params(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("edit", "loc", "key"),
    [
        # a dict of models (train profiles)
        (lambda r: r["train"]["profiles"]["demo"].update(epoch=3), "train.profiles.demo.epoch", "epochs"),
        # a dict of models holding a list of models (sites -> scanners)
        (
            lambda r: r["synth"]["sites"]["dev"]["scanners"][0].update(fov_mmm=240.0),
            "synth.sites.dev.scanners.0.fov_mmm",
            "fov_mm",
        ),
        # a list of models inside an optional list of models (series rules -> any_of)
        (
            lambda r: r["ingest"]["series_rules"][3]["any_of"][0].update(tagg="EchoTime"),
            "ingest.series_rules.3.any_of.0.tagg",
            "tag",
        ),
        # a nested model (synth anatomy), a section's key and a section
        (lambda r: r["synth"]["anatomy"].update(age_year=[30, 80]), "synth.anatomy.age_year", "age_years"),
        (lambda r: r["readers"].update(id_patern="x"), "readers.id_patern", "id_pattern"),
        (lambda r: r.update(reader={}), "reader", "readers"),
    ],
    ids=["dict-of-models", "list-in-dict", "optional-list", "nested-model", "section-key", "section"],
)
def test_suggestions_follow_the_full_key_path(tmp_path: Path, edit, loc: str, key: str) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(ParamsError) as err:
        load_params(_write(tmp_path, raw))
    assert f"  {loc}: unknown key: Extra inputs are not permitted (did you mean {key!r}?)" in str(err.value)


def test_moved_keys_say_where_they_went(tmp_path: Path) -> None:
    raw = _raw()
    raw["validate"] = raw.pop("validation")
    raw["split"]["reference_reader_level"] = "expert"
    raw["ingest"]["reader_id_pattern"] = ".*"
    with pytest.raises(ParamsError) as err:
        load_params(_write(tmp_path, raw))
    message = str(err.value)
    assert "validate: unknown key: Extra inputs are not permitted (moved to 'validation')" in message
    assert "split.reference_reader_level: unknown key: Extra inputs are not permitted (moved to " in message
    assert "'readers.reference_level'" in message and "(moved to 'readers.id_pattern')" in message


def test_model_at_walks_models_lists_and_dicts() -> None:
    assert model_at(("train", "profiles", "demo", "epoch")) is TrainProfile
    assert model_at(("synth", "sites", "dev", "scanners", 0, "fov_mmm")) is ScannerParams
    assert model_at(("profile_typo",)) is Params
    assert model_at(("train", "augment", "fliplr", "x")) is None  # a dict of floats holds no keys to suggest
    assert model_at(("nowhere", "x")) is None
    assert suggest(("train", "augment", "x", "y")) == ""


def test_profile_override_and_unknown_profile() -> None:
    assert load_params(REPO / "params.yaml", "paper").profile == "paper"
    with pytest.raises(ParamsError, match="available profiles: ci, demo, paper"):
        load_params(REPO / "params.yaml", "tiny")
