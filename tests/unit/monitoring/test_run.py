"""Windows analysed once each, per segment: a quiet window raises nothing, a new scanner and an SNR drop alert and
say so; every comparison is kept in the workspace and as HTML and JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.collect import FEATURES_FILE
from monitoring.run import ALERTS_FILE, monitor_windows
from pipelines.predict.features import IMAGE_NUMERICAL, META_NUMERICAL, OUTPUT_NUMERICAL

pytestmark = pytest.mark.slow  # eight comparisons (2 windows x 4 segments), each an Evidently report with its plots


def _rows(rng: np.random.Generator, n: int, *, t0: float, model: str = "Skyra", snr: float = 20.0) -> pd.DataFrame:
    numbers = (*META_NUMERICAL, *IMAGE_NUMERICAL, *OUTPUT_NUMERICAL)
    data: dict[str, object] = {c: rng.normal(1.0, 0.1, n) for c in numbers}
    data["img_snr"] = rng.normal(snr, 1.0, n)
    data["meta_field_strength"] = [3.0] * n  # discrete in real headers: one segment
    data.update(meta_site=["ext"] * n, meta_manufacturer=["SIEMENS"] * n, meta_model=[model] * n)
    data["meta_software"] = ["E11"] * n
    data.update({f"emb_{i:03d}": rng.normal(0, 1, n) for i in range(8)})
    data["monitored_at"] = t0 + np.arange(n, dtype=float)
    data["study_key"] = [f"S{t0:.0f}-{i}" for i in range(n)]
    return pd.DataFrame(data)


def test_quiet_window_then_a_new_scanner_with_lower_snr(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = _rows(rng, 300, t0=0)
    store = tmp_path / "store"
    store.mkdir()
    stream = pd.concat([_rows(rng, 40, t0=1000), _rows(rng, 40, t0=2000, model="MAGNETOM Vida", snr=14.0)])
    stream.to_parquet(store / FEATURES_FILE)
    kwargs = {"workspace": tmp_path / "ws", "reports": tmp_path / "reports", "size": 40}
    alerts = monitor_windows(store, reference, **kwargs)
    assert alerts and {a["window"] for a in alerts} == {1}  # the quiet window raised nothing
    overall = next(a for a in alerts if a["segment"] == "all")
    assert "new meta_model: MAGNETOM Vida" in overall["reasons"] and "img_snr" in overall["reasons"]
    assert {a["segment"] for a in alerts} >= {"all", "site:ext", "scanner:SIEMENS"}
    assert len(pd.read_parquet(store / ALERTS_FILE)) == len(alerts)
    assert list((tmp_path / "reports").glob("window00001-all.html")) and list((tmp_path / "reports").glob("*.json"))
    assert monitor_windows(store, reference, **kwargs) == []  # each window is analysed once
    from evidently.ui.workspace import Workspace

    names = {p.name for p in Workspace(str(tmp_path / "ws")).list_projects()}
    assert names == {"cordwatch drift - all sites", "cordwatch drift - ext"}
