"""Ingest a DICOM tree (+ optional annotations.csv) into the de-identified dataset described in DESIGN.md.

Guarantees:
- every input file and every annotation row gets exactly one manifest row, `ok` or `quarantined` with a reason;
  the totals are checked at the end of every run (`AccountingError` if they ever disagree);
- re-running on the same input yields byte-identical outputs and no duplicates;
- a run killed half way resumes: each finished file is journaled (outside the dataset) and skipped next time;
- no identity leaves this stage: outputs hold pseudonymous keys and de-identified acquisition facts only.
  The one file that maps pseudonymous source ids back to input paths is written under the local state directory,
  never into the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipelines.contracts import (
    ANNOTATION_TABLE_COLUMNS,
    ANNOTATIONS_TABLE,
    IMAGE_COLUMNS,
    IMAGES_DIR,
    IMAGES_TABLE,
    LABELS_DIR,
    MANIFEST_COLUMNS,
    MANIFEST_TABLE,
)
from pipelines.execution import fan_out
from pipelines.ingest import deid
from pipelines.ingest.annotations import (
    AnnotationFileError,
    ImageRef,
    check_annotations,
    read_annotations,
)
from pipelines.ingest.files import DUPLICATE_SOP, FileOutcome, FileSettings, ImageChecks, process_file
from pipelines.io import write_atomic, write_json, write_parquet_atomic
from pipelines.labels import yolo_lines

if TYPE_CHECKING:  # the whole params arrive from the caller; importing config here would be a cycle
    from pipelines.config import Params
    from pipelines.settings import ExecutionParams

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

# Below this many files, worker start-up costs more than it saves.
_MIN_FILES_FOR_POOL = 64


class AccountingError(RuntimeError):
    """Inputs in != ok + quarantined: a bug, never expected; the run refuses to claim success."""


class IngestInputError(ValueError):
    """The input as a whole is unusable (missing folder, unreadable annotations file)."""


@dataclass
class IngestSummary:
    """What one run did."""

    files: int
    ok: int
    quarantined: dict[str, int]
    annotations: int
    annotations_ok: int
    annotations_quarantined: dict[str, int]
    reused: int
    seconds: float
    output_dir: Path
    synthetic: bool = False
    patients: int = 0
    sites: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """The one-line summary printed at the end of every run."""
        q = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        a = f"; annotations {self.annotations_ok}/{self.annotations} ok" if self.annotations else ""
        aq = ", ".join(f"{k} {v}" for k, v in sorted(self.annotations_quarantined.items()))
        return (
            f"ingest: {self.files} files, {self.ok} ok, {sum(self.quarantined.values())} quarantined ({q}){a}"
            + (f" (quarantined: {aq})" if aq else "")
            + f"; {self.images_per_second:.1f} files/s"
            + (f", {self.reused} resumed from journal" if self.reused else "")
            + (" [SYNTHETIC phantom data]" if self.synthetic else "")
        )

    def counts(self) -> dict[str, object]:
        """Deterministic counts (no timings): the ingest report's summary.json, a DVC metric."""
        return {
            "files": self.files,
            "ok": self.ok,
            "quarantined": dict(sorted(self.quarantined.items())),
            "annotations": self.annotations,
            "annotations_ok": self.annotations_ok,
            "annotations_quarantined": dict(sorted(self.annotations_quarantined.items())),
            "patients": self.patients,
            "images_per_site": dict(sorted(self.sites.items())),
            "synthetic": self.synthetic,
        }


def iter_files(root: Path) -> list[Path]:
    """Every regular file under root, any depth, sorted (the order fixes which duplicate wins)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in filenames)
    return sorted(found)


class Journal:
    """Append-only record of finished files, so a killed run resumes instead of starting over.

    Keyed on the source id plus size, mtime and the hash of the settings that shape outputs: change any and the
    file is processed again. Lives in the local state directory (it maps to input files) and holds no identity.
    """

    def __init__(self, path: Path, settings_hash: str) -> None:
        self.path = path
        self.settings_hash = settings_hash
        self.entries: dict[str, FileOutcome] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:  # a line cut short by a kill is just ignored
                    rec = json.loads(line)
                    if rec.pop("settings") == settings_hash:
                        out = FileOutcome.from_json(rec)
                        self.entries[out.source_id] = out
                except (ValueError, KeyError, TypeError):
                    continue
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def reusable(self, source_id: str, path: Path, images_dir: Path) -> FileOutcome | None:
        entry = self.entries.get(source_id)
        if entry is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != (entry.size_bytes, entry.mtime_ns):
            return None
        if entry.status == "ok":
            png = images_dir / f"{entry.image_id}.png"
            if not png.is_file() or entry.image is None:
                return None
            if hashlib.sha256(png.read_bytes()).hexdigest() != entry.image["image_sha256"]:
                return None
        return entry

    def add(self, outcome: FileOutcome) -> None:
        self._fh.write(json.dumps({**outcome.to_json(), "settings": self.settings_hash}) + "\n")
        self._fh.flush()

    def compact(self, outcomes: list[FileOutcome]) -> None:
        """Close, then rewrite the file as exactly the current outcomes (drops stale and superseded lines)."""
        self.close()
        body = "".join(json.dumps({**o.to_json(), "settings": self.settings_hash}) + "\n" for o in outcomes)
        write_atomic(self.path, body.encode())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _process_all(
    paths: list[Path], root: Path, settings: FileSettings, workers: int, execution: ExecutionParams
) -> Iterator[FileOutcome]:
    """Process files in input order on the configured engine: locally in a spawn-started pool of `workers` when it
    pays (below `_MIN_FILES_FOR_POOL` files one by one is faster), or on Dask (`execution.engine`)."""
    local = workers if len(paths) >= _MIN_FILES_FOR_POOL else 1
    yield from fan_out(_process_star, [(p, root, settings) for p in paths], execution, name="ingest-files",
                       local_workers=local)  # fmt: skip


def _process_star(args: tuple[Path, Path, FileSettings]) -> FileOutcome:
    return process_file(*args)


def run_ingest(
    params: Params,
    input_dir: Path,
    output_dir: Path,
    annotations_csv: Path | None = None,
    *,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest `input_dir` into `output_dir`; its counts go to `reports/ingest/summary.json` (a DVC metric).

    Args:
        params: validated params (the `ingest` and `paths` sections are used).
        input_dir: a DICOM tree of any depth; non-DICOM files are quarantined, not skipped.
        output_dir: the ingested dataset (images/, labels/ and the three parquet tables).
        annotations_csv: reader annotations per DESIGN.md; None for image-only ingestion (e.g. prospective data).
        progress: called as progress(done, total) after each file.

    Raises:
        IngestInputError: the input folder or the annotations file as a whole is unusable.
        AccountingError: inputs in != ok + quarantined (never expected).
    """
    start = time.perf_counter()
    cfg = params.ingest
    if not input_dir.is_dir():
        raise IngestInputError(f"input folder not found: {input_dir}")
    ann_df = None
    if annotations_csv is not None:
        if not annotations_csv.is_file():
            raise IngestInputError(f"annotations file not found: {annotations_csv}")
        try:
            ann_df = read_annotations(annotations_csv)
        except AnnotationFileError as exc:
            raise IngestInputError(str(exc)) from exc

    state = params.paths.state_dir / "ingest"
    key = deid.load_key(cfg.pseudonym_key_env, params.paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    images_dir = output_dir / IMAGES_DIR
    staging = output_dir / ".staging"
    for d in (images_dir, staging, state):
        d.mkdir(parents=True, exist_ok=True)

    checks = ImageChecks.from_params(cfg)
    settings = FileSettings(
        **{f.name: getattr(checks, f.name) for f in fields(ImageChecks)},
        key=key,
        site_tag=cfg.site_tag,
        site_map=dict(cfg.site_map),
        png_compress_level=cfg.png_compress_level,
        staging_dir=staging,
    )
    # The key is part of the journal's settings hash via a digest, so a new key re-derives every pseudonym.
    # So is the images table's column list: a journaled row of an older contract lacks the new columns.
    schema = hashlib.sha256(",".join(IMAGE_COLUMNS).encode()).hexdigest()[:8]
    settings_hash = cfg.output_hash() + pseudo.source("journal-key-check")[1:9] + schema
    journal = Journal(state / "journal.jsonl", settings_hash)

    paths = iter_files(input_dir)
    total = len(paths)
    outcomes: dict[int, FileOutcome] = {}
    todo: list[tuple[int, Path]] = []
    for i, p in enumerate(paths):
        reused = journal.reusable(pseudo.source(p.relative_to(input_dir).as_posix()), p, images_dir)
        if reused is not None:
            outcomes[i] = reused
        else:
            todo.append((i, p))
    n_reused = len(outcomes)
    done = n_reused
    if progress:
        progress(done, total)
    # image_id -> input index of the file that owns it; the first in path order wins, later copies are duplicates.
    owner: dict[str, int] = {}
    for i, o in sorted(outcomes.items()):
        if o.status == "ok" and o.image_id is not None:
            owner.setdefault(o.image_id, i)
    try:
        results = _process_all([p for _, p in todo], input_dir, settings, cfg.workers, params.execution)
        for (i, _), outcome in zip(todo, results, strict=True):
            if outcome.status == "ok":  # promote now, so the journal never records an image that is not in place
                staged = staging / f"{outcome.source_id}.png"
                assert outcome.image_id is not None
                if owner.get(outcome.image_id, i) >= i:
                    owner[outcome.image_id] = i
                    os.replace(staged, images_dir / f"{outcome.image_id}.png")
                else:
                    staged.unlink(missing_ok=True)
            journal.add(outcome)
            outcomes[i] = outcome
            done += 1
            if progress:
                progress(done, total)
    finally:
        journal.close()
    journal.compact([outcomes[i] for i in range(total)])  # raw outcomes: duplicates are decided afresh each run
    ordered = _mark_duplicates([outcomes[i] for i in range(total)])

    ok = [o for o in ordered if o.status == "ok"]
    images = pd.DataFrame(
        [{**o.image, "image_path": f"{IMAGES_DIR}/{o.image_id}.png"} for o in ok], columns=list(IMAGE_COLUMNS)
    )
    if not images.empty:
        images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    _remove_stale_images(images_dir, {o.image_id for o in ok})
    shutil.rmtree(staging, ignore_errors=True)

    manifest_rows: list[dict[str, object]] = [
        {
            "kind": "file",
            "source_id": o.source_id,
            "status": o.status,
            "reason": o.reason,
            "detail": o.detail,
            "image_id": o.image_id if o.status == "ok" else None,
            "sha256": o.sha256,
            "size_bytes": o.size_bytes,
        }
        for o in ordered
    ]
    ann_table = pd.DataFrame(columns=list(ANNOTATION_TABLE_COLUMNS))
    ann_counts: Counter[str] = Counter()
    n_ann = n_ann_ok = 0
    refs = (
        {
            r.image_id: ImageRef(r.image_id, r.patient_key, int(r.rows), int(r.columns))
            for r in images.itertuples(index=False)
        }
        if not images.empty
        else {}
    )
    if ann_df is not None:
        quarantined_ids = {o.image_id for o in ordered if o.status != "ok" and o.image_id}
        result = check_annotations(ann_df, pseudo.image, refs, quarantined_ids, params.readers)
        ann_table = result.accepted
        for m in result.manifest:
            manifest_rows.append({**m, "sha256": None, "size_bytes": None})
            if m["status"] == "ok":
                n_ann_ok += 1
            else:
                ann_counts[str(m["reason"])] += 1
        n_ann = len(result.manifest)
        if n_ann != len(ann_df):
            raise AccountingError(f"{len(ann_df)} annotation rows in, {n_ann} manifest rows out")
    _write_labels(output_dir / LABELS_DIR, ann_table, refs)

    manifest = pd.DataFrame(manifest_rows, columns=list(MANIFEST_COLUMNS))
    manifest = manifest.sort_values(["kind", "source_id"], kind="stable").reset_index(drop=True)
    n_file_rows = int((manifest["kind"] == "file").sum()) if not manifest.empty else 0
    n_ok = len(ok)
    q_counts = Counter(o.reason for o in ordered if o.status != "ok")
    if n_file_rows != total or n_ok + sum(q_counts.values()) != total:
        raise AccountingError(f"{total} files in, {n_ok} ok + {sum(q_counts.values())} quarantined out")

    write_parquet_atomic(images, output_dir / IMAGES_TABLE)
    write_parquet_atomic(ann_table, output_dir / ANNOTATIONS_TABLE)
    write_parquet_atomic(manifest, output_dir / MANIFEST_TABLE)
    _write_sources(state / "sources.csv", ordered)

    summary = IngestSummary(
        files=total,
        ok=n_ok,
        quarantined=dict(q_counts),
        annotations=n_ann,
        annotations_ok=n_ann_ok,
        annotations_quarantined=dict(ann_counts),
        reused=n_reused,
        seconds=time.perf_counter() - start,
        output_dir=output_dir,
        synthetic=bool(not images.empty and images["is_synthetic"].any()),
        patients=int(images["patient_key"].nunique()) if not images.empty else 0,
        sites={str(k): int(v) for k, v in images["site"].value_counts().items()} if not images.empty else {},
    )
    write_json(params.paths.summary_file("ingest"), summary.counts())  # the stage's DVC metric
    return summary


def _mark_duplicates(ordered: list[FileOutcome]) -> list[FileOutcome]:
    """The first file (in path order) with a given SOP Instance UID wins; later copies are quarantined."""
    first: dict[str, str] = {}
    result = []
    for o in ordered:
        if o.status == "ok" and o.image_id is not None:
            if o.image_id in first:
                detail = f"same SOP Instance UID as source {first[o.image_id]}"
                o = replace(o, status="quarantined", reason=DUPLICATE_SOP, detail=detail, image=None)
            else:
                first[o.image_id] = o.source_id
        result.append(o)
    return result


def _remove_stale_images(images_dir: Path, keep: set[str | None]) -> None:
    for p in images_dir.iterdir():
        if (p.suffix == ".png" and p.stem not in keep) or p.name.endswith(".tmp"):
            p.unlink()


def _write_labels(labels_dir: Path, ann: pd.DataFrame, refs: dict[str, ImageRef]) -> None:
    """Per-reader YOLO label files, built aside and swapped in whole."""
    tmp = labels_dir.with_name(labels_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if not ann.empty:
        for (reader, image_id), boxes in ann.groupby(["reader_id", "image_id"], sort=True):
            ref = refs[str(image_id)]
            d = tmp / str(reader)
            d.mkdir(exist_ok=True)
            (d / f"{image_id}.txt").write_text(yolo_lines(boxes, ref.rows, ref.columns), encoding="utf-8")
    old = labels_dir.with_name(labels_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if labels_dir.exists():
        labels_dir.rename(old)
    tmp.rename(labels_dir)
    shutil.rmtree(old, ignore_errors=True)


def _write_sources(path: Path, ordered: list[FileOutcome]) -> None:
    """Local-only map from pseudonymous source ids to input paths, so an operator can act on a quarantine entry.

    Input paths may contain identity (PACS exports name folders after patients), so this file never leaves the
    state directory and is not part of the dataset.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source_id", "relative_path", "status", "reason", "detail"])
        for o in ordered:
            w.writerow([o.source_id, o.relpath, o.status, o.reason, o.detail])
    os.replace(tmp, path)
