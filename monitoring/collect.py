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

A folder's new studies fan out on the configured engine (`execution:`): on Dask each shard's worker fills its own
copy of the `FeatureCollector` and this process writes the store, in the studies' order, as a local run does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from pipelines.ingest import deid
from pipelines.io import write_parquet_atomic
from pipelines.predict.detector import Boxes, Detector, ForwardState
from pipelines.predict.features import acquisition_metadata, detected_study_row
from pipelines.predict.inputs import StudyInput, group_by_study, read_studies
from pipelines.predict.model import ModelRef, resolve_model
from pipelines.predict.pacs_run import predict_from_pacs
from pipelines.predict.run import Predictor, RunOptions, predict_on_dask, predict_studies
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


class FeatureCollector:
    """The predictor's observer: each new study's feature row, its boxes and images, from the forward pass that
    predicted it (no second forward), and the challenger's boxes on the same images. Picklable (the challenger's
    detector is rebuilt by `bind`), so a Dask worker fills its own copy and sends it back (`absorb`)."""

    def __init__(
        self,
        params: Params,
        model: ModelRef,
        pseudo: deid.Pseudonymizer,
        known: set[str],
        challenger: ModelRef | None = None,
    ) -> None:
        self.pseudo, self.known = pseudo, known
        self.names, self.model_name = model.class_names, f"{model.name}/{model.version}"
        self.band = params.predict.uncertainty_band
        self.site_tag, self.site_map = params.ingest.site_tag, params.ingest.site_map
        self.challenger = challenger
        self.shadow_name = f"{challenger.name}/{challenger.version}" if challenger is not None else ""
        self.conf, self.iou = params.predict.conf, params.predict.iou  # the challenger's too (conf: its own if None)
        self.layers: list[int] = []
        self.rows: list[dict[str, Any]] = []
        self.predictions: list[dict[str, Any]] = []
        self.images_read: list[dict[str, Any]] = []
        self._shadow: Detector | None = None

    def bind(self, predictor: Predictor) -> None:
        """Take the embedding's layers from the predictor that runs, and load the challenger beside it."""
        self.layers = predictor.detector.head.f
        if self.challenger is not None and self._shadow is None:
            c = self.challenger
            self._shadow = Detector(
                c.weights, imgsz=c.imgsz, conf=c.conf if self.conf is None else self.conf, iou=self.iou
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shadow": None}  # a loaded model does not travel; the worker's `bind` loads it

    def __call__(self, study: StudyInput, boxes: list[Boxes], states: list[ForwardState]) -> None:
        pseudo = self.pseudo
        if not study.images or pseudo.study(study.study_uid) in self.known:
            return
        assert self.layers, "bind the collector to the predictor that runs"  # else an empty embedding, silently
        header = study.images[0].dataset
        institution = str(header.get(self.site_tag, "") or "").strip()
        site = self.site_map.get(institution) or (pseudo.site(institution) if institution else "unknown")
        meta = acquisition_metadata(header, site)
        pixels = [im.pixels for im in study.images]
        row = detected_study_row(
            pseudo.study(study.study_uid), meta, pixels, boxes, states, self.names, self.band, self.layers
        )
        row.update(monitored_at=time.time(), model=self.model_name)
        self.rows.append(row)
        self.known.add(row["study_key"])
        patient = pseudo.patient(str(header.get("PatientID", "") or ""), str(header.get("IssuerOfPatientID", "") or ""))
        keys = {"patient_key": patient, "study_key": row["study_key"], "site": site}
        image_ids = [pseudo.image(im.sop_instance_uid) for im in study.images]
        self.images_read.extend({**keys, "image_id": i, "challenger": self.shadow_name} for i in image_ids)
        for image_id, b in zip(image_ids, boxes, strict=True):
            self.predictions.extend(
                box_rows(b, self.names, image_id=image_id, keys=keys, role=CHAMPION, model=row["model"])
            )
        if self._shadow is not None:  # the challenger's boxes stay here, never in the clinician's output folder
            assert self.challenger is not None
            for image_id, b in zip(image_ids, self._shadow.detect(pixels)[0], strict=True):
                self.predictions.extend(
                    box_rows(
                        b,
                        self.challenger.class_names,
                        image_id=image_id,
                        keys=keys,
                        role=CHALLENGER,
                        model=self.shadow_name,
                    )
                )

    def absorb(self, others: Iterable[FeatureCollector]) -> None:
        """Add what other copies collected (the Dask shards, in their studies' order)."""
        for other in others:
            self.rows += other.rows
            self.predictions += other.predictions
            self.images_read += other.images_read
            self.known |= other.known


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
    `challenger` reads the same images in shadow. A folder's studies fan out on the configured engine
    (`execution:`); a PACS is read in this process, study by study."""
    if (source is None) == (pacs_url is None):
        raise ValueError("give exactly one of a source path and a PACS URL")
    model = model or resolve_model(params.predict.model_uri, params)
    key = deid.load_key(params.ingest.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    kept = read_store(store)
    known = set(kept["study_key"]) if "study_key" in kept else set()
    collector = FeatureCollector(params, model, pseudo, known, challenger)
    options = RunOptions("quick", out_dir, dicom_results=False)
    skipped = 0
    if source is not None and params.execution.engine == "dask":
        new, skipped = _new_studies(source, pseudo, known)
        shipped = FeatureCollector(params, model, pseudo, set(), challenger)  # the studies are new: no store to ship
        _, counts, shards = predict_on_dask(params, model, options, source, new, observer=shipped, progress=progress)
        collector.absorb(cast(list[FeatureCollector], shards))  # the copies of `shipped`, back from the shards
    else:
        predictor = Predictor(model, params, replace(options, observer=collector))
        collector.bind(predictor)
        try:
            if pacs_url is not None:  # it keeps which studies this model version read (OUT/pacs_processed.json)
                _, counts = predict_from_pacs(pacs_url, predictor, model.clip_percentiles, progress=progress)
            else:
                assert source is not None
                new, skipped = _new_studies(source, pseudo, known)
                studies = read_studies(source, new, predictor.checks, model.clip_percentiles)
                _, counts = predict_studies(studies, predictor, total=len(new), progress=progress)
        finally:
            predictor.close()
    rows, predictions, images_read = collector.rows, collector.predictions, collector.images_read
    if rows:
        # Boxes and images first, features last: a run cut short between the writes reads those studies again (the
        # features decide what is known), and their earlier box rows are replaced, not doubled.
        fresh = {r["study_key"] for r in rows}
        for table, new_rows in ((PREDICTIONS_FILE, pd.DataFrame(predictions, columns=PREDICTION_COLUMNS)),
                                (IMAGES_FILE, pd.DataFrame(images_read))):  # fmt: skip
            old = read_store(store, table)
            old = old[~old["study_key"].isin(fresh)] if len(old) else old
            write_parquet_atomic(pd.concat([old, new_rows], ignore_index=True), store / table)
        write_parquet_atomic(pd.concat([kept, pd.DataFrame(rows)], ignore_index=True), store / FEATURES_FILE)
    kept_now = len(kept) + len(rows)
    return {**counts, "new_rows": len(rows), "already_kept": skipped, "studies_kept": kept_now,
            "shadow": collector.shadow_name, "store": str(store)}  # fmt: skip


def _new_studies(source: Path, pseudo: deid.Pseudonymizer, known: set[str]) -> tuple[dict[str, list[Path]], int]:
    """The folder's studies not in the store yet (files naming no study have no row to keep), and how many were."""
    groups = group_by_study(source)
    new = {uid: paths for uid, paths in groups.items() if uid and pseudo.study(uid) not in known}
    return new, len(groups) - len(new)
