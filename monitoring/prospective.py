"""Prospective evaluation: expert reads that arrive weeks later, scored against what the model said at the time.

`run_monitor_labels` (`cordwatch monitor labels LABELS.csv`) takes a CSV in ingestion's annotation format
(`sop_instance_uid, reader_id, reader_level, label, x_min, y_min, x_max, y_max`; only `readers.reference_level` rows
count) for studies monitoring has already read. The reads are pseudonymised as ingestion does (`Pseudonymizer.image`)
and kept in `STORE/labels.parquet` (a later read of an image replaces the earlier one). Then, with the evaluation's
own scorer (`pipelines.evaluate`: `match`, the patient bootstrap, evaluate's CI method, level and resamples):
- the champion's operating-point figures with their patient-bootstrap CIs, per site and per window of the feature
  store, and over all sites: lesion sensitivity and PPV (compression boxes; IoU >= 0.5, one-to-one), precision and
  recall (mean over the classes), at the model's operating confidence;
- an alert when the sensitivity or PPV point estimate falls below the lower bound of the same figure's
  external-validation CI stored with the model (`external_validation.json`, written at registration: the figures
  the governance review accepted);
- where a shadow challenger read the same images, its paired difference from the champion in each figure
  (challenger minus champion, paired patient bootstrap, as registration compares models).
Why operating-point figures and not mAP50: monitoring keeps the boxes the quick read reported (at the operating
confidence), while evaluate's AP integrates the whole curve from boxes down to 0.001; an AP from the kept boxes
would be truncated and not comparable with the external-validation figure. The operating-point figures are: a box
at or above the threshold is the same box whether the threshold is applied before NMS or after.
Figures go to `reports/monitoring/prospective.json` and `.md`; alerts to `STORE/alerts.parquet`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from monitoring.collect import CHALLENGER, CHAMPION, IMAGES_FILE, PREDICTIONS_FILE, read_store
from monitoring.run import ALERTS_FILE, append_alerts
from monitoring.windows import ordered, windows
from pipelines.evaluate.scoring import BOX_FILE_COLUMNS, Matched, match
from pipelines.evaluate.uncertainty import bootstrap, paired_difference
from pipelines.ingest import deid
from pipelines.ingest.annotations import read_annotations
from pipelines.io import write_atomic, write_json, write_parquet_atomic
from pipelines.predict.model import resolve_model

if TYPE_CHECKING:
    from pipelines.config import Params

LABELS_FILE = "labels.parquet"
ALL = "all"
FIGURES = ("sensitivity", "ppv", "precision", "recall")
GUARDED = ("sensitivity", "ppv")  # a drop below the external CI alerts


class LabelsError(ValueError):
    """A labels file that cannot be used (its reason says why; nothing was kept)."""


def pseudonymised_labels(path: Path, params: Params, pseudo: deid.Pseudonymizer) -> tuple[pd.DataFrame, int]:
    """The reference reader's boxes of `path`, keyed by image pseudonym; and how many rows were other readers'."""
    raw = read_annotations(path)
    expert = raw[raw["reader_level"].str.strip() == params.readers.reference_level]
    if expert.empty:
        raise LabelsError(f"{path.name} holds no {params.readers.reference_level!r} reads: nothing to score against")
    out = pd.DataFrame({"image_id": [pseudo.image(u) for u in expert["sop_instance_uid"]], "label": expert["label"]})
    for c in ("x_min", "y_min", "x_max", "y_max"):
        out[c] = pd.to_numeric(expert[c].to_numpy(), errors="coerce")
    bad = out[out[["x_min", "y_min", "x_max", "y_max"]].isna().any(axis=1)]
    if len(bad):
        raise LabelsError(f"{path.name}: {len(bad)} {params.readers.reference_level} row(s) with a non-numeric box")
    return out, len(raw) - len(expert)


def _matched(pred: pd.DataFrame, ref: pd.DataFrame, patient_of: dict[str, str]) -> Matched:
    return match(pred[[*BOX_FILE_COLUMNS, "score"]], ref[list(BOX_FILE_COLUMNS)], patient_of)


def run_monitor_labels(params: Params, labels_csv: Path, *, model_uri: str | None = None) -> dict[str, Any]:
    """Keep the expert reads of `labels_csv`, score the monitored predictions they cover; returns the summary.

    Raises:
        LabelsError, AnnotationFileError: an unusable file (nothing kept).
        ModelError: the model (for its external-validation figures) cannot be found.
    """
    store, reports = params.paths.monitoring_dir, params.paths.report_dir("monitoring")
    if not labels_csv.is_file():
        raise LabelsError(f"labels file not found: {labels_csv}")
    pseudo = deid.Pseudonymizer(
        deid.load_key(params.ingest.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    )
    new, other_readers = pseudonymised_labels(labels_csv, params, pseudo)
    images = read_store(store, IMAGES_FILE)
    if images.empty:
        raise LabelsError("no monitored study yet: run `cordwatch monitor PATH` first")
    known = set(images["image_id"])
    unknown = sorted(set(new["image_id"]) - known)
    new = new[new["image_id"].isin(known)]
    kept = read_store(store, LABELS_FILE)
    if len(kept):
        kept = kept[~kept["image_id"].isin(set(new["image_id"]))]
    labels = pd.concat([kept, new], ignore_index=True)
    write_parquet_atomic(labels, store / LABELS_FILE)

    model = resolve_model(model_uri or params.monitor.model_uri or params.predict.model_uri, params)
    external = json.loads(model.validation.read_text()) if model.validation and model.validation.is_file() else None
    labelled = images[images["image_id"].isin(set(labels["image_id"]))]
    preds = read_store(store, PREDICTIONS_FILE)
    preds = preds[preds["image_id"].isin(set(labelled["image_id"]))] if len(preds) else preds
    patient_of = dict(zip(labelled["image_id"], labelled["patient_key"], strict=True))
    features = ordered(read_store(store))
    window_of: dict[str, int] = {}
    for w in windows(features, size=params.monitor.window_size):
        window_of.update(dict.fromkeys(w.rows(features)["study_key"], w.index))
    labelled = labelled.assign(window=labelled["study_key"].map(window_of))

    results: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    groups = [(ALL, None, labelled)] + [(site, None, rows) for site, rows in labelled.groupby("site")]
    groups += [(site, int(w), rows) for (site, w), rows in labelled.groupby(["site", "window"])]
    for site, window, rows in groups:
        ids = set(rows["image_id"])
        ref = labels[labels["image_id"].isin(ids)]
        champion = _matched(preds[(preds["role"] == CHAMPION) & preds["image_id"].isin(ids)], ref, patient_of)
        figures = bootstrap(champion, params.evaluate)
        entry: dict[str, Any] = {
            "site": site, "window": window, "images": int(ref["image_id"].nunique()),
            "patients": len(champion.patient_ids), **{k: figures[k].to_dict() for k in FIGURES},
        }  # fmt: skip
        shadowed = rows["challenger"].astype(bool) if "challenger" in rows else pd.Series(False, index=rows.index)
        if window is None and shadowed.all():  # every image here was read by the challenger too (boxes or none)
            challenger = preds[(preds["role"] == CHALLENGER) & preds["image_id"].isin(ids)]
            shadow = _matched(challenger, ref, patient_of)
            entry["challenger"] = {
                "model": str(rows["challenger"].iloc[0]),
                "minus_champion": {
                    k: paired_difference(shadow, champion, params.evaluate, k).to_dict() for k in FIGURES
                },
            }
        dropped = []
        for k in GUARDED:
            point, floor = entry[k]["point"], ((external or {}).get("model", {}).get(k) or {}).get("low")
            if point is not None and floor is not None and point < floor:
                dropped.append(f"{k} {point:.3f} < external CI low {floor:.3f}")
        entry["below_external_ci"] = dropped
        if dropped:
            where = "all sites" if site == ALL else f"site {site}" + ("" if window is None else f", window {window}")
            alerts.append(
                {
                    "window": -1 if window is None else window,
                    "closed_at": math.nan,
                    "segment": f"performance:{site}" if site == ALL else f"performance:site:{site}",
                    "sites": site if site != ALL else ";".join(sorted(map(str, labelled["site"].unique()))),
                    "studies": int(rows["study_key"].nunique()),
                    "reasons": f"{where}: " + "; ".join(dropped),
                    "new_categories": "{}",
                    "embedding_score": math.nan,
                }
            )
        results.append(entry)
    append_alerts(store / ALERTS_FILE, alerts)
    summary = {
        "model": model.to_json(),
        "external_validation": external,
        "labels_file_rows_other_readers": other_readers,
        "labelled_images": int(labelled["image_id"].nunique()),
        "labelled_studies": int(labelled["study_key"].nunique()),
        "labels_for_unmonitored_images": len(unknown),
        "results": results,
        "alerts": alerts,
        "definition": (
            f"at the operating confidence {params.evaluate.operating_conf}, IoU >= 0.5 one-to-one: sensitivity and "
            "PPV of compression boxes (lesion level), precision and recall averaged over the classes; CI: patient "
            f"bootstrap ({params.evaluate.bootstrap_resamples} resamples, {params.evaluate.ci_method}, level "
            f"{params.evaluate.ci_level}); alert: sensitivity or PPV below the external-validation CI's low bound"
        ),
    }
    write_json(reports / "prospective.json", summary)
    write_atomic(reports / "prospective.md", _markdown(summary).encode())
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    def fmt(f: dict[str, Any]) -> str:
        if f.get("point") is None:
            return "n/a"
        return f"{f['point']:.3f} ({f['low']:.3f}-{f['high']:.3f})" if f.get("low") is not None else f"{f['point']:.3f}"

    ext = (summary["external_validation"] or {}).get("model", {})
    synthetic = (summary["external_validation"] or {}).get("synthetic")
    stored = ", ".join(f"{k} {fmt(ext[k])}" for k in GUARDED if k in ext) or "not stored with this model"
    lines = [
        "# Prospective performance" + (" (SYNTHETIC phantom studies)" if synthetic else ""),
        "",
        f"Model {summary['model']['name']} version {summary['model']['version']}. External validation: {stored}.",
        "",
        summary["definition"] + ".",
        "",
        "| site | window | images | patients | sensitivity (CI) | PPV (CI) | below external CI | challenger minus "
        "champion: sensitivity, PPV |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["results"]:
        chal = r.get("challenger", {}).get("minus_champion")
        shadow = f"{fmt(chal['sensitivity'])}, {fmt(chal['ppv'])}" if chal else ""
        lines.append(
            f"| {r['site']} | {'all' if r['window'] is None else r['window']} | {r['images']} | {r['patients']} | "
            f"{fmt(r['sensitivity'])} | {fmt(r['ppv'])} | {'; '.join(r['below_external_ci']) or 'no'} | {shadow} |"
        )
    return "\n".join(lines) + "\n"
