"""The evaluation report: the study's table side by side with this run, the reader study, subgroups, caveats.

Every figure states its definition where it appears: what is matched, how AP interpolates, how CIs are resampled.
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.evaluate.intervals import CI_METHOD_LABELS
from pipelines.evaluate.scoring import READER_METRICS_NOTE
from pipelines.evaluate.study import COMPARISON_NOTES, STUDY

SYNTHETIC_BANNER = (
    "> **SYNTHETIC DATA.** These figures were measured on cordwatch's synthetic phantom cohort, not on patients. "
    "They show the pipeline works; they are not evidence about any clinical model."
)
READER_MARK = "†"  # next to every reader mAP50: a single operating point's AP is a convention
CEILING_MARK = "‡"  # next to a CI collapsed at its ceiling (1, or 0.995 for mAP50)
MAP_CEILING = 0.995  # ultralytics' 101-point AP of a perfect detector: the closing sentinel halves the last step

CONVENTION_FOOTNOTE = f"{READER_MARK} Reader mAP50: {READER_METRICS_NOTE}"
CEILING_FOOTNOTE = (
    f"{CEILING_MARK} A CI collapsed at the figure's ceiling: 1 for a proportion (precision, recall, sensitivity, "
    f"PPV), {MAP_CEILING} for mAP50 (ultralytics' 101-point interpolation closes the curve at recall 1 with "
    "precision 0, halving the last 0.01 of recall). It means no resample held an error; it does not mean the "
    "uncertainty is zero (with n patients and no error, the rule of three bounds the per-patient error rate below "
    "3/n at 95%)."
)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _collapsed_at_ceiling(item: dict[str, Any]) -> bool:
    point, low, high = item.get("point"), item.get("low"), item.get("high")
    if any(_is_missing(v) for v in (point, low, high)):
        return False
    return point >= MAP_CEILING - 1e-9 and high - low < 1e-9


def _ci(item: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """`point (low-high)`, `n/a` when undefined; collapsed-at-ceiling CIs carry a mark.

    A figure undefined on the sample but defined in some resamples (a matched point the model's curve does not
    reach on this set) says so and how often it is reached: its CI would describe only those resamples.
    """
    if not item or _is_missing(item.get("point")):
        n_valid = item.get("n_valid") if item else None
        if isinstance(n_valid, int) and n_valid > 0:
            return f"n/a: not reached on this set (in {n_valid} resamples)"
        return "n/a"
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    low, high = item.get("low"), item.get("high")
    if _is_missing(low) or _is_missing(high):
        return fmt.format(item["point"])
    mark = CEILING_MARK if _collapsed_at_ceiling(item) else ""
    return f"{fmt.format(item['point'])} ({fmt.format(low)} to {fmt.format(high)}){mark}"


def format_p(item: dict[str, Any] | None) -> str:
    """A P value as a reviewer reads it: `< 0.001` below that, and a bootstrap P at its floor 1/(B+1) (no resample
    on the other side of zero) as `< 0.001` or `<= floor`, never as the floor's own value."""
    if not item or _is_missing(item.get("p_value")):
        return "n/a"
    if "point" in item and _is_missing(item["point"]):
        return "n/a"  # undefined on the sample: a P from the resamples where it is defined would mislead
    p = float(item["p_value"])
    n_valid = item.get("n_valid")
    floor = 1.0 / (n_valid + 1) if isinstance(n_valid, int) and n_valid > 0 and "df" not in item else 0.0
    if p < 0.001 or (floor and p <= floor * (1 + 1e-9) and floor <= 0.001):
        return "< 0.001"
    if floor and p <= floor * (1 + 1e-9):
        return f"<= {floor:.2g}"
    return f"{p:.3f}"


def _mrmc_cell(item: dict[str, Any] | None) -> str:
    if not item or item.get("not_computed"):
        return f"n/a ({item.get('not_computed', 'not computed')})" if item else "n/a"
    return f"{_ci(item, signed=True)}, df {item['df']:.1f}" if not _is_missing(item.get("df")) else _ci(item)


def _method_label(metrics: dict[str, Any], key: str) -> str:
    """How the run's `evaluate.<key>` CIs were computed, in words."""
    return CI_METHOD_LABELS.get(metrics["params"].get(key, "percentile"), "patient bootstrap")


def _headline(metrics: dict[str, Any]) -> list[str]:
    cv = metrics.get("cv", {})
    ext = metrics["sets"].get("external_test", {})
    mid = ext.get("reader_groups", {}).get("mid", {})
    diff = ext.get("model_minus_group", {}).get("mid")
    mrmc = ext.get("mrmc", {}).get("mid")
    points = ext.get("operating_point_comparison", {}).get("group:mid", {})
    study_ext, study_mid = STUDY["external_map50"], STUDY["mid_map50"]
    cv_range = f"{cv['map50_min']:.3f}-{cv['map50_max']:.3f}" if cv else "n/a"
    ppv_gain = points.get("ppv_gain_at_reader_sensitivity")
    sens_gain = points.get("sensitivity_gain_at_reader_ppv")
    return [
        "## The study's table, side by side",
        "",
        "| figure | Du et al. 2026 | this run |",
        "| --- | --- | --- |",
        f"| 5-fold CV mAP50 range | {STUDY['cv_map50_range'][0]:.3f}-{STUDY['cv_map50_range'][1]:.3f} | {cv_range} |",
        f"| external mAP50 (95% CI) | {study_ext[0]:.3f} ({study_ext[1]:.3f} to {study_ext[2]:.3f}) | "
        f"{_ci(ext.get('model', {}).get('map50'))} |",
        f"| mid-level physicians mAP50{READER_MARK} (95% CI) | {study_mid[0]:.3f} ({study_mid[1]:.3f} to "
        f"{study_mid[2]:.3f}) | {_ci(mid.get('map50'))} |",
        f"| model minus mid-level, mAP50: these readers (paired bootstrap) | {study_ext[0] - study_mid[0]:+.3f} | "
        f"{_ci(diff, signed=True)} |",
        f"| P, these readers | {STUDY['p_value']} | {format_p(diff)} |",
        f"| model minus mid-level, mAP50: readers as a sample (MRMC) | not reported | {_mrmc_cell(mrmc)} |",
        f"| P, readers as a sample (MRMC) | not reported | {format_p(mrmc)} |",
        "| **co-primary, like for like:** model PPV minus mid-level PPV at their lesion sensitivity | not reported | "
        f"{_ci(ppv_gain, signed=True)}, P {format_p(ppv_gain)} |",
        "| **co-primary, like for like:** model sensitivity minus mid-level sensitivity at their lesion PPV | "
        f"not reported | {_ci(sens_gain, signed=True)}, P {format_p(sens_gain)} |",
        "",
        f"CIs of a figure: {_method_label(metrics, 'ci_method')}; of a difference and its P value: "
        f"{_method_label(metrics, 'difference_ci_method')} "
        "(benchmarks/ci_coverage.py measured which covers better for each); "
        f"{metrics['params']['bootstrap_resamples']} resamples of whole patients (images of one patient move "
        "together), the same resamples for every source, so each difference is paired. mAP50: boxes matched to the "
        "expert's per image and class at IoU >= 0.5 (greedy by score, COCO / ultralytics), AP by ultralytics' "
        "101-point interpolation, averaged over the classes with a reference in the (re)sample. That interpolation "
        "moves in steps of about 0.005 as a class's last recall crosses its 0.01 grid, so any mAP50 carries about "
        "that much grid error on top of its CI.",
        "",
        f"- *These readers*: {COMPARISON_NOTES['model_minus_group']}",
        f"- *Readers as a sample*: {COMPARISON_NOTES['mrmc']}",
        f"- *Like for like*: {COMPARISON_NOTES['operating_points']}",
        "",
    ]


def _sources_table(result: dict[str, Any]) -> list[str]:
    lines = ["| source | mAP50 | mAP50-95 | precision | recall | lesion sensitivity | lesion PPV |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    sources: dict[str, tuple[dict[str, Any], bool]] = {"model": (result["model"], False)}
    sources.update({f"{g} readers (mean)": (m, True) for g, m in result["reader_groups"].items()})
    sources.update({f"reader {r}": (m, True) for r, m in result["readers"].items()})
    for label, (m, reader) in sources.items():
        cells = [_ci(m.get(k)) for k in ("map50", "map50_95", "precision", "recall", "sensitivity", "ppv")]
        if reader:
            cells[0] += READER_MARK
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _comparison_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| comparison | question it answers | difference (95% CI) | P |",
        "| --- | --- | --- | --- |",
    ]
    for group, diff in result.get("model_minus_group", {}).items():
        lines.append(f"| model minus {group} readers, mAP50{READER_MARK} | these readers | "
                     f"{_ci(diff, signed=True)} | {format_p(diff)} |")  # fmt: skip
        mrmc = result.get("mrmc", {}).get(group)
        lines.append(f"| model minus {group} readers, mAP50{READER_MARK} (MRMC) | readers like these | "
                     f"{_mrmc_cell(mrmc)} | {format_p(mrmc)} |")  # fmt: skip
    return lines


def _threshold(item: dict[str, Any] | None) -> str:
    return "-" if not item or _is_missing(item.get("point")) else f"{item['point']:.3f}"


def _operating_points_table(result: dict[str, Any], operating_conf: float) -> list[str]:
    lines = [
        "| reader | reader sensitivity | reader PPV | model threshold | model PPV at reader's sensitivity | PPV gain "
        "| P | model threshold | model sensitivity at reader's PPV | sensitivity gain | P |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    low_match = False
    for source, f in result.get("operating_point_comparison", {}).items():
        label = f"**{source.split(':', 1)[1]} readers (mean)**" if source.startswith("group:") else source
        ppv_gain, sens_gain = f.get("ppv_gain_at_reader_sensitivity"), f.get("sensitivity_gain_at_reader_ppv")
        # A group's mean threshold means nothing (each reader is matched on the model's curve separately).
        group = source.startswith("group:")
        at_sens = None if group else f.get("model_conf_at_reader_sensitivity")
        at_ppv = None if group else f.get("model_conf_at_reader_ppv")
        for item in (at_sens, at_ppv):
            if item and not _is_missing(item.get("point")) and item["point"] < operating_conf / 10:
                low_match = True
        lines.append(
            f"| {label} | {_ci(f.get('reader_sensitivity'))} | {_ci(f.get('reader_ppv'))} | {_threshold(at_sens)} | "
            f"{_ci(f.get('model_ppv_at_reader_sensitivity'))} | {_ci(ppv_gain, signed=True)} | {format_p(ppv_gain)} | "
            f"{_threshold(at_ppv)} | {_ci(f.get('model_sensitivity_at_reader_ppv'))} | {_ci(sens_gain, signed=True)} | "
            f"{format_p(sens_gain)} |"
        )
    if low_match:
        lines += [
            "",
            f"A model threshold far below its operating confidence ({operating_conf:g}) means the model reaches that "
            "point only among its low-confidence boxes: small changes in the patients then move the match across a "
            "cliff in PPV, the bootstrap distribution is bimodal, and that gain's CI and P are unstable; the other "
            "side of the comparison, read where the model is confident, is the one to read.",
        ]
    return lines


def _subgroup_table(result: dict[str, Any], params: dict[str, Any]) -> list[str]:
    rows = [s for s in result["subgroups"] if s["metric"] == "map50" and s["subgroup"] != "all"]
    if not rows:
        return []
    lines = [
        f"Subgroups (mAP50): {len(rows)} comparisons with the overall figure, one per subgroup value, each at 95% "
        f"without a multiplicity correction (about {0.05 * len(rows):.1f} would fall outside by chance alone): read "
        "them as descriptive. A subgroup is flagged when it has fewer than "
        f"{params.get('min_subgroup_patients', '?')} patients or fewer than "
        f"{params.get('min_subgroup_class_patients', '?')} patients holding a reference of a class mAP50 averages; "
        "its CI is then shown but unreliable.",
        "",
        "| subgroup | value | patients | patients with compression | mAP50 (95% CI) | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in rows:
        ci = _ci(s)
        note = ""
        if s["too_small"]:
            ci = f"*{ci}, unreliable*"
            note = f"too small: {s['reason']}"
        with_compression = s.get("n_patients_compression", "?")
        lines.append(f"| {s['subgroup']} | {s['value']} | {s['n_patients']} | {with_compression} | {ci} | {note} |")
    return lines


def render_markdown(metrics: dict[str, Any], synthetic: bool) -> str:
    """Markdown report from the metrics.json content."""
    lines = ["# cordwatch evaluation", ""]
    if synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    lines += _headline(metrics)
    for name, result in metrics["sets"].items():
        lines += [f"## {name.replace('_', ' ')}: {result['n_patients']} patients, {result['n_images']} images", ""]
        lines += [*_sources_table(result), ""]
        if result.get("model_minus_group"):
            lines += [f"### {name.replace('_', ' ')}: model against the readers", ""]
            lines += [*_comparison_table(result), ""]
            lines += ["Like for like, at each reader's own lesion-level operating point (compression boxes):", ""]
            lines += [*_operating_points_table(result, metrics["params"].get("operating_conf", 0.25)), ""]
        lines += _subgroup_table(result, metrics["params"])
        lines.append("")
    lines += ["## Notes", "", CONVENTION_FOOTNOTE, "", CEILING_FOOTNOTE, ""]
    lines += [
        "## Caveats",
        "",
        "- Other scanners, field strengths, sites and populations are untested beyond the subgroups above.",
        "- Deployment needs PACS integration, governance sign-off and prospective evaluation (monitoring flow).",
    ]
    return "\n".join(lines) + "\n"
