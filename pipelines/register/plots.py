"""The model card's plots: cross-validation folds against the study's range, and subgroups against the gate's margin.

Each plot draws figures read from the pipeline's own files (train summary, metrics.json); nothing is recomputed, so
the plot and the card's tables cannot disagree. Synthetic runs carry the SYNTHETIC mark on every plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.evaluate.study import STUDY

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SYNTHETIC_MARK = "SYNTHETIC DATA: not evidence about patients"
JUDGED_COLOUR = "#1f4e79"
SHORT_COLOUR = "firebrick"  # a judged subgroup below overall minus the margin: what the subgroups gate fails on
SMALL_COLOUR = "#9a9a9a"  # too small to judge: drawn, greyed, and labelled


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing or NaN figure."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _mark_synthetic(fig: Figure, synthetic: bool) -> None:
    """The SYNTHETIC mark above the plot, where no data point can hide it."""
    if synthetic:
        fig.suptitle(SYNTHETIC_MARK, color="firebrick", fontsize=9, fontweight="bold")


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, bbox_inches="tight", metadata={"Software": None})  # no version stamp: same figures, same bytes
    return out


def plot_fold_bars(train_summary: dict[str, Any] | None, out: Path, synthetic: bool) -> Path | None:
    """Per-fold cross-validation mAP50 bars, the study's CV range shaded and this run's CV mean as a line.

    The bars are the fold figures train wrote (`folds.<name>.map50`), the mean is its `cv.map50_mean`, the range its
    `cv.study_map50_min/max` (the study's figures when the summary does not carry them). Returns None, writing
    nothing, when there is no summary or no fold holds a mAP50: the card then says so.
    """
    if not train_summary:
        return None
    folds = {name: _number(f.get("map50")) for name, f in sorted((train_summary.get("folds") or {}).items())}
    folds = {name: v for name, v in folds.items() if v is not None}
    if not folds:
        return None
    cv = train_summary.get("cv") or {}
    study_low = _number(cv.get("study_map50_min")) or STUDY["cv_map50_range"][0]
    study_high = _number(cv.get("study_map50_max")) or STUDY["cv_map50_range"][1]
    mean = _number(cv.get("map50_mean"))
    final = str(train_summary.get("final_source") or "")

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    names = list(folds)
    values = [folds[n] for n in names]
    # The fold the final model came from (named in final_source) is drawn darker.
    colours = [JUDGED_COLOUR if n in final else "#7fa6c9" for n in names]
    bars = ax.bar(names, values, color=colours, width=0.6, zorder=2)
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            value / 2,
            f"{value:.3f}",
            ha="center",
            va="center",
            fontsize=9,
            color="white",
            fontweight="bold",
            zorder=4,
        )
    ax.axhspan(study_low, study_high, color="#f2c14e", alpha=0.45, zorder=3,
               label=f"Du et al. 2026 CV range {study_low:.3f}-{study_high:.3f}")  # fmt: skip
    if mean is not None:
        ax.axhline(mean, color="black", linestyle="--", linewidth=1.2, zorder=5, label=f"this run's CV mean {mean:.3f}")
    ax.set(ylim=(0, 1.05), ylabel="mAP50 (validation fold)", title="Cross-validation: mAP50 per fold")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    handles, _ = ax.get_legend_handles_labels()
    if any(n in final for n in names):
        from matplotlib.patches import Patch

        handles.append(Patch(color=JUDGED_COLOUR, label="the fold the final model came from"))
    ax.legend(handles=handles, fontsize=8, loc="lower left", framealpha=0.95)
    _mark_synthetic(fig, synthetic)
    path = _save(fig, out)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ForestRow:
    """One subgroup as the forest plot draws it; `state` is judged | short (judged, below overall minus the margin:
    the subgroups gate fails on it) | small (too small to judge: greyed, labelled, not judged)."""

    label: str
    point: float | None
    low: float | None
    high: float | None
    state: str


def forest_rows(metrics: dict[str, Any], set_name: str, margin: float) -> tuple[float | None, list[ForestRow]]:
    """The set's overall mAP50 and its subgroup rows (metrics.json order), each labelled and classed as the gate
    reads it: a too-small subgroup is never judged, whatever its figure."""
    result = (metrics.get("sets") or {}).get(set_name) or {}
    rows = [r for r in result.get("subgroups") or [] if r.get("metric") == "map50"]
    overall_row = next((r for r in rows if r.get("subgroup") == "all"), None)
    overall = _number(overall_row.get("point")) if overall_row else None
    out = []
    for row in rows:
        if row.get("subgroup") == "all":
            continue
        point, low, high = (_number(row.get(k)) for k in ("point", "low", "high"))
        label = f"{row.get('subgroup')} = {row.get('value')}\n{row.get('n_patients', '?')} patients"
        if row.get("too_small"):
            state, label = "small", f"{label}, too small to judge"
        elif point is not None and overall is not None and point < overall - margin:
            state = "short"
        else:
            state = "judged"
        out.append(ForestRow(label, point, low, high, state))
    return overall, out


_STATE_COLOURS = {"judged": JUDGED_COLOUR, "short": SHORT_COLOUR, "small": SMALL_COLOUR}


def plot_subgroup_forest(
    metrics: dict[str, Any], set_name: str, margin: float, out: Path, synthetic: bool
) -> Path | None:
    """Forest plot of mAP50 per subgroup with its CI, the overall figure and overall minus the gate's margin.

    Subgroups too small to judge (`too_small` in metrics.json) are greyed, dotted and labelled: the subgroups gate
    does not judge them, and neither should a reader of the plot. A judged subgroup below overall minus `margin` is
    drawn red: the gate fails on it. Returns None, writing nothing, when the set has no subgroup rows.
    """
    overall, rows = forest_rows(metrics, set_name, margin)
    if not rows:
        return None
    level = float((metrics.get("params") or {}).get("ci_level", 0.95)) * 100

    plt = _pyplot()
    height = 1.6 + 0.55 * len(rows)
    fig, ax = plt.subplots(figsize=(7.2, height), dpi=110)
    lows = []
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i  # first row on top
        colour, small = _STATE_COLOURS[row.state], row.state == "small"
        if row.point is None:
            ax.text(0.5, y, "n/a", ha="center", va="center", fontsize=8, color=SMALL_COLOUR)
            continue
        if row.low is not None and row.high is not None:
            ax.plot([row.low, row.high], [y, y], color=colour, linewidth=1.6, linestyle=":" if small else "-")
            lows.append(row.low)
        ax.plot(row.point, y, "o", color=colour, markersize=7, markerfacecolor="white" if small else colour)
        ax.text(row.point, y + 0.22, f"{row.point:.3f}", ha="center", va="bottom", fontsize=7.5, color=colour)
    if overall is not None:
        ax.axvline(overall, color="black", linewidth=1.2, label=f"overall {overall:.3f}")
        ax.axvline(overall - margin, color=SHORT_COLOUR, linestyle="--", linewidth=1.1,
                   label=f"overall minus gate margin {margin:.3f} = {overall - margin:.3f}")  # fmt: skip
        lows.append(overall - margin)
    ax.plot([], [], "o", color=JUDGED_COLOUR, label=f"judged subgroup ({level:g}% CI)")
    ax.plot([], [], "o", color=SMALL_COLOUR, markerfacecolor="white", label="too small to judge (CI unreliable)")
    left = max(0.0, min(lows, default=0.5) - 0.05)
    ax.set(xlim=(left, 1.02), ylim=(-0.8, len(rows) - 0.2), xlabel=f"mAP50 ({level:g}% CI)")
    ax.set_title(f"{set_name.replace('_', ' ')}: mAP50 by subgroup", fontsize=10)
    ys = [len(rows) - 1 - i for i in range(len(rows))]
    ax.set_yticks(ys, [r.label for r in rows], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(_STATE_COLOURS[row.state])
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.55 / (height - 1.0)), ncol=2, frameon=False)
    _mark_synthetic(fig, synthetic)
    path = _save(fig, out)
    plt.close(fig)
    return path
