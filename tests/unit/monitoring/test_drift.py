"""Window-vs-reference comparison: real shifts alert and name what moved; a window like the reference does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import compare, new_categories

NUM = [f"n{i}" for i in range(8)]
CAT = ["model", "software"]
EMB = [f"emb_{i:03d}" for i in range(16)]


def _frame(rng: np.random.Generator, n: int, *, shift: float = 0.0, model: str = "Skyra", emb_shift: float = 0.0):
    data: dict[str, object] = {c: rng.normal(shift if c == "n0" else 0.0, 1.0, n) for c in NUM}
    data["model"] = [model] * n
    data["software"] = rng.choice(["E11", "E12"], n)
    data.update({c: rng.normal(emb_shift, 1.0, n) for c in EMB})
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _frame(np.random.default_rng(1), 400)


def test_no_change_raises_no_alert(reference: pd.DataFrame) -> None:
    result = compare(reference, _frame(np.random.default_rng(2), 60), numerical=NUM, categorical=CAT, embedding=EMB)
    assert not result.alert, result.reasons()
    assert {c.column for c in result.columns} == set(NUM) | {"software"}  # a constant column is not tested
    # Bonferroni over 10 tests: 9 columns and the embedding
    assert all(c.threshold == pytest.approx(0.05 / 10) for c in result.columns)
    assert 0.3 < result.embedding_score < 0.7


def test_the_report_shows_the_p_values_the_decision_used(reference: pd.DataFrame) -> None:
    # The decision is made with Evidently's stat tests directly; the snapshot (for the dashboard and the kept HTML)
    # runs ValueDrift at the same level: it must show the same numbers, and the decision must not need it.
    current = _frame(np.random.default_rng(4), 60, shift=1.0)
    result = compare(reference, current, numerical=NUM, categorical=CAT)
    shown = {
        m["config"]["column"]: float(m["value"])
        for m in result.snapshot.dict()["metrics"]
        if m["config"]["type"].endswith(":ValueDrift")
    }
    assert shown == pytest.approx({c.column: c.score for c in result.columns}, rel=1e-9)
    bare = compare(reference, current, numerical=NUM, categorical=CAT, report=False)
    assert bare.snapshot is None and bare.columns == result.columns


def test_each_kind_of_shift_alerts_and_says_what_moved(reference: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    shifted = compare(reference, _frame(rng, 60, shift=1.5), numerical=NUM, categorical=CAT)
    assert shifted.alert and [c.column for c in shifted.drifted_columns] == ["n0"]
    assert shifted.reasons()[0].startswith("n0 median ") and " (ks p=" in shifted.reasons()[0]  # by how much, how sure
    new_model = compare(reference, _frame(rng, 60, model="MAGNETOM Vida"), numerical=NUM, categorical=CAT)
    assert new_model.new_categories == {"model": ["MAGNETOM Vida"]}
    assert "new model: MAGNETOM Vida" in new_model.reasons()
    moved = compare(reference, _frame(rng, 60, emb_shift=0.8), numerical=NUM, categorical=CAT, embedding=EMB)
    assert moved.embedding_drifted and moved.embedding_score > 0.8


def test_new_categories_ignore_missing_values() -> None:
    ref = pd.DataFrame({"model": ["A", "B", None]})
    cur = pd.DataFrame({"model": ["B", None, "C", "C"]})
    assert new_categories(ref, cur, ["model"]) == {"model": ["C"]}
    assert compare(ref, cur.iloc[:0], numerical=[], categorical=["model"]).alert is False  # an empty window
