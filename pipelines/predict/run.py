"""`run_predict`: read studies, detect, triage, explain where the mode says, write results a reading room and a PACS
can use.

Output folder (`--out`, default `reports/predict`), the only place the studies' own identifiers are written:
```
OUT/summary.csv, summary.json           one row per study; the run: counts, model, timings, failures
OUT/studies/<StudyInstanceUID>/result.json   boxes, triage, files and their fate, explanation settings
OUT/studies/<StudyInstanceUID>/heatmaps/*.png  one overlay per detection (xai, or auto where it explains)
OUT/studies/<StudyInstanceUID>/dicom/sr.dcm, capture-NN.dcm  TID 1500 SR; secondary captures of the overlays
```
Logs, Prefect and MLflow see counts and timings only (no UID, name or path of an input).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
from pydicom.uid import generate_uid

from pipelines.contracts import SYNTHETIC_MARKER
from pipelines.execution import chunked, dask_map, workers_of
from pipelines.ingest.files import ImageChecks
from pipelines.io import write_atomic, write_json
from pipelines.predict import cam
from pipelines.predict.detector import Boxes, Detector, ForwardState
from pipelines.predict.inputs import FAILED, NO_SELECTED_IMAGE, NOT_SELECTED, StudyInput, group_by_study, read_studies
from pipelines.predict.model import ModelRef, resolve_model
from pipelines.predict.triage import (
    Finding,
    boxes_to_explain,
    explain_reason,
    level_positions,
    study_triage,
)
from pipelines.progress import Progress, ProgressFn

if TYPE_CHECKING:
    from pipelines.config import Params

log = logging.getLogger(__name__)
STAGE = "predict"
# zlib level 1 with the RLE strategy, as ingestion writes PNGs: about twice as fast as the default on MR images.
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
SUMMARY_COLUMNS = (
    "study_instance_uid", "status", "images", "detections", "compression_suspected", "priority", "levels",
    "explained", "failed_files", "not_selected_files", "result",
)  # fmt: skip


# Called with each study, its kept boxes and the forward state of each image, after the study's results are written:
# how monitoring takes its features from the forward pass that predicted (no second forward).
StudyObserver = Callable[[StudyInput, list[Boxes], list[ForwardState]], None]


class ShardObserver(Protocol):
    """A `StudyObserver` that can go to a Dask worker and come back (monitoring's feature collector): the worker
    binds its copy to the predictor it builds, and the copy returns with what it observed."""

    def __call__(self, study: StudyInput, boxes: list[Boxes], states: list[ForwardState]) -> None: ...

    def bind(self, predictor: Predictor) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    """One invocation's choices (the CLI's flags over params.yaml's `predict:`)."""

    mode: str
    out_dir: Path
    dicom_results: bool = True
    observer: StudyObserver | None = None


class Predictor:
    """The model loaded once, applied study by study."""

    def __init__(self, model: ModelRef, params: Params, options: RunOptions) -> None:
        settings = params.predict
        self.model, self.settings, self.options = model, settings, options
        self.detector = Detector(
            model.weights,
            imgsz=model.imgsz,
            conf=settings.conf if settings.conf is not None else model.conf,
            iou=settings.iou,
            target_layers=settings.xai.layers,
        )
        self.checks = ImageChecks.from_params(params.ingest)
        self.xai_record = {
            "method": settings.xai.method,
            "target_layers": list(self.detector.target_layers),
            "target": "Detect head inputs (neck P3-P5)" if settings.xai.layers is None else "configured layers",
            "gradient_of": "the kept box's class logit at the anchor NMS kept",
            "boxes_mapped": "every box" if options.mode == "xai" else "compression boxes and boxes in the band",
            "overlay_alpha": settings.xai.overlay_alpha,
            "colormap": settings.xai.colormap,
        }
        self._pool: Any = None  # DICOM result processes (predict.dicom_workers)
        self._pending: list[tuple[list[Future[None]], dict[str, Any], Path]] = []
        self.algorithm = None
        if options.dicom_results:
            from pipelines.predict.dicom_results import Algorithm

            self.algorithm = Algorithm(name=model.name, version=model.version, uri=model.uri)

    def study(self, study: StudyInput) -> dict[str, Any]:
        """Detect, triage, explain and write one study's results; returns its summary row and result."""
        mode = self.options.mode
        keep_state = mode != "quick" or self.options.observer is not None
        images = study.images
        boxes, states = [], []
        for start in range(0, len(images), self.settings.batch):
            chunk = [im.pixels for im in images[start : start + self.settings.batch]]
            b, s = self.detector.detect(chunk, keep_state=keep_state)
            boxes += b
            states += s
        names = self.model.class_names
        findings: list[Finding] = []
        levels: list[dict[str, Any]] = []
        for i, b in enumerate(boxes):
            positions = level_positions([tuple(map(float, xy)) for xy in b.xyxy], self.settings.level_names)
            for k in range(len(b)):
                box = tuple(round(float(v), 2) for v in b.xyxy[k])
                findings.append(Finding(i, names[int(b.class_index[k])], float(b.confidence[k]), box))
                levels.append(positions[k])
        triage = study_triage(findings, levels, self.settings.uncertainty_band)
        reason = explain_reason(mode, triage) if images else None
        study_dir = self.options.out_dir / "studies" / _folder_name(study.study_uid)
        maps: list[list[np.ndarray | None]] = [[] for _ in images]
        if reason is not None:
            maps = [
                self.detector.explain(s, b, self.settings.xai.method, only=self._needs_map(b, mode))
                for s, b in zip(states, boxes, strict=True)
            ]
        result = self._result(study, findings, levels, triage, reason)
        for stale in ("heatmaps", "dicom"):  # a re-run in another mode must not leave the last run's files
            shutil.rmtree(study_dir / stale, ignore_errors=True)
        overlays = self._write_heatmaps(study, boxes, maps, result, study_dir)
        job = None
        if self.algorithm is not None and images:
            job = self._dicom_job(study, findings, overlays, result, study_dir)
        self._finish(job, result, study_dir)
        if self.options.observer is not None:
            self.options.observer(study, boxes, states)
        return result

    # -------------------------------------------------------------------------------------------------- results
    def _result(
        self,
        study: StudyInput,
        findings: list[Finding],
        levels: list[dict[str, Any]],
        triage: dict[str, Any],
        reason: str | None,
    ) -> dict[str, Any]:
        failed = [f for f in study.files if f.status == FAILED]
        problems = [f.to_json() for f in failed]
        if not study.images and study.study_uid:  # files with no study at all carry their own reasons
            detail = "no file passed the series rules"
            problems.append({"status": FAILED, "reason": NO_SELECTED_IMAGE, "detail": detail})
        images = []
        for i, im in enumerate(study.images):
            ds = im.dataset
            dets = [
                {
                    "label": f.label,
                    "confidence": round(f.confidence, 4),
                    "box": dict(zip(("x_min", "y_min", "x_max", "y_max"), f.box, strict=True)),
                    "level": lv,
                }
                for f, lv in zip(findings, levels, strict=True)
                if f.image == i
            ]
            images.append(
                {
                    "sop_instance_uid": im.sop_instance_uid,
                    "series_instance_uid": str(ds.SeriesInstanceUID),
                    "sop_class_uid": str(ds.SOPClassUID),
                    "path": im.path,
                    "rows": int(ds.Rows),
                    "columns": int(ds.Columns),
                    "detections": dets,
                }
            )
        synthetic = any(SYNTHETIC_MARKER in str(im.dataset.get("ImageComments", "")).upper() for im in study.images)
        return {
            "study_instance_uid": study.study_uid,
            "status": "failed" if problems else "ok",
            "synthetic": synthetic,
            "model": self.model.to_json(),
            "mode": self.options.mode,
            "triage": triage,
            "explained": reason is not None,
            "explain_reason": reason,
            "xai": self.xai_record if reason is not None else None,
            "images": images,
            "files": [f.to_json() for f in study.files],
            "problems": problems,
        }

    def _needs_map(self, boxes: Boxes, mode: str) -> list[int] | None:
        names = self.model.class_names
        labels = [names[int(c)] for c in boxes.class_index]
        return boxes_to_explain(mode, labels, boxes.confidence.tolist(), self.settings.uncertainty_band)

    def _write_heatmaps(
        self,
        study: StudyInput,
        boxes: list[Boxes],
        maps: list[list[np.ndarray | None]],
        result: dict[str, Any],
        study_dir: Path,
    ) -> dict[tuple[int, int], np.ndarray]:
        """One overlay PNG per explained detection; returns the overlays (for the secondary captures). Encoding
        dominates xai's own cost (about 2.4 ms a PNG here); a writer thread overlapping it with the next study's
        detection gained nothing on 2 cores (the detection uses both), so it stays in line."""
        overlays: dict[tuple[int, int], np.ndarray] = {}
        xai = self.settings.xai
        for i, image_maps in enumerate(maps):
            for k, heat in enumerate(image_maps):
                if heat is None:
                    continue
                det = result["images"][i]["detections"][k]
                over = cam.overlay(
                    study.images[i].pixels, heat, boxes[i].xyxy[k], alpha=xai.overlay_alpha, colormap=xai.colormap
                )
                name = f"heatmaps/image{i + 1:02d}-detection{k + 1:02d}-{det['label']}.png"
                _write_png(study_dir / name, over)
                det["heatmap"] = name
                overlays[(i, k)] = over
        return overlays

    def _dicom_job(
        self,
        study: StudyInput,
        findings: list[Finding],
        overlays: dict[tuple[int, int], np.ndarray],
        result: dict[str, Any],
        study_dir: Path,
    ) -> DicomJob:
        """What the study's DICOM results hold, with UIDs derived from the study and the model version (a re-run
        writes the same objects, so a PACS holds them once); result.json names them."""
        from pipelines.predict.dicom_results import ResultDetection

        version = f"{self.model.name}/{self.model.version}"
        per_image = [
            [ResultDetection(f.label, f.confidence, f.box) for f in findings if f.image == i]
            for i in range(len(study.images))
        ]
        sr_uid = generate_uid(entropy_srcs=[study.study_uid, version, self.options.mode, "sr"])
        dicom: dict[str, Any] = {"sr": "dicom/sr.dcm", "sr_sop_instance_uid": sr_uid, "captures": []}
        captures = []
        for n, ((i, k), over) in enumerate(sorted(overlays.items()), start=1):
            uid = generate_uid(entropy_srcs=[study.study_uid, version, "capture", str(i), str(k)])
            name = f"dicom/capture-{n:02d}.dcm"
            result["images"][i]["detections"][k]["capture"] = {"path": name, "sop_instance_uid": uid}
            dicom["captures"].append(name)
            captures.append((i, k, over, uid, name))
        result["dicom"] = dicom
        return DicomJob(
            study_dir=study_dir,
            headers=[im.dataset for im in study.images],
            detections=per_image,
            algorithm=self.algorithm,
            sr_series=generate_uid(entropy_srcs=[study.study_uid, version, "sr-series"]),
            sr_uid=sr_uid,
            sr_series_number=self.settings.sr_series_number,
            capture_series=generate_uid(entropy_srcs=[study.study_uid, version, "capture-series"]),
            capture_series_number=self.settings.capture_series_number,
            captures=captures,
            method=self.settings.xai.method,
        )

    # ------------------------------------------------------------------------------------ finishing a study
    def _finish(self, job: DicomJob | None, result: dict[str, Any], study_dir: Path) -> None:
        """Write or queue the study's DICOM results; result.json follows them (it never names a file not yet
        written).

        The DICOM results are built here, or in worker processes when `predict.dicom_workers` > 0 (highdicom
        builds an SR in pure Python, several times slower than the detection: workers overlap it with the next
        studies on a machine with cores to spare). At most 2 x workers studies wait, so memory stays bounded.
        """
        waits: list[Future[None]] = []
        if job is not None:
            if self.settings.dicom_workers == 0:
                write_dicom_results(job)
            else:
                if self._pool is None:
                    import multiprocessing as mp
                    from concurrent.futures import ProcessPoolExecutor

                    context = mp.get_context("spawn")
                    self._pool = ProcessPoolExecutor(self.settings.dicom_workers, mp_context=context)
                waits.append(self._pool.submit(write_dicom_results, job))
        self._pending.append((waits, result, study_dir))
        while len(self._pending) > 2 * self.settings.dicom_workers:
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        waits, result, study_dir = self._pending.pop(0)
        for future in waits:
            future.result()  # a failure here is a bug (or a full disk), not bad input: it stops the run loudly
        write_json(study_dir / "result.json", result)

    def wait(self, result: dict[str, Any] | None = None) -> None:
        """Finish pending studies: all of them, or up to and including the one whose result is `result`."""
        while self._pending:
            done_now = self._pending[0][1] is result
            self._complete_oldest()
            if done_now:
                return

    def close(self) -> None:
        """Finish every pending study and stop the workers."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None


@dataclass(frozen=True)
class DicomJob:
    """One study's DICOM results to build and write: picklable, so a worker process can do it."""

    study_dir: Path
    headers: list[Any]  # pydicom Datasets, pixel data dropped
    detections: list[list[Any]]  # ResultDetection per image
    algorithm: Any
    sr_series: str
    sr_uid: str
    sr_series_number: int
    capture_series: str
    capture_series_number: int
    captures: list[tuple[int, int, np.ndarray, str, str]]  # image, detection, overlay, SOP instance UID, path
    method: str


def write_dicom_results(job: DicomJob) -> None:
    """The TID 1500 SR of the study and a secondary capture per overlay, written under job.study_dir."""
    from pipelines.predict.dicom_results import heatmap_capture, structured_report

    sr = structured_report(
        list(zip(job.headers, job.detections, strict=True)),
        job.algorithm,
        series_uid=job.sr_series,
        series_number=job.sr_series_number,
        sop_instance_uid=job.sr_uid,
    )
    _save(sr, job.study_dir / "dicom" / "sr.dcm")
    for n, (i, k, overlay, uid, name) in enumerate(job.captures, start=1):
        sc = heatmap_capture(
            job.headers[i],
            overlay,
            job.detections[i][k],
            job.algorithm,
            series_uid=job.capture_series,
            series_number=job.capture_series_number,
            instance_number=n,
            method=job.method,
            sop_instance_uid=uid,
        )
        _save(sc, job.study_dir / name)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", rgb[..., ::-1], PNG_FAST)
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported arrays
        raise RuntimeError("PNG encoding of a heatmap failed")
    write_atomic(path, png.tobytes())


def _save(ds: Any, path: Path) -> None:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    write_atomic(path, buf.getvalue())


def _folder_name(study_uid: str) -> str:
    """The study's folder: its UID (what the hospital matches results on); files with no study go to `_no_study`."""
    return study_uid if study_uid else "_no_study"


def _summary_row(result: dict[str, Any]) -> dict[str, Any]:
    triage = result["triage"]
    files = result["files"]
    return {
        "study_instance_uid": result["study_instance_uid"],
        "status": result["status"],
        "images": len(result["images"]),
        "detections": sum(len(im["detections"]) for im in result["images"]),
        "compression_suspected": triage["compression_suspected"],
        "priority": triage["priority"],
        "levels": ";".join(lv["level"] for lv in triage["levels"]),
        "explained": result["explained"],
        "failed_files": sum(1 for f in files if f["status"] == FAILED),
        "not_selected_files": sum(1 for f in files if f["status"] == NOT_SELECTED),
        "result": f"studies/{_folder_name(result['study_instance_uid'])}/result.json",
    }


def write_summary(rows: list[dict[str, Any]], run: dict[str, Any], out_dir: Path) -> None:
    """summary.csv (a worklist: most urgent first) and summary.json (the run)."""
    ordered = sorted(rows, key=lambda r: (r["status"] != "failed", -float(r["priority"])))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(ordered)
    write_atomic(out_dir / "summary.csv", buf.getvalue().encode())
    write_json(out_dir / "summary.json", {**run, "worklist": ordered})


def predict_studies(
    studies: Iterable[StudyInput],
    predictor: Predictor,
    *,
    total: int | None,
    progress: ProgressFn | None = None,
    on_result: Callable[[StudyInput, dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the predictor over studies; summary rows and run counts (no identity in what is logged)."""
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    n_images = n_explained = n_failed = 0
    synthetic = False
    for done, study in enumerate(studies, start=1):
        result = predictor.study(study)
        if on_result is not None:
            on_result(study, result)
        rows.append(_summary_row(result))
        synthetic = synthetic or bool(result["synthetic"])
        n_images += len(study.images)
        n_explained += int(result["explained"])
        n_failed += int(result["status"] == "failed")
        if progress is not None:
            rate = n_images / max(time.perf_counter() - started, 1e-9)
            detail = f"{n_images} images, {rate:.1f} images/s, {n_explained} explained, {n_failed} with problems"
            progress(Progress(STAGE, done, total, "study", detail=detail))
    predictor.wait()  # DICOM results still being written in workers
    return rows, _run_counts(rows, n_images, n_explained, n_failed, synthetic, time.perf_counter() - started)


def _run_counts(
    rows: list[dict[str, Any]], n_images: int, n_explained: int, n_failed: int, synthetic: bool, seconds: float
) -> dict[str, Any]:
    return {
        "studies": len(rows),
        "images": n_images,
        "explained": n_explained,
        "suspected": sum(1 for r in rows if r["compression_suspected"]),
        "failed": n_failed,
        "seconds": round(seconds, 3),
        "images_per_second": round(n_images / seconds, 2) if seconds > 0 else None,
        "synthetic_note": "SYNTHETIC phantom studies" if synthetic else None,
    }


@dataclass(frozen=True)
class StudyShard:
    """One Dask task's studies of a folder, with what another process needs to predict them: picklable (the run's
    options without callables, the model by its local files, the observer a `ShardObserver`)."""

    params: Params
    model: ModelRef
    mode: str
    out_dir: Path
    dicom_results: bool
    source: Path
    groups: dict[str, list[Path]]
    observer: ShardObserver | None = None


@dataclass(frozen=True)
class ShardResult:
    """A shard's summary rows (in its studies' order), its counts, and its observer with what it observed."""

    rows: list[dict[str, Any]]
    counts: dict[str, Any]
    observer: ShardObserver | None


def predict_shard(shard: StudyShard) -> ShardResult:
    """Predict one shard's studies as the local run does (same reader, predictor and study folders); on a worker."""
    # No DICOM result pool: the Dask workers are the parallelism, and a worker process is daemonic (no children).
    predict = shard.params.predict.model_copy(update={"dicom_workers": 0})
    params = shard.params.model_copy(update={"predict": predict})
    options = RunOptions(shard.mode, shard.out_dir, shard.dicom_results, shard.observer)
    predictor = Predictor(shard.model, params, options)
    if shard.observer is not None:
        shard.observer.bind(predictor)
    try:
        studies = read_studies(shard.source, shard.groups, predictor.checks, shard.model.clip_percentiles)
        rows, counts = predict_studies(studies, predictor, total=len(shard.groups))
    finally:
        predictor.close()
    return ShardResult(rows, counts, shard.observer)


def predict_on_dask(
    params: Params,
    model: ModelRef,
    options: RunOptions,
    source: Path,
    groups: dict[str, list[Path]],
    *,
    observer: ShardObserver | None = None,
    progress: ProgressFn | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[ShardObserver]]:
    """`read_studies` and `predict_studies` over a folder's `groups` on Dask (`params.execution`): the studies in
    shards (`execution.chunks_per_worker` per worker), one Predictor per shard, each writing its studies' folders
    as the local run does. Returns the summary rows in `groups`' order, the run's counts and each shard's copy of
    `observer` (in shard order). Paths go out absolute: the workers of a real cluster need them at the same place.
    Paths and UIDs travel as task inputs, which Prefect does not store (only the chunk task runs and their states).
    """
    started = time.perf_counter()
    execution = params.execution
    shipped = replace(model, weights=model.weights.absolute())
    out_dir, root = options.out_dir.absolute(), source.absolute()
    items = [(uid, [p.absolute() for p in paths]) for uid, paths in groups.items()]
    shards = [
        StudyShard(params, shipped, options.mode, out_dir, options.dicom_results, root, dict(chunk), observer)
        for chunk in chunked(items, workers_of(execution) * execution.chunks_per_worker)
    ]
    done = {"studies": 0, "images": 0, "explained": 0, "failed": 0}

    def finished(results: list[ShardResult]) -> None:  # per shard, as it finishes: the progress of the run
        for result in results:
            for key in done:
                done[key] += result.counts[key]
        assert progress is not None
        images, explained, failed = done["images"], done["explained"], done["failed"]
        rate = images / max(time.perf_counter() - started, 1e-9)
        detail = f"{images} images, {rate:.1f} images/s, {explained} explained, {failed} with problems"
        progress(Progress(STAGE, done["studies"], len(groups), "study", detail=detail))

    results = (
        dask_map(predict_shard, shards, execution, name="predict-studies", on_chunk=finished if progress else None)
        if shards
        else []
    )
    rows = [row for result in results for row in result.rows]
    counts = _run_counts(
        rows,
        sum(r.counts["images"] for r in results),
        sum(r.counts["explained"] for r in results),
        sum(r.counts["failed"] for r in results),
        any(r.counts["synthetic_note"] for r in results),
        time.perf_counter() - started,
    )
    return rows, counts, [r.observer for r in results if r.observer is not None]


def run_predict(
    params: Params,
    source: Path | None = None,
    *,
    out_dir: Path | None = None,
    mode: str | None = None,
    model_uri: str | None = None,
    pacs_url: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Predict on a DICOM file, study folder or tree (`source`), or on new studies of a DICOMweb PACS (`pacs_url`).

    Returns summary.json's content; its `failed` counts studies with a problem (a failed file, no selected image).
    A folder's studies fan out on the configured engine (`execution:`, `predict_on_dask` for `dask`); a PACS is
    read in this process, study by study (its fetch, store-back and record of what was read are sequential).

    Raises:
        ModelError: the model cannot be found or read.
        PredictInputError: source missing or empty.
        PacsError: the PACS cannot be reached.
    """
    settings = params.predict
    mode = mode or settings.mode
    if mode not in ("quick", "xai", "auto"):
        raise ValueError(f"mode must be quick, xai or auto, got {mode!r}")
    if (source is None) == (pacs_url is None):
        raise ValueError("give exactly one of a source path and a PACS URL")
    out_dir = out_dir or params.paths.reports_dir / STAGE
    model = resolve_model(model_uri or settings.model_uri, params)
    options = RunOptions(mode, out_dir, settings.dicom_results)
    if source is not None and params.execution.engine == "dask":
        rows, counts, _ = predict_on_dask(params, model, options, source, group_by_study(source), progress=progress)
    else:
        predictor = Predictor(model, params, options)
        clip = model.clip_percentiles
        try:
            rows, counts = _predict_all(predictor, source, pacs_url, clip, progress)
        finally:
            predictor.close()
    run = {
        "stage": STAGE,
        "mode": mode,
        "model": model.to_json(),
        "source": "pacs" if pacs_url else "folder",
        **counts,
    }
    write_summary(rows, run, out_dir)
    log.info(
        "predict: %d studies, %d images, %d suspected, %d explained, %d with problems, %.1f images/s",
        counts["studies"], counts["images"], counts["suspected"], counts["explained"], counts["failed"],
        counts["images_per_second"] or 0.0,
    )  # fmt: skip
    return {**run, "out_dir": str(out_dir)}


def _predict_all(
    predictor: Predictor,
    source: Path | None,
    pacs_url: str | None,
    clip: tuple[float, float],
    progress: ProgressFn | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if pacs_url is not None:
        from pipelines.predict.pacs_run import predict_from_pacs

        return predict_from_pacs(pacs_url, predictor, clip, progress=progress)
    assert source is not None
    groups = group_by_study(source)
    studies = read_studies(source, groups, predictor.checks, clip)
    return predict_studies(studies, predictor, total=len(groups), progress=progress)
