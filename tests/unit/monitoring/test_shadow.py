"""Shadow agreement: what two models' boxes on the same studies say about each other."""

from __future__ import annotations

import pandas as pd
import pytest

from monitoring.shadow import agreement


def _box(study: str, image: str, role: str, label: str, x: float, score: float = 0.9) -> dict[str, object]:
    return {
        "patient_key": f"P{study}", "study_key": study, "site": "dev" if study < "S3" else "ext", "image_id": image,
        "role": role, "model": f"m/{role}", "label": label, "score": score,
        "x_min": x, "y_min": 10.0, "x_max": x + 10, "y_max": 20.0,
    }  # fmt: skip


def test_agreement_per_site_with_kappa_and_box_f1() -> None:
    rows = [
        _box("S1", "I1", "champion", "compression", 0),
        _box("S1", "I1", "challenger", "compression", 1),  # agree
        _box("S2", "I2", "champion", "normal", 0),
        _box("S2", "I2", "challenger", "compression", 0),  # class differs
        _box("S3", "I3", "champion", "normal", 0),
        _box("S3", "I3", "challenger", "normal", 30),  # box moved
        _box("S4", "I4", "champion", "compression", 0),  # the challenger missed it
    ]
    images = pd.DataFrame(
        [
            {"study_key": s, "site": "dev" if s < "S3" else "ext", "image_id": f"I{s[1]}", "challenger": "m/2"}
            for s in ("S1", "S2", "S3", "S4")
        ]
    )
    # S4 has no challenger box but was read by both (the challenger saw it, said nothing): it counts.
    rows.append(_box("S4", "I4", "challenger", "normal", 100, score=0.3))
    out = {r["site"]: r for r in agreement(pd.DataFrame(rows), images)}
    assert out["all"]["studies"] == 4
    # positive (any compression box): champion S1, S4; challenger S1, S2 -> agree on S1 and S3
    assert out["all"]["study_agreement"] == 0.5
    assert out["all"]["kappa"] == pytest.approx(0.0)
    assert out["all"]["box_f1"] == pytest.approx(2 * 1 / 8)  # only S1's box matches (IoU 9/11 >= 0.5)
    assert out["dev"]["studies"] == 2 and out["ext"]["studies"] == 2
    assert agreement(pd.DataFrame(rows), images.assign(challenger="")) == []  # no challenger read: no figures
    silent = agreement(pd.DataFrame(rows).query("role == 'champion'"), images)[0]  # it read, and said nothing
    assert silent["studies"] == 4 and silent["positive_rate"]["challenger"] == 0.0
