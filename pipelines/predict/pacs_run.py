"""`cordwatch predict --pacs URL`: new studies from a DICOMweb PACS through the same predictor, results stored back.

For each MR study on the server that this model version has not read yet: fetch its MR images (WADO-RS) into a
scratch folder inside the output folder, read them exactly as a folder is read (`read_studies`), predict, then
store the study's SR and heatmap captures back into the same study (STOW-RS) and delete the scratch copy. What
was read, by which model version, is kept in `OUT/pacs_processed.json` (inside the output folder, as it names
studies); a newer model version reads every study again. A study that cannot be fetched or stored is a failed
study with its reason; the others still run. A server that cannot be searched at all raises PacsError.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom

from pipelines.io import write_json
from pipelines.predict.inputs import FAILED, StudyInput, group_by_study, read_studies
from pipelines.predict.pacs import DicomWebPacs, PacsError
from pipelines.progress import ProgressFn

if TYPE_CHECKING:
    from pipelines.predict.run import Predictor

PROCESSED_FILE = "pacs_processed.json"
SCRATCH_DIR = ".incoming"


def _processed(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = out_dir / PROCESSED_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a file cut short by a kill: read everything again rather than skip blindly
        return {}


def predict_from_pacs(
    url: str, predictor: Predictor, clip: tuple[float, float], *, progress: ProgressFn | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the PACS's new studies; returns predict_studies' rows and counts (plus `stored` and `skipped`)."""
    from pipelines.predict.run import predict_studies

    out_dir = predictor.options.out_dir
    pacs = DicomWebPacs(url)
    model_key = f"{predictor.model.name}/{predictor.model.version}"
    done = _processed(out_dir)
    refs = pacs.find_studies(modality="MR")
    todo = [r.study_uid for r in refs if done.get(r.study_uid, {}).get("model") != model_key]
    fetch_problems: dict[str, str] = {}
    stored = 0

    def studies() -> Iterator[StudyInput]:
        for n, study_uid in enumerate(todo):
            scratch = out_dir / SCRATCH_DIR / f"{n:06d}"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                pacs.fetch_study(study_uid, scratch)
                groups = group_by_study(scratch) if any(scratch.iterdir()) else {}
            except (PacsError, OSError) as exc:
                fetch_problems[study_uid] = str(exc)
                groups = {}
            found = list(read_studies(scratch, groups, predictor.checks, clip)) if groups else []
            # One study asked for, one study out (an instance naming another study would be a server error).
            study = next((s for s in found if s.study_uid == study_uid), StudyInput(study_uid))
            for other in (s for s in found if s.study_uid != study_uid):
                study.files += other.files
            yield study
            shutil.rmtree(scratch, ignore_errors=True)

    def store_back(study: StudyInput, result: dict[str, Any]) -> None:
        nonlocal stored
        study_dir = out_dir / "studies" / study.study_uid
        problem = fetch_problems.get(study.study_uid)
        sent = 0
        if problem is None and result.get("dicom"):
            predictor.wait(result)  # its SR and captures written
            objects = [study_dir / result["dicom"]["sr"]] + [study_dir / p for p in result["dicom"]["captures"]]
            try:
                pacs.store([pydicom.dcmread(p) for p in objects])
                sent = len(objects)
            except PacsError as exc:
                problem = str(exc)
        result["pacs"] = {"fetched": study.study_uid not in fetch_problems, "stored": sent}
        if problem is not None:
            result["status"] = FAILED
            result["problems"].append({"status": FAILED, "reason": "pacs", "detail": problem})
        else:
            done[study.study_uid] = {"model": model_key, "mode": predictor.options.mode, "at": time.time()}
            write_json(out_dir / PROCESSED_FILE, done)
        stored += sent
        write_json(study_dir / "result.json", result)

    rows, counts = predict_studies(studies(), predictor, total=len(todo), progress=progress, on_result=store_back)
    shutil.rmtree(out_dir / SCRATCH_DIR, ignore_errors=True)
    return rows, {**counts, "stored": stored, "skipped_already_read": len(refs) - len(todo)}
