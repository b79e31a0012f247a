"""params.yaml: one documented source of every tunable, equal to the typed defaults, unknown keys rejected."""

from __future__ import annotations

import pytest
import yaml

from pipelines.config import ParamsError, SplitParams, load_params
from pipelines.evaluate.params import EvaluateParams
from pipelines.train.params import TrainParams
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
    [("split", SplitParams), ("validate", ValidateParams), ("train", TrainParams), ("evaluate", EvaluateParams)],
)
def test_section_documents_the_model_defaults(section: str, model: type) -> None:
    assert model.model_validate(RAW[section]) == model()
    for line in _section_lines(section):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # (" in line, f"{section}: uncommented key line {line!r}"


def test_unknown_key_is_named_with_a_suggestion(tmp_path) -> None:
    raw = yaml.safe_load(TEXT)
    raw["evaluate"]["bootstrap_resample"] = 10
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ParamsError, match=r"evaluate.bootstrap_resample: unknown key.*did you mean 'bootstrap_resamples'"
    ):
        load_params(path)


def test_profile_override_and_unknown_profile() -> None:
    assert load_params(REPO / "params.yaml", "paper").profile == "paper"
    with pytest.raises(ParamsError, match="available profiles: ci, demo, paper"):
        load_params(REPO / "params.yaml", "tiny")
