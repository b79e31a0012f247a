"""The governance model card: its figures are metrics.json's, its HTML renders offline, its plots mark what matters.

The metrics come from `evaluate_set` on a small hand-built reader study (two test sets of 12 and 8 patients, four
readers, a model that misses some compressions), so they have the real metrics.json shape; the card is checked
against them with a formatting written out here, not with the card's own helpers.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from pipelines.evaluate.params import EvaluateParams
from pipelines.evaluate.study import evaluate_set
from pipelines.register import gates
from pipelines.register.card import (
    CardInputs,
    data_provenance,
    reader_protocol,
    render_card,
)
from pipelines.register.params import GateParams
from pipelines.register.plots import forest_rows, plot_fold_bars, plot_subgroup_forest
from tests.conftest import REPO
from tests.unit.test_layering import imports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVELS = [(0.0, 20.0 * k, 10.0, 20.0 * k + 10.0) for k in range(3)]  # three levels an image, boxes apart
# reader -> (level, patients whose compression it misses, patients where it calls a normal level compressed)
READERS = {
    "expert_1": ("expert", (), ()),
    "mid_1": ("mid", (3,), ()),
    "mid_2": ("mid", (), (2,)),
    "junior_1": ("junior", (1, 5), ()),
    "junior_2": ("junior", (7,), (4,)),
}


def _study_set(prefix: str, n: int, site: str, manufacturers: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Images, annotations and model boxes of one test set: n patients, one image each; every even patient holds a
    compression at the middle level; the model misses patient 4's and finds a ghost on patient 1."""
    patients = [f"{prefix}{i:02d}" for i in range(n)]
    images, ann, model = [], [], []
    for i, patient in enumerate(patients):
        image = f"img-{patient}"
        make, scanner, tesla = manufacturers[i % len(manufacturers)]
        images.append((image, f"P{patient}", site, make, scanner, tesla, "sagittal", 2020 + i % 3))
        truth = ["normal", "compression" if i % 2 == 0 else "normal", "normal"]
        for reader, (level, misses, ghosts) in READERS.items():
            for k, label in enumerate(truth):
                read = label
                if label == "compression" and i in misses:
                    read = "normal"
                elif k == 0 and i in ghosts:
                    read = "compression"
                ann.append((image, f"P{patient}", reader, level, read, *LEVELS[k]))
        for k, label in enumerate(truth):
            x0, y0, x1, y1 = LEVELS[k]
            box = (x0, y0 + (i + k) % 3, x1, y1 + (i + k) % 3)  # 0-2 px off: IoU 1 to 0.67, so mAP50-95 < mAP50
            if label == "compression" and i == 4:
                model.append((image, "normal", *box, 0.40))
            else:
                model.append((image, label, *box, 0.55 + 0.03 * ((i + k) % 10)))
        if i == 1:
            model.append((image, "compression", *LEVELS[0], 0.60))
    return {
        "images": pd.DataFrame(
            images,
            columns=[
                "image_id",
                "patient_key",
                "site",
                "manufacturer",
                "model",
                "field_strength",
                "plane",
                "study_year",
            ],
        ),
        "annotations": pd.DataFrame(
            ann,
            columns=[
                "image_id",
                "patient_key",
                "reader_id",
                "reader_level",
                "label",
                "x_min",
                "y_min",
                "x_max",
                "y_max",
            ],
        ),
        "model": pd.DataFrame(model, columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max", "score"]),
    }


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """Two evaluated test sets, a cross-validation set for provenance, and a training summary."""
    params = EvaluateParams(bootstrap_resamples=40, min_subgroup_patients=5, min_subgroup_class_patients=2)
    ext = _study_set("e", 12, "ext", [("Canon", "Vantage Orian", 1.5)] + [("Philips", "Ingenia", 3.0)] * 3)
    internal = _study_set("i", 8, "dev", [("SIEMENS", "MAGNETOM Skyra", 3.0)])
    cv = _study_set("c", 10, "dev", [("GE MEDICAL SYSTEMS", "Optima MR450w", 1.5)])
    metrics = {
        "sets": {
            "internal_test": evaluate_set(
                "internal_test", internal["model"], internal["annotations"], internal["images"], params
            ).to_json(),
            "external_test": evaluate_set(
                "external_test", ext["model"], ext["annotations"], ext["images"], params
            ).to_json(),
        },
        "params": params.model_dump(mode="json"),
        "cv": {"map50_min": 0.801, "map50_max": 0.902},
        "synthetic": True,
    }
    metrics = json.loads(json.dumps(metrics))  # as read back from metrics.json
    images = pd.concat([s["images"] for s in (cv, internal, ext)], ignore_index=True)
    splits = images[["image_id", "patient_key", "site"]].copy()
    splits["split"] = ["cv"] * 10 + ["internal_test"] * 8 + ["external_test"] * 12
    splits["fold"] = [i % 5 for i in range(10)] + [-1] * 20
    splits["has_compression"] = (
        [i % 2 == 0 for i in range(10)] + [i % 2 == 0 for i in range(8)] + [i % 2 == 0 for i in range(12)]
    )
    annotations = pd.concat([s["annotations"] for s in (cv, internal, ext)], ignore_index=True)
    folds = {f"fold{k}": {"map50": 0.81 + 0.02 * k, "map50_95": 0.6 + 0.01 * k, "precision": 0.8, "recall": 0.7}
             for k in range(5)}  # fmt: skip
    summary = {
        "cv": {"map50_mean": 0.851, "map50_sd": 0.0316, "map50_min": 0.81, "map50_max": 0.89,
               "study_map50_min": 0.917, "study_map50_max": 0.97},
        "folds": folds,
        "final_source": "best fold (fold4, mAP50 0.890)",
    }  # fmt: skip
    return {"metrics": metrics, "images": images, "splits": splits, "annotations": annotations, "summary": summary}


def _png(path: Path, colour: str = "white") -> None:
    Image.new("RGB", (12, 10), colour).save(path, format="PNG")


@pytest.fixture
def inputs(world: dict[str, Any], tmp_path: Path) -> CardInputs:
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    for name in ("pr_external_test_compression", "pr_external_test_normal", "pr_internal_test_normal"):
        _png(evaluation / f"{name}.png")
    docs = tmp_path / "validation"
    (docs / "expectations").mkdir(parents=True)
    (docs / "index.html").write_text("<html>docs</html>")
    (docs / "expectations" / "images.html").write_text("<html>suite</html>")
    metrics, gate_params = world["metrics"], GateParams()
    outcomes = [
        gates.external_floor(metrics, gate_params.min_external_map50_lower),
        gates.subgroups(metrics, gate_params.max_subgroup_shortfall),
        gates.non_inferior(None, gate_params.noninferiority_margin, None),
        gates.data_contracts({"success": True}, "md5abc.dir", "md5abc.dir"),
        gates.clean_tree(True, "warn"),
    ]
    return CardInputs(
        model_name="cordwatch-detector",
        version="7",
        metrics=metrics,
        train_summary=world["summary"],
        provenance=data_provenance(world["images"], world["splits"]),
        readers=reader_protocol(world["annotations"], "expert"),
        gates=outcomes,
        gate_params=gate_params,
        lineage={
            "git commit": "0123abcd",
            "DVC data hash": "md5abc.dir",
            "params hash": "p9",
            "training run": "r1",
            "evaluation run": "r2",
        },
        evaluation_dir=evaluation,
        validation_docs=docs,
        synthetic=True,
    )


def _fmt(item: dict[str, Any], signed: bool = False) -> str:
    """`point (low to high)` with 3 decimals, as evaluate's report writes a figure (‡: collapsed at the ceiling)."""
    f = "{:+.3f}" if signed else "{:.3f}"
    ceiling = "‡" if item["point"] >= 0.995 - 1e-9 and item["high"] - item["low"] < 1e-9 else ""
    return f"{f.format(item['point'])} ({f.format(item['low'])} to {f.format(item['high'])}){ceiling}"


def _card(inputs: CardInputs, out: Path) -> tuple[str, str]:
    files = render_card(inputs, out)
    return files.markdown.read_text(), files.html.read_text()


def test_headline_figures_are_metrics_json(inputs: CardInputs, tmp_path: Path) -> None:
    md, _ = _card(inputs, tmp_path / "card")
    for name, label in (("external_test", "external test"), ("internal_test", "internal test")):
        result = inputs.metrics["sets"][name]
        model = result["model"]
        cells = " | ".join(_fmt(model[k]) for k in ("map50", "map50_95", "precision", "recall"))
        assert f"| {label} | {result['n_patients']} | {result['n_images']} | {cells} |" in md
    ext = inputs.metrics["sets"]["external_test"]
    diff = ext["model_minus_group"]["mid"]
    assert f"{_fmt(diff, signed=True)}, P {diff['p_value']:.3f} |" in md
    mrmc = ext["mrmc"]["mid"]
    assert f"{_fmt(mrmc, signed=True)}, df {mrmc['df']:.1f}" in md
    assert (
        f"| mid readers mAP50† (mean of 2) | 0.912 (0.908 to 0.919) | {_fmt(ext['reader_groups']['mid']['map50'])} |"
        in md
    )
    assert "0.944 (0.934 to 0.953)" in md  # the study's external figure beside this model's
    for fold, figures in inputs.train_summary["folds"].items():
        assert f"| {fold} | {figures['map50']:.3f} | {figures['map50_95']:.3f} |" in md
    assert "### Cross-validation (development data, 5 folds of patients)" in md
    assert "- **Cross-validation mAP50** (development centre, range over folds): 0.810-0.890;" in md
    assert "| **mean** | 0.851 |" in md and "| *Du et al. 2026* | *0.917-0.970* |" in md


def _held_out_row(md: str, label: str) -> str:
    """The test set's row of the held-out table (the provenance table has a row of that name too)."""
    return next(line for line in md.splitlines() if line.startswith(f"| {label} |") and " to " in line)


def test_card_changes_with_its_inputs(inputs: CardInputs, tmp_path: Path) -> None:
    before, _ = _card(inputs, tmp_path / "a")
    metrics = copy.deepcopy(inputs.metrics)
    metrics["sets"]["external_test"]["model"]["map50"].update(point=0.4321, low=0.3012, high=0.5561)
    after, _ = _card(CardInputs(**{**inputs.__dict__, "metrics": metrics}), tmp_path / "b")
    old = _fmt(inputs.metrics["sets"]["external_test"]["model"]["map50"])
    cells = _held_out_row(after, "external test").split(" | ")
    assert cells[3] == "0.432 (0.301 to 0.556)" and old not in cells
    assert _held_out_row(before, "external test").split(" | ")[3] == old


def test_every_subgroup_row_and_too_small_flag(inputs: CardInputs, tmp_path: Path) -> None:
    md, _ = _card(inputs, tmp_path / "card")
    small_seen = False
    for name in ("external_test", "internal_test"):
        for r in inputs.metrics["sets"][name]["subgroups"]:
            if r["metric"] != "map50" or r["subgroup"] == "all":
                continue
            ci, note = _fmt(r), ""
            if r["too_small"]:
                ci, note, small_seen = f"*{ci}, unreliable*", f"too small: {r['reason']}", True
            counts = f"{r['n_patients']} | {r['n_patients_compression']}"
            assert f"| {r['subgroup']} | {r['value']} | {counts} | {ci} | {note} |" in md
    assert small_seen, "the fixture must hold a subgroup too small to judge"


def test_gate_outcomes_and_lineage(inputs: CardInputs, tmp_path: Path) -> None:
    md, _ = _card(inputs, tmp_path / "card")
    statuses = {"pass": "pass", "warn": "**WARN**", "fail": "**FAIL**"}
    for g in inputs.gates:
        assert f"| {g.name} | {statuses[g.status]} | {g.reason} |" in md
    assert "| clean_git_tree | **WARN** |" in md
    for key, value in inputs.lineage.items():
        assert f"| {key} | `{value}` |" in md
    lineage = {"git commit": "", "DVC data hash": "not run through dvc repro"}
    md, _ = _card(CardInputs(**{**inputs.__dict__, "lineage": lineage}), tmp_path / "other")
    assert "| git commit | not recorded |" in md and "| DVC data hash | not run through dvc repro |" in md
    assert "[data_validation/index.html](data_validation/index.html)" in md


def test_provenance_and_reader_protocol(inputs: CardInputs, tmp_path: Path) -> None:
    prov = inputs.provenance.set_index("split")
    assert list(prov.index) == ["cv", "internal_test", "external_test", "all"]
    assert prov.loc["external_test", "patients"] == 12 and prov.loc["external_test", "images"] == 12
    assert prov.loc["external_test", "patients_with_compression"] == 6
    assert prov.loc["external_test", "manufacturers"] == {"Canon": 3, "Philips": 9}
    assert prov.loc["external_test", "field_strengths"] == {"1.5 T": 3, "3 T": 9}
    assert prov.loc["all", "sites"] == {"dev": 18, "ext": 12}
    assert prov.loc["cv", "study_years"] == "2020-2022"
    readers = inputs.readers
    assert readers["reference_readers"] == ["expert_1"] and readers["compared_groups"] == ["mid", "junior"]
    assert readers["levels"]["mid"]["readers"] == ["mid_1", "mid_2"]
    # 30 images, three levels each; every even patient of every set holds one compression: 5 + 4 + 6.
    assert readers["reference_boxes"] == {"compression": 15, "normal": 75}
    md, _ = _card(inputs, tmp_path / "card")
    assert "| external test | 12 | 6 | 12 | ext (12) | Canon (3), Philips (9) | Ingenia (9), Vantage Orian (3) |" in md
    assert "| expert (reference) | 1: expert_1 | 30 | 30 | compression 15, normal 75 |" in md
    assert "manufacturers: Canon (3), GE MEDICAL SYSTEMS (10), Philips (9), SIEMENS (8);" in md


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained(inputs: CardInputs, tmp_path: Path) -> None:
    gate = gates.GateOutcome("injected", False, "reason with <script>alert(1)</script> and a | pipe")
    md, page = _card(CardInputs(**{**inputs.__dict__, "gates": [*inputs.gates, gate]}), tmp_path / "card")
    for forbidden in ('src="http', "src='http", "<link", "<script", 'href="http', "@import", "url("):
        assert forbidden not in page
    parser = _Tags()
    parser.feed(page)
    parser.close()
    tags = [t for t, _ in parser.tags]
    assert tags[:2] == ["html", "head"] and "style" in tags and "table" in tags
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == len(re.findall(r"!\[[^\]]*\]\(plots/[^)]+\.png\)", md)) == 5
    for src in images:
        assert src is not None and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert "reason with &lt;script>alert(1)&lt;/script> and a \\| pipe" in md
    assert '<td class="gate-fail">FAIL</td>' in page and '<td class="gate-warn">WARN</td>' in page
    rows = [a for t, a in parser.tags if t == "tr"]
    assert len(rows) > 20


def test_synthetic_banner_iff_synthetic(inputs: CardInputs, tmp_path: Path) -> None:
    md, page = _card(inputs, tmp_path / "synthetic")
    assert md.splitlines()[2].startswith("> **SYNTHETIC DATA.**") and "SYNTHETIC DATA." in page
    real = CardInputs(**{**inputs.__dict__, "synthetic": False})
    md_real, page_real = _card(real, tmp_path / "real")
    assert "SYNTHETIC" not in md_real and "SYNTHETIC" not in page_real
    # The plots carry the mark too: same figures, different pixels.
    for plot in ("cv_folds_map50.png", "subgroups_external_test_map50.png"):
        assert (tmp_path / "synthetic/plots" / plot).read_bytes() != (tmp_path / "real/plots" / plot).read_bytes()


def test_files_plots_and_docs(inputs: CardInputs, tmp_path: Path) -> None:
    files = render_card(inputs, tmp_path / "card")
    names = sorted(p.name for p in files.plots)
    assert names == [
        "cv_folds_map50.png", "pr_external_test_compression.png", "pr_external_test_normal.png",
        "subgroups_external_test_map50.png", "subgroups_internal_test_map50.png",
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "card/plots").iterdir()) == names  # internal PR curves not copied
    for path in files.plots:
        with Image.open(path) as image:
            image.verify()
        assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert files.validation_docs == tmp_path / "card/data_validation"
    assert (files.validation_docs / "index.html").read_text() == "<html>docs</html>"
    assert (files.validation_docs / "expectations/images.html").is_file()
    # Rendered again without docs: the stale copy goes, and the card says none are attached.
    again = render_card(CardInputs(**{**inputs.__dict__, "validation_docs": None}), tmp_path / "card")
    assert again.validation_docs is None and not (tmp_path / "card/data_validation").exists()
    assert "No Data Docs were attached" in again.markdown.read_text()


def test_missing_train_summary_gives_no_fold_plot(inputs: CardInputs, tmp_path: Path) -> None:
    files = render_card(CardInputs(**{**inputs.__dict__, "train_summary": None, "version": None}), tmp_path / "c")
    md = files.markdown.read_text()
    assert "cv_folds_map50.png" not in md and not (tmp_path / "c/plots/cv_folds_map50.png").exists()
    assert "No training summary was given: per-fold cross-validation figures are not shown" in md
    assert "CV mAP50 range of 0.801-0.902" in md  # evaluate's copy of the CV range still shows
    assert md.startswith("# Model card: cordwatch-detector (not yet registered)")
    assert plot_fold_bars(None, tmp_path / "x.png", True) is None and not (tmp_path / "x.png").exists()


def test_forest_marks_too_small_and_short_subgroups(tmp_path: Path) -> None:
    def row(subgroup: str, value: str, point: float, small: bool) -> dict[str, Any]:
        return {"metric": "map50", "subgroup": subgroup, "value": value, "point": point, "low": point - 0.05,
                "high": point + 0.05, "n_patients": 4 if small else 20, "too_small": small}  # fmt: skip

    subgroups = [row("all", "all", 0.80, False), row("manufacturer", "A", 0.78, False),
                 row("manufacturer", "B", 0.50, True), row("field_strength", "1.5", 0.60, False)]  # fmt: skip
    metrics = {"sets": {"external_test": {"subgroups": subgroups}}, "params": {"ci_level": 0.95}}
    overall, rows = forest_rows(metrics, "external_test", 0.10)
    assert overall == 0.80
    assert [r.state for r in rows] == ["judged", "small", "short"]
    assert rows[1].label == "manufacturer = B\n4 patients, too small to judge"
    assert "too small" not in rows[0].label and "too small" not in rows[2].label
    path = plot_subgroup_forest(metrics, "external_test", 0.10, tmp_path / "f.png", synthetic=False)
    assert path is not None and path.read_bytes().startswith(PNG_SIGNATURE)
    assert plot_subgroup_forest(metrics, "internal_test", 0.10, tmp_path / "g.png", False) is None


def test_card_modules_import_no_flow_or_config() -> None:
    for module in ("card.py", "plots.py"):
        found = imports(REPO / "pipelines" / "register" / module)
        assert not {m for m in found if m.startswith("flows") or m == "pipelines.config"}, found
