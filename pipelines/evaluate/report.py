"""The evaluation report: the study's table side by side with this run, reader study, subgroups, caveats."""

from __future__ import annotations

import math
from typing import Any

from pipelines.evaluate.scoring import READER_METRICS_NOTE
from pipelines.evaluate.study import STUDY

SYNTHETIC_BANNER = (
    "> **SYNTHETIC DATA.** These figures were measured on cordwatch's synthetic phantom cohort, not on patients. "
    "They show the pipeline works; they are not evidence about any clinical model."
)


def _ci(item: dict[str, Any] | None, digits: int = 3) -> str:
    if not item or item.get("point") is None or (isinstance(item["point"], float) and math.isnan(item["point"])):
        return "n/a"
    low, high = item.get("low"), item.get("high")
    if low is None or high is None:
        return f"{item['point']:.{digits}f}"
    return f"{item['point']:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def render_markdown(metrics: dict[str, Any], synthetic: bool) -> str:
    """Markdown report from the metrics.json content."""
    cv = metrics.get("cv", {})
    ext = metrics["sets"].get("external_test", {})
    mid = ext.get("reader_groups", {}).get("mid", {})
    diff = ext.get("model_minus_group", {}).get("mid", {})
    lines = ["# cordwatch evaluation", ""]
    if synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    study_ext, study_mid = STUDY["external_map50"], STUDY["mid_map50"]
    cv_range = f"{cv['map50_min']:.3f}-{cv['map50_max']:.3f}" if cv else "n/a"
    p_value = diff.get("p_value")
    lines += [
        "## The study's table, side by side",
        "",
        "| figure | Du et al. 2026 | this run |",
        "| --- | --- | --- |",
        f"| 5-fold CV mAP50 range | {STUDY['cv_map50_range'][0]:.3f}-{STUDY['cv_map50_range'][1]:.3f} | {cv_range} |",
        f"| external mAP50 (95% CI) | {study_ext[0]:.3f} ({study_ext[1]:.3f}-{study_ext[2]:.3f}) | "
        f"{_ci(ext.get('model', {}).get('map50'))} |",
        f"| mid-level physicians mAP50 (95% CI) | {study_mid[0]:.3f} ({study_mid[1]:.3f}-{study_mid[2]:.3f}) | "
        f"{_ci(mid.get('map50'))} |",
        f"| model minus mid-level, mAP50 (95% CI) | {study_ext[0] - study_mid[0]:+.3f} | {_ci(diff)} |",
        f"| P | {STUDY['p_value']} | {'n/a' if p_value is None else f'{p_value:.4f}'} |",
        "",
        "CIs: percentile bootstrap over patients (images of one patient move together), "
        f"{metrics['params']['bootstrap_resamples']} resamples; the model-reader difference is paired (the same "
        "resample for both).",
        "",
    ]
    for name, result in metrics["sets"].items():
        lines += [f"## {name.replace('_', ' ')}: {result['n_patients']} patients, {result['n_images']} images", ""]
        lines += ["| source | mAP50 | mAP50-95 | precision | recall | lesion sensitivity | lesion PPV |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        sources = {"model": result["model"], **{f"{g} readers (mean)": m for g, m in result["reader_groups"].items()}}
        sources.update({f"reader {r}": m for r, m in result["readers"].items()})
        for label, m in sources.items():
            cells = [_ci(m.get(k)) for k in ("map50", "map50_95", "precision", "recall", "sensitivity", "ppv")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"Why two reader comparisons: {READER_METRICS_NOTE}", ""]
        small = [s for s in result["subgroups"] if s["metric"] == "map50" and s["subgroup"] != "all"]
        if small:
            lines += ["Subgroups (mAP50):", "", "| subgroup | value | patients | mAP50 (95% CI) | note |"]
            lines += ["| --- | --- | --- | --- | --- |"]
            for s in small:
                note = f"too small: {s['reason']}" if s["too_small"] else ""
                lines.append(f"| {s['subgroup']} | {s['value']} | {s['n_patients']} | {_ci(s)} | {note} |")
            lines.append("")
    lines += [
        "## Caveats",
        "",
        "- Other scanners, field strengths, sites and populations are untested beyond the subgroups above.",
        "- Deployment needs PACS integration, governance sign-off and prospective evaluation (monitoring flow).",
    ]
    return "\n".join(lines) + "\n"
