"""The site leads' dashboard as a person sees it: the Evidently UI (`monitoring.ui.serve_dashboard`) on a small test
workspace, each site's project opened in headless Chromium (Debian's `chromium`, installed with apt when root and
absent; skipped plainly otherwise, never faked).

Two sites with three windows each (the third window at `south` has its SNR dropped) and a site whose project has no
window yet. Each site's page must show its project and every panel of its dashboard, and each chart must draw one
point per window (MUI X Charts SVG: a line path and its marks), not an empty chart; the empty project shows that
this check does fail on charts without data. Screenshots go to $CORDWATCH_TEST_ARTIFACTS (default
reports/test-artifacts/, git-ignored).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from monitoring.dashboard import SUMMARY_SERIES, add_window, open_workspace, project_name, site_project
from monitoring.drift import compare
from monitoring.ui import DashboardError, DashboardServer, serve_dashboard, site_of
from tests.conftest import REPO
from tests.servers import LOCALHOST, browse, find_chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUMERICAL = ["img_snr", "out_positive", "out_max_confidence", "meta_te"]
WINDOWS = {"north": (20.0, 20.0, 20.0), "south": (20.0, 20.0, 12.0)}  # SNR per window: south's drops last
EMPTY_SITE = "quiet"  # a project and its panels, no window yet
SNR_TITLE = SUMMARY_SERIES["img_snr"]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CORDWATCH_TEST_ARTIFACTS") or REPO / "reports" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def build_workspace(path: Path) -> dict[str, list[str]]:
    """The test workspace; returns each site's panel titles, as its dashboard model has them."""
    rng = np.random.default_rng(0)
    reference = _frame(rng, 200, 20.0)
    ws = open_workspace(path)
    for site, snrs in WINDOWS.items():
        for day, snr in enumerate(snrs, start=1):
            result = compare(
                reference, _frame(rng, 50, snr), numerical=NUMERICAL, categorical=["meta_model"],
                summaries=list(SUMMARY_SERIES), timestamp=dt.datetime(2026, 11, day),
                tags=[f"segment:site:{site}", f"site:{site}"], metadata={"window": str(day)},
            )  # fmt: skip
            assert add_window(ws, result, site=site)
    site_project(ws, EMPTY_SITE)
    return {site: [p.title for p in site_project(ws, site).dashboard.model().panels] for site in (*WINDOWS, EMPTY_SITE)}


# ------------------------------------------------------------------------------------------- the browser


# ------------------------------------------------------------------------------------------- reading the DOM


@dataclass
class Card:
    """One dashboard panel as rendered: its text, and what its chart drew."""

    texts: list[str] = field(default_factory=list)
    lines: int = 0  # MuiLineElement paths (a drawn series)
    marks: list[float] = field(default_factory=list)  # each point's cy (SVG: larger is lower)
    depth: int = 0

    @property
    def title(self) -> str:
        return self.texts[0] if self.texts else ""

    def numbers(self) -> list[float]:
        """The chart's numeric tick labels (the y axis: the x axis is dates)."""
        return [float(t) for t in self.texts if re.fullmatch(r"-?\d+(\.\d+)?", t)]


class PanelParser(HTMLParser):
    """Splits the UI's DOM into its panels (`MuiCard-root`) and collects the page's text."""

    VOID: ClassVar[frozenset[str]] = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[Card] = []
        self.texts: list[str] = []
        self._card: Card | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self._card is None and "MuiCard-root" in classes:
            self._card = Card(depth=self._depth)
            self.cards.append(self._card)
        if self._card is not None:
            if "MuiLineElement-root" in classes:
                self._card.lines += 1
            if "MuiMarkElement-root" in classes:
                self._card.marks.append(float(dict(attrs).get("cy") or "nan"))
        if tag not in self.VOID:
            self._depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        self._depth -= 1
        if self._card is not None and self._depth == self._card.depth:
            self._card = None

    def handle_data(self, data: str) -> None:
        if text := data.strip():
            self.texts.append(text)
            if self._card is not None:
                self._card.texts.append(text)


def panels(dom: str) -> tuple[list[str], dict[str, Card]]:
    parser = PanelParser()
    parser.feed(dom)
    return parser.texts, {card.title: card for card in parser.cards}


def empty_charts(cards: dict[str, Card], titles: list[str]) -> list[str]:
    """The chart panels (all but the first, a text panel) that drew no line or no point per window."""
    n = len(next(iter(WINDOWS.values())))
    return [t for t in titles[1:] if t not in cards or cards[t].lines < 1 or len(cards[t].marks) != n]


# ------------------------------------------------------------------------------------------- the tests


@dataclass
class Served:
    server: DashboardServer
    titles: dict[str, list[str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    find_chromium()  # installs it first (as root) or skips, before any time is spent on the workspace
    workspace = tmp_path_factory.mktemp("dashboard") / "ws"
    titles = build_workspace(workspace)
    with serve_dashboard(workspace) as server:
        yield Served(server, titles)


def test_each_site_dashboard_renders_its_panels_with_data(served: Served) -> None:
    started = time.monotonic()
    shots = artifacts_dir()
    urls = dict(served.server.site_urls())
    assert set(urls) == {*WINDOWS, EMPTY_SITE}
    for site in WINDOWS:
        shot = shots / f"dashboard-{site}.png"
        shot.unlink(missing_ok=True)
        dom = browse(urls[site], screenshot=shot, window=(1400, 2400))
        print(f"screenshot of site {site}'s dashboard: {shot}")
        texts, cards = panels(dom)
        assert project_name(site) in texts  # the breadcrumb: this site's project is the one open
        titles = served.titles[site]
        assert len(titles) == 5 and all(t in cards for t in titles), (titles, list(cards))
        assert "No data to display" not in dom and "Something went wrong" not in dom
        assert empty_charts(cards, titles) == []
        assert shot.stat().st_size > 20_000
        snr = cards[SNR_TITLE]
        if site == "south":  # the drop is drawn: the last point well below the first, the axis reaching ~12
            assert snr.marks[-1] > snr.marks[0] + 100 and min(snr.numbers()) <= 13
        else:
            assert min(snr.numbers()) >= 17
    # The empty project renders its panels' titles but no chart: the check above does tell them apart.
    texts, cards = panels(browse(urls[EMPTY_SITE]))
    titles = served.titles[EMPTY_SITE]
    assert project_name(EMPTY_SITE) in texts and all(t in texts for t in titles)
    assert empty_charts(cards, titles) == titles[1:]
    print(f"browsing took {time.monotonic() - started:.1f} s")


def test_site_urls_put_the_leads_site_first(served: Served) -> None:
    server = served.server
    assert server.url.startswith(f"http://{LOCALHOST}:")
    assert [site for site, _ in server.site_urls(first="south")] == ["south", "north", EMPTY_SITE]
    assert [site for site, _ in server.site_urls()] == sorted([*WINDOWS, EMPTY_SITE])
    assert re.fullmatch(rf"{re.escape(server.url)}/projects/[0-9a-f-]{{36}}", server.site_url("north"))
    assert site_of(project_name("north")) == "north" and site_of("someone else's project") is None
    with pytest.raises(DashboardError, match="no dashboard for site 'west' \\(sites with one: north, quiet, south"):
        server.site_url("west")


def test_start_failures_are_clear_errors_not_hangs(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="no Evidently workspace"):
        serve_dashboard(tmp_path / "absent")
    (tmp_path / "ws").mkdir()
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        with pytest.raises(DashboardError, match=r"cannot serve the dashboard on 127\.0\.0\.1:"):
            serve_dashboard(tmp_path / "ws", port=taken.getsockname()[1])
    started = time.monotonic()
    with pytest.raises(DashboardError, match=r"did not answer .* within 0\.3 s") as failed:
        serve_dashboard(tmp_path / "ws", startup_timeout_s=0.3, log=tmp_path / "ui.log")
    assert time.monotonic() - started < 20
    assert f"log {tmp_path / 'ui.log'}" in str(failed.value)
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, str(tmp_path / "ws"))]
    assert leftovers == []  # the UI that did not come up in time was stopped


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
