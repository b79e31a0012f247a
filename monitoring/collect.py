"""Monitoring's feature store: the quick read of new studies, and one feature row per study, computed once and kept.

`collect_features` runs `pipelines.predict`'s quick read over a folder or a DICOMweb PACS (its results go to the
output folder, as predict's do) and, from the same forward pass (`RunOptions.observer`), appends one row per study
to `STORE/features.parquet` (`pipelines/predict/features.py` says what a row holds). A study already in the store is
not read again: features are computed once, never recomputed per report. The store holds no identity: studies are
keyed by ingestion's keyed pseudonym, sites by ingestion's site code or pseudonym.

The same pass keeps each image's boxes in `STORE/predictions.parquet` (image and patient pseudonyms as ingestion
derives them, so expert reads that arrive later join on them: `monitoring.prospective`). A `challenger` model, when
given, reads the same images in shadow: its boxes go to that table only, under role `challenger`, never to the
output folder a clinician reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.ingest import deid
from pipelines.io import write_parquet_atomic
from pipelines.predict.detector import Boxes, Detector, ForwardState
from pipelines.predict.features import acquisition_metadata, detected_study_row
from pipelines.predict.inputs import StudyInput, group_by_study, read_studies
from pipelines.predict.model import ModelRef, resolve_model
from pipelines.predict.pacs_run import predict_from_pacs
from pipelines.predict.run import Predictor, RunOptions, predict_studies
from pipelines.progress import ProgressFn

if TYPE_CHECKING:
    from pipelines.config import Params

FEATURES_FILE = "features.parquet"
PREDICTIONS_FILE = "predictions.parquet"
IMAGES_FILE = "images.parquet"  # every image read, and by which challenger (an image with no box has no box row)
CHAMPION, CHALLENGER = "champion", "challenger"  # roles in the predictions table
PREDICTION_COLUMNS = (
    "patient_key", "study_key", "site", "image_id", "role", "model", "label", "score", "x_min", "y_min", "x_max",
    "y_max",
)  # fmt: skip


def read_store(store: Path, table: str = FEATURES_FILE) -> pd.DataFrame:
    """The rows kept so far in one of the store's tables (empty when none)."""
    path = store / table
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def box_rows(
    boxes: Boxes, names: tuple[str, ...], *, image_id: str, keys: dict[str, str], role: str, model: str
) -> list[dict[str, Any]]:
    """One predictions-table row per box of one image (scoring's box-file columns plus who said it)."""
    return [
        {
            **keys,
            "image_id": image_id,
            "role": role,
            "model": model,
            "label": names[int(c)],
            "score": float(s),
            "x_min": float(b[0]),
            "y_min": float(b[1]),
            "x_max": float(b[2]),
            "y_max": float(b[3]),
        }
        for b, s, c in zip(boxes.xyxy, boxes.confidence, boxes.class_index, strict=True)
    ]


def collect_features(
    params: Params,
    source: Path | None = None,
    *,
    store: Path,
    out_dir: Path,
    model: ModelRef | None = None,
    pacs_url: str | None = None,
    challenger: ModelRef | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Quick-read the studies of `source` (a folder) or of a DICOMweb PACS not yet in the store, and keep their
    feature rows and boxes; returns counts. The model defaults to `predict.model_uri` (the reading room's champion);
    `challenger` reads the same images in shadow."""
    if (source is None) == (pacs_url is None):
        raise ValueError("give exactly one of a source path and a PACS URL")
    model = model or resolve_model(params.predict.model_uri, params)
    key = deid.load_key(params.ingest.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    kept = read_store(store)
    known = set(kept["study_key"]) if "study_key" in kept else set()
    rows: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    images_read: list[dict[str, Any]] = []
    band = params.predict.uncertainty_band
    names = model.class_names
    site_tag, site_map = params.ingest.site_tag, params.ingest.site_map

    def observe(study: StudyInput, boxes: list[Boxes], states: list[ForwardState]) -> None:
        if not study.images or pseudo.study(study.study_uid) in known:
            return
        header = study.images[0].dataset
        institution = str(header.get(site_tag, "") or "").strip()
        site = site_map.get(institution) or (pseudo.site(institution) if institution else "unknown")
        meta = acquisition_metadata(header, site)
        pixels = [im.pixels for im in study.images]
        layers = predictor.detector.head.f
        row = detected_study_row(pseudo.study(study.study_uid), meta, pixels, boxes, states, names, band, layers)
        row.update(monitored_at=time.time(), model=f"{model.name}/{model.version}")
        rows.append(row)
        known.add(row["study_key"])
        patient = pseudo.patient(str(header.get("PatientID", "") or ""), str(header.get("IssuerOfPatientID", "") or ""))
        keys = {"patient_key": patient, "study_key": row["study_key"], "site": site}
        image_ids = [pseudo.image(im.sop_instance_uid) for im in study.images]
        images_read.extend({**keys, "image_id": i, "challenger": shadow_name} for i in image_ids)
        for image_id, b in zip(image_ids, boxes, strict=True):
            predictions.extend(box_rows(b, names, image_id=image_id, keys=keys, role=CHAMPION, model=row["model"]))
        if shadow is not None:  # the challenger's boxes stay here, never in the clinician's output folder
            for image_id, b in zip(image_ids, shadow.detect(pixels)[0], strict=True):
                predictions.extend(
                    box_rows(
                        b, challenger.class_names, image_id=image_id, keys=keys, role=CHALLENGER, model=shadow_name
                    )
                )

    options = RunOptions("quick", out_dir, dicom_results=False, observer=observe)
    predictor = Predictor(model, params, options)
    shadow, shadow_name = None, ""
    if challenger is not None:
        conf = params.predict.conf if params.predict.conf is not None else challenger.conf
        shadow = Detector(challenger.weights, imgsz=challenger.imgsz, conf=conf, iou=params.predict.iou)
        shadow_name = f"{challenger.name}/{challenger.version}"
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
        # Boxes and images first, features last: a run cut short between the writes reads those studies again (the
        # features decide what is known), and their earlier box rows are replaced, not doubled.
        fresh = {r["study_key"] for r in rows}
        for table, new in ((PREDICTIONS_FILE, pd.DataFrame(predictions, columns=PREDICTION_COLUMNS)),
                           (IMAGES_FILE, pd.DataFrame(images_read))):  # fmt: skip
            old = read_store(store, table)
            old = old[~old["study_key"].isin(fresh)] if len(old) else old
            write_parquet_atomic(pd.concat([old, new], ignore_index=True), store / table)
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(rows)], ignore_index=True), store / FEATURES_FILE)
    kept_now = len(kept) + len(rows)
    return {**counts, "new_rows": len(rows), "already_kept": skipped, "studies_kept": kept_now, "shadow": shadow_name,
            "store": str(store)}  # fmt: skip
