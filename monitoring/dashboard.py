"""The site leads' dashboard: an Evidently 0.7 workspace with one project per site, one run per segment and window.

Each comparison (`monitoring.drift.compare`) is stored in the project of the site it concerns (`all` and the
scanner and field-strength segments go to the `all sites` project as well as to their site's when the window has
one site), tagged `segment:<tag>` plus `site:`, `scanner:` or `field:`; the panels filter on those tags, so each
site's project opens on its own site. The panels are made once per project (Evidently adds a panel twice when its
tab exists already, so they are written as one dashboard model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitoring.drift import DriftResult

ALL_SITES = "all sites"
SUMMARY_SERIES = {  # column -> panel title (the window's mean, `MeanValue`)
    "img_snr": "SNR (mean per window)",
    "out_positive": "Positive rate (share of studies with compression suspected)",
    "out_max_confidence": "Highest box confidence (mean per window)",
}


def open_workspace(path: Path) -> Any:
    """The workspace at `path` (created when absent)."""
    from evidently.ui.workspace import Workspace

    path.mkdir(parents=True, exist_ok=True)
    return Workspace.create(str(path))


def project_name(site: str) -> str:
    return f"cordwatch drift - {site}"


def site_project(ws: Any, site: str) -> Any:
    """The project of `site` (or ALL_SITES), with its dashboard, created on first use."""
    name = project_name(site)
    found = ws.search_project(name)
    if found:
        return found[0]
    description = (
        f"Drift of cordwatch's inputs and outputs at {site}: each point is one window of studies against the "
        "registered model's reference; SYNTHETIC where the studies are phantoms."
    )
    project = ws.create_project(name, description=description)
    _build_dashboard(ws, project, site)
    return project


SCANNER_PANEL = "Share of drifted columns per scanner (manufacturer)"


def _build_dashboard(ws: Any, project: Any, site: str, scanners: list[str] | None = None) -> None:
    from evidently.sdk.models import DashboardModel, DashboardTabModel
    from evidently.sdk.panels import PanelMetric, line_plot_panel, text_panel

    segment = "segment:all" if site == ALL_SITES else f"segment:site:{site}"
    intro = (
        f"Windows of studies at {site} against the model's training data (each point: one window). A panel's y axis "
        "fits its data: read the values, not the height of a swing."
    )
    share = PanelMetric(
        metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, tags=[segment], legend="drifted share"
    )
    panels = [
        text_panel(title=f"cordwatch drift monitoring: {site}", description=intro),
        line_plot_panel(title="Share of drifted columns (KS / chi-square, Bonferroni level)", values=[share]),
    ]
    for column, title in SUMMARY_SERIES.items():
        mean = PanelMetric(metric="MeanValue", metric_labels={"column": column}, tags=[segment], legend="mean")
        panels.append(line_plot_panel(title=title, values=[mean]))
    if scanners:  # one series per scanner segment seen so far (the panel is rebuilt when a new one appears)
        per_scanner = [
            PanelMetric(
                metric="DriftedColumnsCount",
                metric_labels={"value_type": "share"},
                tags=[f"scanner:{name}"],
                legend=name,
            )
            for name in scanners
        ]
        panels.append(line_plot_panel(title=SCANNER_PANEL, values=per_scanner))
    dashboard = DashboardModel(tabs=[DashboardTabModel(title="Drift", panels=[p.id for p in panels])], panels=panels)
    ws.save_dashboard(project.id, dashboard)


def _scanners_shown(ws: Any, project: Any) -> list[str]:
    for panel in ws.get_dashboard(project.id).panels:
        if panel.title == SCANNER_PANEL:
            return [v.legend for v in panel.values if v.legend]
    return []


def add_window(ws: Any, result: DriftResult, *, site: str) -> str | None:
    """Store one comparison's snapshot in `site`'s project; returns the run id (None without a snapshot)."""
    if result.snapshot is None:
        return None
    project = site_project(ws, site)
    scanners = [t.split(":", 1)[1] for t in result.tags if t.startswith("scanner:")]
    shown = _scanners_shown(ws, project) if scanners else []
    if any(name not in shown for name in scanners):
        _build_dashboard(ws, project, site, sorted(set(shown) | set(scanners)))
    ref = ws.add_run(project.id, result.snapshot, include_data=False)
    return str(ref.id)
