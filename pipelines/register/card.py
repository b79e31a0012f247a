"""The governance model card of a model version: what a reviewer reads to approve or reject it in the MLflow UI.

Rendered from files the pipeline already wrote (evaluate's metrics.json and PR curves, train's summary, the ingested
tables, the validation Data Docs) and the gate outcomes: every figure is formatted from those inputs with evaluate's
report helpers, never recomputed, so the card, the report and the registry tags cannot disagree.

Writes `model_card.md`, the same content as a self-contained `model_card.html` (inline CSS, plots as base64 data
URIs: it renders offline in MLflow's artifact viewer), `plots/*.png` and, when Data Docs are given, a copy of them
under `data_validation/` (the card links `data_validation/index.html`). Log the whole folder as one artifact folder.
"""

from __future__ import annotations

import base64
import html
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markdown
import pandas as pd

from pipelines.contracts import EXTERNAL_TEST, INTERNAL_TEST, READER_LEVELS, SPLITS
from pipelines.evaluate.report import (
    CEILING_FOOTNOTE,
    CONVENTION_FOOTNOTE,
    READER_MARK,
    SYNTHETIC_BANNER,
    _ci,
    _is_missing,
    _method_label,
    _mrmc_cell,
    _subgroup_table,
    format_p,
)
from pipelines.evaluate.study import COMPARISON_NOTES, READER_GROUPS, STUDY
from pipelines.labels import reference_boxes
from pipelines.register.gates import GateOutcome
from pipelines.register.params import GateParams
from pipelines.register.plots import plot_fold_bars, plot_subgroup_forest

CARD_MARKDOWN = "model_card.md"
CARD_HTML = "model_card.html"
PLOTS_DIR = "plots"
VALIDATION_DOCS_DIR = "data_validation"  # artifact folder of the Data Docs, next to the card
FOLD_PLOT = "cv_folds_map50.png"
CARD_SETS: tuple[str, ...] = (EXTERNAL_TEST, INTERNAL_TEST)  # the external set is the study's and the gates' figure
SET_LABELS = {EXTERNAL_TEST: "external test", INTERNAL_TEST: "internal test", "cv": "cross-validation"}
MODEL_FIGURES: tuple[tuple[str, str], ...] = (
    ("map50", "mAP50"),
    ("map50_95", "mAP50-95"),
    ("precision", "precision"),
    ("recall", "recall"),
)
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "split", "patients", "patients_with_compression", "images", "sites", "manufacturers", "scanner_models",
    "field_strengths", "planes", "study_years",
)  # fmt: skip
# provenance column -> images.parquet column whose values it counts (patients per value)
_COUNTED = {
    "sites": "site",
    "manufacturers": "manufacturer",
    "scanner_models": "model",
    "field_strengths": "field_strength",
    "planes": "plane",
}

INTENDED_USE = [
    "## Intended use",
    "",
    "- **What it does:** finds and labels intervertebral levels on a **sagittal T2-weighted cervical spine MRI** "
    "image as *normal* or *compression* (spinal cord compression), with a box and a confidence for each.",
    "- **For whom:** radiologists and spine clinicians who read the study themselves.",
    "- **How it is meant to be used:** triage (bring studies with a possible compression forward in the reading "
    "list) and a safety net (point the reader at a level they may have missed). The reader decides; the model "
    "flags.",
    "- **It is not** a diagnosis and does not replace clinical assessment: a missing box does not rule out "
    "compression, and a box does not confirm it.",
    "",
    "### Out of scope (do not use for)",
    "",
    "- diagnosis or reporting without a radiologist reading the images;",
    "- axial or coronal images, and sequences other than sagittal T2 (T1, STIR, contrast-enhanced, CT, radiographs);",
    "- thoracic or lumbar spine;",
    "- children and adolescents;",
    "- acute trauma, fractures, tumours, infection;",
    "- post-operative spines (fixation hardware, laminectomy);",
    "- grading severity or deciding on surgery (the model draws boxes; it does not grade).",
    "",
]


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows, read by the caller from the pipeline's files; the card computes no figure."""

    model_name: str
    version: str | None  # registry version, None if rendered before registration
    metrics: dict[str, Any]  # metrics.json content
    train_summary: dict[str, Any] | None  # reports/train/summary.json content
    provenance: pd.DataFrame  # from data_provenance(...)
    readers: dict[str, Any]  # from reader_protocol(...)
    gates: Sequence[GateOutcome]
    gate_params: GateParams
    lineage: Mapping[str, str]  # e.g. git commit, DVC data hash, params hash, training run, evaluation run
    evaluation_dir: Path  # where evaluate's pr_<set>_<class>.png are
    validation_docs: Path | None  # folder with the Data Docs' index.html (copied next to the card, linked)
    synthetic: bool


@dataclass(frozen=True)
class CardFiles:
    """What render_card wrote, all under its out_dir: log out_dir as one artifact folder so the links hold."""

    out_dir: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    validation_docs: Path | None  # out_dir/data_validation, None when no Data Docs were given

    @property
    def files(self) -> tuple[Path, ...]:
        """The card's own files (the Data Docs folder aside)."""
        return (self.markdown, self.html, *self.plots)


# --- inputs the caller builds from the ingested tables ---------------------------------------------------------


def _value_label(column: str, value: Any) -> str:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return "unknown"
    if column == "field_strength":
        try:
            return f"{float(value):g} T"
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _patients_per_value(rows: pd.DataFrame, column: str) -> dict[str, int]:
    """Distinct patients per value of `column` (a patient scanned on two scanners counts under both)."""
    if column not in rows.columns or rows.empty:
        return {}
    labels = rows[column].map(lambda v: _value_label(column, v))
    counts = rows.assign(_value=labels).groupby("_value")["patient_key"].nunique()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _provenance_row(split: str, rows: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = {"split": split, "patients": int(rows["patient_key"].nunique()), "images": len(rows)}
    if "has_compression" in rows.columns:
        row["patients_with_compression"] = int(rows.loc[rows["has_compression"].astype(bool), "patient_key"].nunique())
    else:
        row["patients_with_compression"] = None
    for name, column in _COUNTED.items():
        row[name] = _patients_per_value(rows, column)
    years = pd.to_numeric(rows.get("study_year", pd.Series(dtype=float)), errors="coerce").dropna()
    first, last = (int(years.min()), int(years.max())) if not years.empty else (None, None)
    row["study_years"] = None if first is None else (str(first) if first == last else f"{first}-{last}")
    return row


def data_provenance(images: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Per split (cross-validation, internal test, external test) and in total: patients, patients with
    compression, images, and the patients per site, manufacturer, scanner model, field strength and plane.

    What the data hold is what the model has been tested on: the card lists it and calls everything else untested.
    Count columns hold dicts {value: patients}; only images that are in the splits table count.
    """
    keep = [c for c in ("image_id", "split", "has_compression") if c in splits.columns]
    table = images.merge(splits[keep], on="image_id", how="inner", validate="one_to_one")
    order = [s for s in SPLITS if s in set(table["split"])] + sorted(set(table["split"]) - set(SPLITS))
    rows = [_provenance_row(s, table[table["split"] == s]) for s in order]
    rows.append(_provenance_row("all", table))
    return pd.DataFrame(rows, columns=list(PROVENANCE_COLUMNS))


def reader_protocol(annotations: pd.DataFrame, reference_level: str) -> dict[str, Any]:
    """The annotation protocol as the data show it: the reference standard (level, readers, its boxes per class),
    and per reader level its readers, images and patients read, and boxes per class.

    The reference is one reader of `reference_level` per image (`pipelines.labels.reference_boxes`, the same rule
    evaluate scores against); the other levels are the reader groups the model is compared with.
    """
    levels_present = list(dict.fromkeys(annotations["reader_level"].astype(str)))
    ordered = [lv for lv in READER_LEVELS if lv in levels_present] + sorted(set(levels_present) - set(READER_LEVELS))
    levels: dict[str, Any] = {}
    for level in ordered:
        rows = annotations[annotations["reader_level"] == level]
        levels[level] = {
            "readers": sorted(rows["reader_id"].astype(str).unique()),
            "images": int(rows["image_id"].nunique()),
            "patients": int(rows["patient_key"].nunique()) if "patient_key" in rows.columns else None,
            "boxes": {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()},
        }
    ref = reference_boxes(annotations, reference_level)
    return {
        "reference_level": reference_level,
        "reference_readers": sorted(ref["reader_id"].astype(str).unique()),  # whose boxes the reference holds
        "reference_images": int(ref["image_id"].nunique()),
        "reference_boxes": {str(k): int(v) for k, v in ref["label"].value_counts().sort_index().items()},
        "reference_rule": "one reader of the reference level per image (the first by reader id when several read it)",
        "compared_groups": [g for g in READER_GROUPS if g in levels and g != reference_level],
        "levels": levels,
        "n_images": int(annotations["image_id"].nunique()),
        "n_patients": int(annotations["patient_key"].nunique()) if "patient_key" in annotations.columns else None,
    }


# --- markdown -----------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Input text as markdown table-cell text: `|` escaped, and `<` that would open an HTML tag made literal."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(value)).replace("|", "\\|").replace("\n", " ")


def _counts(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "not recorded"
    return ", ".join(f"{_text(k)} ({v})" for k, v in counts.items())


def _set_result(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    return (metrics.get("sets") or {}).get(name)


def _ci_label(metrics: dict[str, Any]) -> str:
    level = (metrics.get("params") or {}).get("ci_level", 0.95)
    return f"{float(level) * 100:g}% CI"


def _title(inputs: CardInputs) -> list[str]:
    version = f"version {_text(inputs.version)}" if inputs.version else "(not yet registered)"
    lines = [f"# Model card: {_text(inputs.model_name)} {version}", ""]
    if inputs.synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    return lines


def _gate_counts(gates: Sequence[GateOutcome]) -> str:
    statuses = [g.status for g in gates]
    return ", ".join(f"{statuses.count(s)} {s}" for s in ("pass", "warn", "fail"))


def _at_a_glance(inputs: CardInputs) -> list[str]:
    """The few lines a board member reads first; every one points to the section holding the detail."""
    metrics = inputs.metrics
    lines = ["## At a glance", ""]
    if inputs.gates:
        failed = [g.name for g in inputs.gates if g.status == "fail"]
        verdict = f"**failed: {', '.join(failed)}**" if failed else "none failed"
        lines.append(f"- **Registration gates:** {_gate_counts(inputs.gates)}; {verdict} (see *Registration gates*).")
    else:
        lines.append("- **Registration gates:** none were evaluated.")
    ext = _set_result(metrics, EXTERNAL_TEST)
    if ext:
        study = STUDY["external_map50"]
        lines.append(
            f"- **External test mAP50** ({ext['n_patients']} patients from a centre not used in training): "
            f"{_ci((ext.get('model') or {}).get('map50'))}; the study reported {study[0]:.3f} ({study[1]:.3f} to "
            f"{study[2]:.3f})."
        )
        diff = (ext.get("model_minus_group") or {}).get("mid")
        if diff:
            lines.append(
                f"- **Model minus mid-level physicians, mAP50{READER_MARK}** (these readers, paired): "
                f"{_ci(diff, signed=True)}, P {format_p(diff)}; the study reported model better, P {STUDY['p_value']}."
            )
    else:
        lines.append("- **External test:** not evaluated: the study's headline figure is missing.")
    cv = (inputs.train_summary or {}).get("cv") or inputs.metrics.get("cv") or {}
    if "map50_min" in cv and "map50_max" in cv:
        low, high = STUDY["cv_map50_range"]
        lines.append(
            f"- **Cross-validation mAP50** (development centre, range over folds): "
            f"{cv['map50_min']:.3f}-{cv['map50_max']:.3f}; "
            f"the study reported {low:.3f}-{high:.3f}."
        )
    data = "synthetic phantoms (not patients)" if inputs.synthetic else "patient images"
    lines += [f"- **Data:** {data}; see *Data provenance*.", ""]
    return lines


def _limitations(inputs: CardInputs) -> list[str]:
    prov = inputs.provenance
    total = prov[prov["split"] == "all"].iloc[0] if (prov["split"] == "all").any() else None
    lines = ["## Limitations: what this card does not show", ""]
    if inputs.synthetic:
        lines.append(
            "- **Every figure comes from synthetic phantoms.** It shows the pipeline runs end to end; it says nothing "
            "about how the model performs on patients."
        )
    if total is not None:
        lines += [
            "- **Tested only on what the data hold** (patients per value):",
            f"    - sites: {_counts(total['sites'])};",
            f"    - manufacturers: {_counts(total['manufacturers'])};",
            f"    - scanner models: {_counts(total['scanner_models'])};",
            f"    - field strengths: {_counts(total['field_strengths'])};",
            f"    - planes: {_counts(total['planes'])};",
            f"    - study years: {total['study_years'] or 'not recorded'}.",
            "- **Untested:** any other site, manufacturer, scanner model, field strength, protocol or population. "
            "Age, sex and ethnicity are not recorded in the ingested data, so performance by them is unknown.",
        ]
    lines.append(
        "- **No prospective performance yet:** every figure is retrospective, on stored images. Performance in "
        "clinical use needs prospective evaluation (the monitoring flow) before and after deployment."
    )
    ref = inputs.readers
    ref_readers = ref.get("reference_readers") or []
    if ref_readers:
        who = f"{len(ref_readers)} {_text(ref['reference_level'])} reader{'s' if len(ref_readers) > 1 else ''}"
        lines.append(
            f"- **The reference standard is the reads of {who}** ({_text(', '.join(ref_readers))}, one per image): "
            "disagreement between experts is not captured, and the model is scored against these reads, not "
            "against surgery or outcome."
        )
    ext = _set_result(inputs.metrics, EXTERNAL_TEST)
    if ext:
        small = [r for r in ext.get("subgroups") or [] if r.get("metric") == "map50" and r.get("too_small")]
        if small:
            listed = "; ".join(f"{_text(r['subgroup'])} = {_text(r['value'])}" for r in small)
            lines.append(
                f"- **Subgroups too small to judge on the external test set:** {listed}. Their figures are shown "
                "but say little."
            )
    lines.append(
        f"- **Reader mAP50 is a convention**{READER_MARK}: readers give no confidence, so a reader is one operating "
        "point, not a curve (see *Notes*); the like-for-like comparison at the readers' operating points is the fairer "
        "one."
    )
    return [*lines, ""]


def _provenance(inputs: CardInputs) -> list[str]:
    lines = [
        "## Data provenance",
        "",
        "Patients are split whole: all images of a patient are in one split. The external test set is a centre the "
        "model never saw in training. Counts in brackets are patients.",
        "",
        "| split | patients | with compression | images | sites | manufacturers | scanner models | field strengths "
        "| study years |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in inputs.provenance.to_dict("records"):
        label = SET_LABELS.get(row["split"], _text(row["split"]))
        label = "**all**" if row["split"] == "all" else label
        compression = "-" if row["patients_with_compression"] is None else row["patients_with_compression"]
        lines.append(
            f"| {label} | {row['patients']} | {compression} | {row['images']} | {_counts(row['sites'])} | "
            f"{_counts(row['manufacturers'])} | {_counts(row['scanner_models'])} | "
            f"{_counts(row['field_strengths'])} | {row['study_years'] or '-'} |"
        )
    return [*lines, ""]


def _reader_section(readers: dict[str, Any]) -> list[str]:
    level = readers.get("reference_level", "?")
    groups = _text(", ".join(readers.get("compared_groups") or [])) or "none"
    reference = _text(", ".join(readers.get("reference_readers") or [])) or "none"
    ref_boxes = ", ".join(f"{_text(k)} {v}" for k, v in (readers.get("reference_boxes") or {}).items()) or "no"
    lines = [
        "## Annotation protocol and readers",
        "",
        f"- **Reference standard:** the {_text(level)} level (readers: {reference}); "
        f"{readers.get('reference_rule', '')}. It covers {readers.get('reference_images', 0)} images with "
        f"{ref_boxes} boxes. The model is trained and scored against these boxes.",
        f"- **Reader groups compared with the model:** {groups}. Their boxes on the test images are scored against "
        "the same reference as the model's.",
        "",
        "| reader level | readers | images read | patients | boxes per class |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, lv in (readers.get("levels") or {}).items():
        role = " (reference)" if name == level else ""
        boxes = ", ".join(f"{_text(k)} {v}" for k, v in lv["boxes"].items()) or "none"
        patients = "-" if lv.get("patients") is None else lv["patients"]
        lines.append(
            f"| {_text(name)}{role} | {len(lv['readers'])}: {_text(', '.join(lv['readers']))} | {lv['images']} | "
            f"{patients} | {boxes} |"
        )
    return [*lines, ""]


def _definitions(metrics: dict[str, Any]) -> list[str]:
    params = metrics.get("params") or {}
    resamples = params.get("bootstrap_resamples", "?")
    return [
        "## Results",
        "",
        "**How to read the figures.**",
        "",
        "- **mAP50:** average precision at IoU 0.50 (a box counts when it overlaps the reference box of the same class "
        "by at least half), averaged over the classes (normal, compression); AP by ultralytics' 101-point "
        "interpolation. 1 is perfect; a perfect detector scores 0.995 under that interpolation.",
        "- **mAP50-95:** the same, averaged over IoU 0.50 to 0.95 in steps of 0.05: how tight the boxes are.",
        f"- **precision / recall:** at the operating confidence {params.get('operating_conf', '?')}, averaged over the "
        "classes: of the boxes drawn, the share that are right; of the reference boxes, the share found.",
        f"- **{_ci_label(metrics)}:** patient-level bootstrap, {resamples} resamples of whole patients (all images of "
        f"a patient move together); a figure's CI: {_method_label(metrics, 'ci_method')}; a difference's CI and P: "
        f"{_method_label(metrics, 'difference_ci_method')}.",
        "",
    ]


def _cv_section(inputs: CardInputs, fold_plot: Path | None) -> list[str]:
    summary = inputs.train_summary
    folds = (summary or {}).get("folds") or {}
    lines = [f"### Cross-validation (development data{f', {len(folds)} folds of patients' if folds else ''})", ""]
    cv = (summary or {}).get("cv") or {}
    study_low, study_high = STUDY["cv_map50_range"]
    if not summary or not folds:
        lines.append(
            "**No training summary was given: per-fold cross-validation figures are not shown**, and there is no "
            "fold plot."
        )
        run_cv = inputs.metrics.get("cv") or {}
        if "map50_min" in run_cv and "map50_max" in run_cv:
            lines.append(
                f"Evaluation recorded a CV mAP50 range of {run_cv['map50_min']:.3f}-{run_cv['map50_max']:.3f} "
                f"(the study: {study_low:.3f}-{study_high:.3f})."
            )
        return [*lines, ""]
    lines += [
        "Each fold's model is scored on the patients held out of its training. The range shows how much the result "
        "depends on which patients were held out.",
        "",
        "| fold | mAP50 | mAP50-95 | precision | recall |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, f in sorted(folds.items()):
        cells = [_plain(f.get(k)) for k, _ in MODEL_FIGURES]
        lines.append(f"| {_text(name)} | " + " | ".join(cells) + " |")
    if cv:
        mean = [_plain(cv.get(f"{k}_mean")) for k, _ in MODEL_FIGURES]
        sd = [_plain(cv.get(f"{k}_sd")) for k, _ in MODEL_FIGURES]
        rng = [f"{_plain(cv.get(f'{k}_min'))}-{_plain(cv.get(f'{k}_max'))}" for k, _ in MODEL_FIGURES]
        lines += [
            "| **mean** | " + " | ".join(mean) + " |",
            "| SD | " + " | ".join(sd) + " |",
            "| range | " + " | ".join(rng) + " |",
        ]
    low = cv.get("study_map50_min", study_low)
    high = cv.get("study_map50_max", study_high)
    lines += [
        f"| *Du et al. 2026* | *{low:.3f}-{high:.3f}* | not quoted | not quoted | not quoted |",
        "",
    ]
    if summary.get("final_source"):
        lines += [f"This version's weights: {_text(summary['final_source'])}.", ""]
    if fold_plot is not None:
        lines += [f"![Cross-validation mAP50 per fold]({PLOTS_DIR}/{fold_plot.name})", ""]
    return lines


def _plain(value: Any) -> str:
    return "n/a" if _is_missing(value) else f"{float(value):.3f}"


def _test_sets(inputs: CardInputs, pr_plots: Sequence[Path]) -> list[str]:
    metrics = inputs.metrics
    ci = _ci_label(metrics)
    header = " | ".join(f"{label} ({ci})" for _, label in MODEL_FIGURES)
    lines = [
        "### Held-out test sets",
        "",
        "The **external** test set (another centre, never used in training or model selection) is the study's "
        "headline figure and the one the gates judge; the internal test set is held-out patients of the development "
        "centre.",
        "",
        f"| test set | patients | images | {header} |",
        "| --- | --- | --- | " + " | ".join("---" for _ in MODEL_FIGURES) + " |",
    ]
    for name in CARD_SETS:
        result = _set_result(metrics, name)
        if result is None:
            lines.append(f"| {SET_LABELS[name]} | not evaluated | | " + " | ".join("" for _ in MODEL_FIGURES) + " |")
            continue
        cells = [_ci((result.get("model") or {}).get(k)) for k, _ in MODEL_FIGURES]
        lines.append(
            f"| {SET_LABELS[name]} | {result['n_patients']} | {result['n_images']} | " + " | ".join(cells) + " |"
        )
    ext = STUDY["external_map50"]
    lines += [
        f"| *Du et al. 2026, external* | | | *{ext[0]:.3f} ({ext[1]:.3f} to {ext[2]:.3f})* | not quoted | not quoted "
        "| not quoted |",
        "",
    ]
    if pr_plots:
        lines += [
            "Precision-recall curves on the external test set: the model's curve (each point a confidence threshold) "
            "and each reader as a single point.",
            "",
            *[f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in pr_plots],
            "",
        ]
    return lines


def _reader_study(metrics: dict[str, Any]) -> list[str]:
    ext = _set_result(metrics, EXTERNAL_TEST)
    if not ext or not ext.get("reader_groups"):
        return ["### Reader study", "", "No reader figures on the external test set.", ""]
    groups = [g for g in READER_GROUPS if g in ext["reader_groups"]] + sorted(
        set(ext["reader_groups"]) - set(READER_GROUPS)
    )
    study_ext, study_mid = STUDY["external_map50"], STUDY["mid_map50"]
    quoted = {"mid": study_mid}
    ci = _ci_label(metrics)

    def study(value: tuple[float, float, float] | None) -> str:
        return "not quoted" if value is None else f"{value[0]:.3f} ({value[1]:.3f} to {value[2]:.3f})"

    lines = [
        f"### Reader study (external test set, {ext['n_patients']} patients): the model against physicians",
        "",
        "Physicians of each group read the same images the model is scored on. *Model minus group* above zero means "
        "the model scored higher.",
        "",
        f"| figure | Du et al. 2026 | this model ({ci}) |",
        "| --- | --- | --- |",
        f"| model mAP50 | {study(study_ext)} | {_ci((ext.get('model') or {}).get('map50'))} |",
    ]
    for g in groups:
        lines.append(
            f"| {_text(g)} readers mAP50{READER_MARK} (mean of {_reader_count(ext, g)}) | {study(quoted.get(g))} | "
            f"{_ci(ext['reader_groups'][g].get('map50'))} |"
        )
    for g in groups:
        diff = (ext.get("model_minus_group") or {}).get(g)
        mrmc = (ext.get("mrmc") or {}).get(g)
        study_diff = f"{study_ext[0] - study_mid[0]:+.3f}, P {STUDY['p_value']}" if g == "mid" else "not quoted"
        lines += [
            f"| model minus {_text(g)} readers, mAP50{READER_MARK}: these readers (paired bootstrap) | {study_diff} | "
            f"{_ci(diff, signed=True)}, P {format_p(diff)} |",
            f"| model minus {_text(g)} readers, mAP50{READER_MARK}: readers like these (MRMC) | not reported | "
            f"{_mrmc_cell(mrmc)}, P {format_p(mrmc)} |",
        ]
    lines += [
        "",
        f"- *These readers:* {COMPARISON_NOTES['model_minus_group']}",
        f"- *Readers like these (MRMC):* {COMPARISON_NOTES['mrmc']}",
        "",
    ]
    return lines + _operating_points(ext, groups)


def _reader_count(result: dict[str, Any], group: str) -> int:
    return sum(1 for level in (result.get("reader_levels") or {}).values() if level == group)


def _operating_points(result: dict[str, Any], groups: Sequence[str]) -> list[str]:
    rows = [(g, (result.get("operating_point_comparison") or {}).get(f"group:{g}")) for g in groups]
    rows = [(g, f) for g, f in rows if f]
    if not rows:
        return []
    lines = [
        "#### Like for like: the model at each reader group's own operating point (compression)",
        "",
        "A reader is one point (sensitivity, PPV). The model is read off its curve at that point: its PPV where its "
        "sensitivity reaches the readers', and its sensitivity where its PPV still reaches theirs. Gains are model "
        "minus readers (group mean over its readers); a negative gain means the model does worse at that point. "
        "Per-reader rows are in the evaluation report.",
        "",
        "| readers | their sensitivity | their PPV | model PPV at their sensitivity | PPV gain, P "
        "| model sensitivity at their PPV | sensitivity gain, P |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for g, f in rows:
        ppv_gain, sens_gain = f.get("ppv_gain_at_reader_sensitivity"), f.get("sensitivity_gain_at_reader_ppv")
        lines.append(
            f"| {_text(g)} (mean) | {_ci(f.get('reader_sensitivity'))} | {_ci(f.get('reader_ppv'))} | "
            f"{_ci(f.get('model_ppv_at_reader_sensitivity'))} | {_ci(ppv_gain, signed=True)}, P {format_p(ppv_gain)} "
            f"| {_ci(f.get('model_sensitivity_at_reader_ppv'))} | {_ci(sens_gain, signed=True)}, "
            f"P {format_p(sens_gain)} |"
        )
    lines += [
        "",
        "*n/a: not reached on this set* means the model's curve never reaches the readers' sensitivity at any "
        "threshold on these patients: the model cannot match them there.",
        "",
    ]
    return lines


def _subgroups(inputs: CardInputs, forests: Mapping[str, Path]) -> list[str]:
    metrics, margin = inputs.metrics, inputs.gate_params.max_subgroup_shortfall
    lines = [
        "### Subgroups",
        "",
        f"The subgroups gate fails when a subgroup large enough to judge scores more than {margin:.3f} mAP50 below "
        "the external set's overall figure (the dashed line in the plot). Subgroups too small to judge are greyed "
        "and labelled.",
        "",
    ]
    for name in CARD_SETS:
        result = _set_result(metrics, name)
        if not result:
            continue
        table = _subgroup_table(result, metrics.get("params") or {})
        if not table:
            continue
        lines += [f"#### {SET_LABELS[name]}", "", *table, ""]
        if name in forests:
            lines += [f"![{SET_LABELS[name]} mAP50 by subgroup]({PLOTS_DIR}/{forests[name].name})", ""]
    return lines


def _gates(inputs: CardInputs) -> list[str]:
    p = inputs.gate_params
    lines = [
        "## Registration gates",
        "",
        "Automatic checks before a version may be promoted; a reviewer still decides. *warn* records a concern that "
        "does not block.",
        "",
        f"Thresholds: external mAP50 95% CI lower bound at least {p.min_external_map50_lower:.3f}; no judged subgroup "
        f"more than {p.max_subgroup_shortfall:.3f} below overall; non-inferiority margin to the champion "
        f"{p.noninferiority_margin:.3f}; uncommitted changes at training: {p.dirty_tree}.",
        "",
    ]
    if not inputs.gates:
        return [*lines, "No gate was evaluated.", ""]
    lines += ["| gate | status | reason |", "| --- | --- | --- |"]
    for g in inputs.gates:
        status = {"pass": "pass", "warn": "**WARN**", "fail": "**FAIL**"}[g.status]
        lines.append(f"| {_text(g.name)} | {status} | {_text(g.reason)} |")
    return [*lines, ""]


def _lineage_value(value: str | None) -> str:
    """An identifier (hash, run id) in code type, to copy exactly; words (e.g. `unknown`) as text."""
    if not value:
        return "not recorded"
    return _text(value) if re.search(r"\s", value) or "`" in value else f"`{_text(value)}`"


def _lineage(inputs: CardInputs, docs_linked: bool) -> list[str]:
    lines = [
        "## Lineage",
        "",
        "Where this version came from: enough to rebuild it and to find every input.",
        "",
        "| item | value |",
        "| --- | --- |",
    ]
    lines += [f"| {_text(k)} | {_lineage_value(v)} |" for k, v in inputs.lineage.items()]
    lines += ["", "## Data validation", ""]
    if docs_linked:
        lines.append(
            f"The data contracts' full report (Great Expectations Data Docs) is attached next to this card: "
            f"[{VALIDATION_DOCS_DIR}/index.html]({VALIDATION_DOCS_DIR}/index.html) (artifact folder "
            f"`{VALIDATION_DOCS_DIR}/`). The *data_contracts* gate above says whether it passed on the training data."
        )
    else:
        lines.append("**No Data Docs were attached to this card.** See the *data_contracts* gate above.")
    return [*lines, ""]


def _notes() -> list[str]:
    return ["## Notes", "", CONVENTION_FOOTNOTE, "", CEILING_FOOTNOTE, ""]


def render_markdown(
    inputs: CardInputs, fold_plot: Path | None, pr_plots: Sequence[Path], forests: Mapping[str, Path], docs: bool
) -> str:
    """The card's markdown; plots are referenced as `plots/<file>.png` relative to the card."""
    lines = [
        *_title(inputs),
        *_at_a_glance(inputs),
        *INTENDED_USE,
        *_limitations(inputs),
        *_provenance(inputs),
        *_reader_section(inputs.readers),
        *_definitions(inputs.metrics),
        *_cv_section(inputs, fold_plot),
        *_test_sets(inputs, pr_plots),
        *_reader_study(inputs.metrics),
        *_subgroups(inputs, forests),
        *_gates(inputs),
        *_lineage(inputs, docs),
        *_notes(),
    ]
    return "\n".join(lines).rstrip() + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1b1b1b; max-width: 1100px;
       margin: 2em auto; padding: 0 1.5em; line-height: 1.45; font-size: 15px; }
h1 { border-bottom: 3px solid #1f4e79; padding-bottom: .3em; }
h2 { color: #1f4e79; border-bottom: 1px solid #c8d3de; padding-bottom: .2em; margin-top: 2em; }
h3 { color: #1f4e79; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #c8d3de; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #eef3f8; }
tr:nth-child(even) td { background: #f9fbfd; }
blockquote { background: #fdecea; border-left: 6px solid #b3261e; margin: 1em 0; padding: .6em 1em; color: #5f1410; }
img { max-width: 47%; display: inline-block; vertical-align: top; margin: .6em .8em .6em 0;
      border: 1px solid #e3e8ee; }
p > img:only-child { max-width: 100%; }
code { background: #f2f4f7; padding: 0 .25em; font-size: 12px; }
td code { word-break: break-all; }
td.gate-pass { color: #1e6b34; font-weight: bold; }
td.gate-warn { color: #8a5a00; background: #fff4d6; font-weight: bold; }
td.gate-fail { color: #ffffff; background: #b3261e; font-weight: bold; }
"""
# The gate table's status cells as the markdown writes them -> coloured cells (HTML only).
_STATUS_CELLS = {
    "<td>pass</td>": '<td class="gate-pass">pass</td>',
    "<td><strong>WARN</strong></td>": '<td class="gate-warn">WARN</td>',
    "<td><strong>FAIL</strong></td>": '<td class="gate-fail">FAIL</td>',
}


def _inline_images(body: str, base: Path) -> str:
    """Each `src="plots/x.png"` becomes a base64 data URI, so the HTML needs no file beside it."""

    def data_uri(match: re.Match[str]) -> str:
        path = base / html.unescape(match.group(1))
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{encoded}"'

    return re.sub(r'src="([^"]+\.png)"', data_uri, body)


def render_html(card_markdown: str, base: Path, title: str) -> str:
    """Self-contained HTML of the card: inline CSS, plots inlined, no external resource (MLflow's viewer, offline)."""
    body = markdown.markdown(card_markdown, extensions=["tables"], output_format="html")
    for cell, coloured in _STATUS_CELLS.items():
        body = body.replace(cell, coloured)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{_inline_images(body, base)}\n</body>\n</html>\n"
    )


# --- the card ----------------------------------------------------------------------------------------------


def _copy_pr_curves(evaluation_dir: Path, plots: Path) -> list[Path]:
    """Evaluate's external PR curves, copied (not redrawn) into the card's plots folder."""
    copied = []
    for src in sorted(evaluation_dir.glob(f"pr_{EXTERNAL_TEST}_*.png")):
        dest = plots / src.name
        shutil.copyfile(src, dest)
        copied.append(dest)
    return copied


def render_card(inputs: CardInputs, out_dir: Path) -> CardFiles:
    """Write the card (markdown and self-contained HTML), its plots and a copy of the Data Docs under `out_dir`.

    Log `out_dir` as one artifact folder (e.g. `mlflow.log_artifacts(out_dir, "model_card")`): the markdown's
    `plots/` images and the `data_validation/index.html` link are relative to the card.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / PLOTS_DIR
    if plots.exists():
        shutil.rmtree(plots)  # a re-render must not carry plots of an earlier one
    plots.mkdir()
    margin = inputs.gate_params.max_subgroup_shortfall
    fold_plot = plot_fold_bars(inputs.train_summary, plots / FOLD_PLOT, inputs.synthetic)
    forests = {}
    for name in CARD_SETS:
        path = plot_subgroup_forest(
            inputs.metrics, name, margin, plots / f"subgroups_{name}_map50.png", inputs.synthetic
        )
        if path is not None:
            forests[name] = path
    pr_plots = _copy_pr_curves(inputs.evaluation_dir, plots)

    docs: Path | None = None
    target = out_dir / VALIDATION_DOCS_DIR
    if target.exists():
        shutil.rmtree(target)
    if inputs.validation_docs is not None and (inputs.validation_docs / "index.html").is_file():
        docs = Path(shutil.copytree(inputs.validation_docs, target))

    text = render_markdown(inputs, fold_plot, pr_plots, forests, docs is not None)
    md_path = out_dir / CARD_MARKDOWN
    md_path.write_text(text, encoding="utf-8")
    version = f" version {inputs.version}" if inputs.version else ""
    html_path = out_dir / CARD_HTML
    html_path.write_text(render_html(text, out_dir, f"Model card: {inputs.model_name}{version}"), encoding="utf-8")
    written = tuple(p for p in (fold_plot, *forests.values(), *pr_plots) if p is not None)
    return CardFiles(out_dir, md_path, html_path, written, docs)
