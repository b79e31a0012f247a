"""Monitoring's feature store: the quick read of new studies, and one feature row per study, computed once and kept.

`collect_features` runs `pipelines.predict`'s quick read over a folder or a DICOMweb PACS (its results go to the
output folder, as predict's do) and, from the same forward pass (`RunOptions.observer`), appends one row per study
to `STORE/features.parquet` (`pipelines/predict/features.py` says what a row holds). A study already in the store is
not read again: features are computed once, never recomputed per report. The store holds no identity: studies are
keyed by ingestion's keyed pseudonym, sites by ingestion's site code or pseudonym.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.ingest import deid
from pipelines.io import write_parquet_atomic
from pipelines.predict.detector import Boxes, ForwardState
from pipelines.predict.features import acquisition_metadata, pooled_embedding, study_row
from pipelines.predict.inputs import StudyInput, group_by_study, read_studies
from pipelines.predict.model import ModelRef, resolve_model
from pipelines.predict.pacs_run import predict_from_pacs
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
    source: Path | None = None,
    *,
    store: Path,
    out_dir: Path,
    model: ModelRef | None = None,
    pacs_url: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Quick-read the studies of `source` (a folder) or of a DICOMweb PACS not yet in the store, and keep their
    feature rows; returns counts. The model defaults to `predict.model_uri` (the reading room's champion)."""
    if (source is None) == (pacs_url is None):
        raise ValueError("give exactly one of a source path and a PACS URL")
    model = model or resolve_model(params.predict.model_uri, params)
    key = deid.load_key(params.ingest.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    kept = read_store(store)
    known = set(kept["study_key"]) if "study_key" in kept else set()
    rows: list[dict[str, Any]] = []
    band = params.predict.uncertainty_band
    names = model.class_names
    site_tag, site_map = params.ingest.site_tag, params.ingest.site_map

    def observe(study: StudyInput, boxes: list[Boxes], states: list[ForwardState]) -> None:
        if not study.images or pseudo.study(study.study_uid) in known:
            return
        header = study.images[0].dataset
        institution = str(header.get(site_tag, "") or "").strip()
        site = site_map.get(institution) or (pseudo.site(institution) if institution else "unknown")
        labels = [names[int(c)] for b in boxes for c in b.class_index]
        confidences = [float(c) for b in boxes for c in b.confidence]
        images = [(im.pixels, b.xyxy) for im, b in zip(study.images, boxes, strict=True)]
        embeddings = [pooled_embedding(s.outputs, predictor.detector.head.f) for s in states]
        meta = acquisition_metadata(header, site)
        row = study_row(pseudo.study(study.study_uid), meta, images, labels, confidences, band, embeddings)
        row.update(monitored_at=time.time(), model=f"{model.name}/{model.version}")
        rows.append(row)
        known.add(row["study_key"])

    options = RunOptions("quick", out_dir, dicom_results=False, observer=observe)
    predictor = Predictor(model, params, options)
    skipped = 0
    try:
        if pacs_url is not None:  # the PACS run keeps which studies this model version read (OUT/pacs_processed.json)
            _, counts = predict_from_pacs(pacs_url, predictor, model.clip_percentiles, progress=progress)
        else:
            assert source is not None
            groups = group_by_study(source)
            new = {uid: paths for uid, paths in groups.items() if uid and pseudo.study(uid) not in known}
            skipped = len(groups) - len(new)
            studies = read_studies(source, new, predictor.checks, model.clip_percentiles)
            _, counts = predict_studies(studies, predictor, total=len(new), progress=progress)
    finally:
        predictor.close()
    if rows:
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(rows)], ignore_index=True), store / FEATURES_FILE)
    return {**counts, "new_rows": len(rows), "already_kept": skipped, "store": str(store)}
