"""The Evidently workspace: a project per site with its panels, and each window's run where its panels find it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.dashboard import SUMMARY_SERIES, add_window, open_workspace, project_name, site_project
from monitoring.drift import compare

NUM = ["img_snr", "out_positive", "out_max_confidence", "meta_te"]


def _frame(rng: np.random.Generator, n: int, snr: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "img_snr": rng.normal(snr, 1.0, n),
            "out_positive": rng.integers(0, 2, n).astype(float),
            "out_max_confidence": rng.uniform(0.3, 1.0, n),
            "meta_te": rng.choice([100.0, 120.0], n),
            "meta_model": ["Skyra"] * n,
        }
    )


def test_windows_land_in_the_site_project_with_the_panels_series(tmp_path: Path) -> None:
    from evidently.core.report import Snapshot

    rng = np.random.default_rng(0)
    reference = _frame(rng, 200, 20.0)
    ws = open_workspace(tmp_path / "ws")
    ids = []
    for day, snr in ((1, 20.0), (2, 12.0)):  # the second window's SNR has dropped
        result = compare(
            reference, _frame(rng, 50, snr), numerical=NUM, categorical=["meta_model"], summaries=list(SUMMARY_SERIES),
            timestamp=dt.datetime(2026, 11, day), tags=["segment:site:ext", "site:ext"], metadata={"window": str(day)},
        )  # fmt: skip
        ids.append(add_window(ws, result, site="ext"))
    assert all(ids)
    project = site_project(ws, "ext")
    assert ws.search_project(project_name("ext"))[0].id == project.id  # made once, found again
    dashboard = project.dashboard.model()
    titles = [p.title for p in dashboard.panels]
    assert any("drifted columns" in t for t in titles) and any(t.startswith("SNR") for t in titles)
    assert all(len(tab.panels) == len(set(tab.panels)) for tab in dashboard.tabs)  # no panel twice
    runs = ws.list_runs(project.id)
    assert len(runs) == 2
    by_window = {}
    for run_id in runs:
        model = ws.get_run(project.id, run_id)
        assert "segment:site:ext" in model.tags  # what the panels filter on
        metrics = Snapshot.load_model(model).dict()["metrics"]
        means = {m["config"]["column"]: m for m in metrics if m["config"]["type"].endswith("MeanValue")}
        snr = means["img_snr"]
        share = next(m for m in metrics if m["config"]["type"].endswith("DriftedColumnsCount"))
        by_window[model.metadata["window"]] = (float(snr["value"]), float(share["value"]["share"]))
    assert by_window["1"][0] > 18 and by_window["2"][0] < 14  # the SNR series shows the drop
    assert by_window["2"][1] > by_window["1"][1]  # and the drifted share rises with it


def test_a_new_scanner_adds_its_series_to_the_per_scanner_panel(tmp_path: Path) -> None:
    from monitoring.dashboard import SCANNER_PANEL

    rng = np.random.default_rng(1)
    reference = _frame(rng, 100, 20.0)
    ws = open_workspace(tmp_path / "ws")
    for scanner in ("SIEMENS", "GE MEDICAL SYSTEMS", "SIEMENS"):
        result = compare(
            reference, _frame(rng, 30, 20.0), numerical=NUM, categorical=["meta_model"],
            tags=[f"segment:scanner:{scanner}", f"scanner:{scanner}"],
        )  # fmt: skip
        add_window(ws, result, site="ext")
    panels = {p.title: p for p in site_project(ws, "ext").dashboard.model().panels}
    legends = [v.legend for v in panels[SCANNER_PANEL].values]
    assert legends == ["GE MEDICAL SYSTEMS", "SIEMENS"]  # one series per scanner, once each
    assert [v.tags for v in panels[SCANNER_PANEL].values] == [["scanner:GE MEDICAL SYSTEMS"], ["scanner:SIEMENS"]]
    assert len(ws.list_runs(site_project(ws, "ext").id)) == 3
