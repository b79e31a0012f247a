"""Monitoring's feature store: the quick read of new studies, and one feature row per study, computed once and kept.

`collect_features` runs `pipelines.predict`'s quick read over a folder (the reading room's results go where predict
writes them) and, from the same forward pass (`RunOptions.observer`), appends one row per study to
`STORE/features.parquet` (`monitoring/features.py` says what a row holds). A study already in the store is not read
again: features are computed once, never recomputed per report. The store holds no identity: studies are keyed by
ingestion's keyed pseudonym, sites by ingestion's site code or pseudonym.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from monitoring.features import pooled_embedding, study_row
from pipelines.ingest import deid
from pipelines.io import write_parquet_atomic
from pipelines.predict.detector import Boxes, ForwardState
from pipelines.predict.inputs import StudyInput, group_by_study, read_studies
from pipelines.predict.model import resolve_model
from pipelines.predict.run import Predictor, RunOptions, predict_studies
from pipelines.progress import ProgressFn

if TYPE_CHECKING:
    from pipelines.config import Params

FEATURES_FILE = "features.parquet"


def read_store(store: Path) -> pd.DataFrame:
    """The feature rows kept so far (empty when none)."""
    path = store / FEATURES_FILE
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def collect_features(
    params: Params,
    source: Path,
    *,
    store: Path,
    out_dir: Path,
    model_uri: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Quick-read the studies under `source` not yet in the store and keep their feature rows; returns counts."""
    model = resolve_model(model_uri or params.predict.model_uri, params)
    key = deid.load_key(params.ingest.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    kept = read_store(store)
    known = set(kept["study_key"]) if "study_key" in kept else set()
    groups = group_by_study(source)
    new = {uid: paths for uid, paths in groups.items() if uid and pseudo.study(uid) not in known}
    rows: list[dict[str, Any]] = []
    band = params.predict.uncertainty_band
    names = model.class_names
    site_tag, site_map = params.ingest.site_tag, params.ingest.site_map

    def observe(study: StudyInput, boxes: list[Boxes], states: list[ForwardState]) -> None:
        if not study.images:
            return
        header = study.images[0].dataset
        institution = str(header.get(site_tag, "") or "").strip()
        site = site_map.get(institution) or (pseudo.site(institution) if institution else "unknown")
        labels = [names[int(c)] for b in boxes for c in b.class_index]
        confidences = [float(c) for b in boxes for c in b.confidence]
        images = [(im.dataset, im.stored, b.xyxy) for im, b in zip(study.images, boxes, strict=True)]
        embeddings = [pooled_embedding(s.outputs, predictor.detector.head.f) for s in states]
        row = study_row(pseudo.study(study.study_uid), images, site, labels, confidences, band, embeddings)
        row.update(monitored_at=time.time(), model=f"{model.name}/{model.version}")
        rows.append(row)

    options = RunOptions("quick", out_dir, dicom_results=False, observer=observe)
    predictor = Predictor(model, params, options)
    try:
        studies = read_studies(source, new, predictor.checks, model.clip_percentiles, keep_stored=True)
        _, counts = predict_studies(studies, predictor, total=len(new), progress=progress)
    finally:
        predictor.close()
    if rows:
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(rows)], ignore_index=True), store / FEATURES_FILE)
    return {**counts, "new_rows": len(rows), "already_kept": len(groups) - len(new), "store": str(store)}
