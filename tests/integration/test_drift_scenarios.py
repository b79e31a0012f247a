"""Each drift scenario is caught on small data, a software upgrade that changes labels only is not image drift, and
unchanged studies raise no alert over many windows: monitoring's decisions on SYNTHETIC streams read by a real
detector (the ci project's).

The reference here is a no-change stream read the same way (40 studies), not the ci model's tiny training set:
what is tested is the decision on a window, which does not care where the reference rows came from.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from monitoring.collect import collect_features, read_store
from monitoring.run import analyse_window
from monitoring.scenarios import generate_stream, load_scenarios
from monitoring.windows import ordered
from pipelines.config import load_params
from pipelines.predict.model import resolve_model
from tests.integration.conftest import PSEUDONYM_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WINDOW = 20


def _rows(params, model, scenario, work: Path, *, before: int, after: int, seed: int) -> pd.DataFrame:
    stream = generate_stream(
        params.synth, scenario, work / "dicom", before=before, after=after, batch=WINDOW, seed=seed, matrix_scale=0.5
    )
    for b in stream:
        collect_features(params, b.dicom, store=work / "store", out_dir=work / "reads", model=model)
    return ordered(read_store(work / "store"))


def _kinds(reference: pd.DataFrame, window: pd.DataFrame) -> set[str]:
    found = set()
    for _, _, r in analyse_window(reference, window, alpha=0.05, report=False):
        found |= {"category"} if r.new_categories else set()
        found |= {c.column.split("_", 1)[0] for c in r.drifted_columns}  # meta, img, out
        found |= {"embedding"} if r.embedding_drifted else set()
    return found


def test_every_scenario_is_caught_and_no_change_is_quiet(
    ci_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(ci_project / "params.yaml")
    monkeypatch.setenv("CORDWATCH_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.chdir(ci_project)
    model = resolve_model(str(ci_project / "models" / "final.pt"), params)
    scenarios = load_scenarios(base=params.synth)
    reference = _rows(params, model, scenarios["no_change"], tmp_path / "ref", before=2 * WINDOW, after=0, seed=1)
    quiet = _rows(params, model, scenarios["no_change"], tmp_path / "quiet", before=6 * WINDOW, after=0, seed=2)
    alarms = [_kinds(reference, quiet.iloc[i : i + WINDOW]) for i in range(0, len(quiet), WINDOW)]
    assert len(alarms) == 6 and not any(alarms), alarms
    for name, scenario in scenarios.items():
        if name == "no_change":
            continue
        shifted = _rows(params, model, scenario, tmp_path / name, before=0, after=WINDOW, seed=3)
        kinds = _kinds(reference, shifted)
        assert kinds, (name, "not caught")
        if not scenario.expect_image_drift:  # labels changed, images did not: an alert on the new labels only
            assert not kinds & {"img", "embedding", "out"}, (name, kinds)
        if name == "rising_noise":  # nothing in the header changes: only the images can tell
            assert kinds <= {"img", "embedding", "out"}, kinds
