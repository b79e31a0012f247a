"""Generate a synthetic two-centre cohort of sagittal T2 cervical spine DICOM phantoms and reader boxes.

Streaming and order independent: each patient is planned from its own random streams, seeded from (seed,
profile, site, patient index, stream), then its files are written and its annotation rows appended before the
next patient is touched. Only per-site slice counts (a few integers a patient) and the list of written paths
are held in memory.

Output (see `generate_cohort`):
    <out_dir>/dicom/<site folder>/<PatientID>/<StudyDate>_MR_CSPINE/SE<nnn>_<description>/<InstanceNumber>.dcm
    <out_dir>/annotations.csv   one row per reader box (expert reference + mid and junior physicians)
    <out_dir>/cohort.csv        per-image ground truth, distractors included (is_distractor)
    <out_dir>/SYNTHETIC_DATA_README.txt
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipelines.synth.anatomy import Anatomy, sample_anatomy
from pipelines.synth.dicom_io import (
    AXIAL_IOP,
    SAGITTAL_IOP,
    SYNTHETIC_COMMENT,
    Equipment,
    Identity,
    SeriesInfo,
    build_dataset,
    uid,
    write_atomic,
    write_text_atomic,
)
from pipelines.synth.params import LEVEL_NAMES, ScannerParams, SiteParams, SynthParams, SynthProfile
from pipelines.synth.readers import ANNOTATION_HEADER, level_ambiguity, read_image
from pipelines.synth.render import (
    SliceGeometry,
    acquire,
    blur_for_thickness,
    frame_to_pixels,
    level_boxes,
    nominal_snr,
    render_axial,
    render_sagittal,
    sample_acquisition,
    sample_artefacts,
    tissue_signal,
)

COHORT_HEADER: tuple[str, ...] = (
    "sop_instance_uid",
    "patient_id",
    "site",
    "manufacturer",
    "model",
    "field_strength",
    "n_compressed_levels",
    "max_severity",
    "is_distractor",
    "series_kind",
    "series_description",
    "rows",
    "columns",
    "pixel_spacing",
    "compressed_levels",
    "rel_path",
    "grades",
    "lookalikes",
    "slice_offset_mm",
    "motion",
    "wrap",
    "canal",
    "curvature",
)
README_NAME = "SYNTHETIC_DATA_README.txt"

# Random streams of one patient; readers use READER_STREAM + their index.
_S_IDENTITY, _S_ANATOMY, _S_SCANNER, _S_DISTRACTOR, _S_PIXELS, READER_STREAM = 0, 1, 2, 3, 4, 100
_S_ARTEFACT = 5  # scanner artefacts (ghosts, wrap): its own stream, so the pixel-noise draws do not shift
_S_SITE = 10_000  # site-level stream (slice counts); never collides with a patient's streams
_SERIES_T1, _SERIES_T2, _SERIES_AX = 2, 3, 4
_NOMINAL_CENTRE_INSTANCE = 8  # the kept slices are the middle of a nominal 15-slice sagittal series

_FIRST = (
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "WEI",
    "FATIMA",
    "HIROSHI",
    "AMARA",
    "LUCA",
    "SOFIA",
    "OMAR",
    "INGRID",
    "RAJ",
    "CHLOE",
    "MATEO",
    "NADIA",
)
_LAST = (
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "CHEN",
    "NAKAMURA",
    "OKAFOR",
    "ROSSI",
    "MULLER",
    "KOWALSKI",
    "NGUYEN",
    "PATEL",
    "SILVA",
    "DUBOIS",
)
_DOCTORS = (
    "WALSH^MARGARET^^DR",
    "OKONKWO^DANIEL^^DR",
    "HARTMANN^ERIK^^DR",
    "SATO^YUKI^^DR",
    "BENNETT^CLAIRE^^DR",
    "IBRAHIM^SAMIR^^DR",
    "FOSTER^HELEN^^DR",
    "MORENO^PABLO^^DR",
)


@dataclass(frozen=True)
class CohortSummary:
    """What `generate_cohort` wrote.

    Attributes:
        n_patients: patients generated.
        n_images: annotated sagittal T2 images.
        n_distractor_files: files of distractor series (sagittal T1, axial T2), never annotated.
        n_annotations: rows in annotations.csv (all readers).
        per_site: site -> {"patients", "images", "distractor_files", "annotations"}.
        out_dir: the output directory.
        seconds: wall time.
    """

    n_patients: int
    n_images: int
    n_distractor_files: int
    n_annotations: int
    per_site: dict[str, dict[str, int]]
    out_dir: Path
    seconds: float


@dataclass(frozen=True)
class PatientPlan:
    """Everything about one patient except pixels: identity, scanner, anatomy, slice geometry, distractors."""

    site: str
    site_idx: int
    index: int
    ident: Identity
    equip: Equipment
    scanner: ScannerParams
    anat: Anatomy
    geoms: tuple[SliceGeometry, ...]
    slice_x: tuple[float, ...]
    table_y: float
    table_z: float
    has_sag_t1: bool
    axial_levels: tuple[int, ...]
    uid_root: tuple[object, ...] = field(repr=False)

    def sop_uid(self, kind: str, k: int) -> str:
        """SOPInstanceUID of slice k of a series kind (sag_t2 | sag_t1 | ax_t2)."""
        return uid(*self.uid_root, "sop", kind, k)


def profile_key(profile: str) -> int:
    """Stable integer for a profile name, so profiles sharing a seed still get distinct patients and UIDs."""
    return zlib.crc32(profile.encode("utf-8"))


def _rng(seed: int, pkey: int, site_idx: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, pkey, site_idx, index, stream])


def slice_counts(params: SynthParams, profile: str, site: str) -> np.ndarray:
    """Number of sagittal T2 slices (1-3) for every patient of a site, fixed up front so totals can be exact.

    With `images` set for the site, the total equals it exactly (three-slice share from
    `slices.three_fraction`, the rest two or one); otherwise each count is drawn from `slices.probs`.
    """
    prof = params.profile(profile)
    n = prof.patients[site]
    site_idx = list(params.sites).index(site)
    rng = _rng(params.seed, profile_key(profile), site_idx, 0, _S_SITE)
    if prof.images is None or site not in prof.images:
        p = np.asarray(params.slices.probs, dtype=float)
        return 1 + rng.choice(3, size=n, p=p / p.sum())
    extra = prof.images[site] - n
    n3 = int(np.clip(round(params.slices.three_fraction * n), max(0, extra - n), extra // 2))
    n2 = extra - 2 * n3
    counts = np.array([3] * n3 + [2] * n2 + [1] * (n - n2 - n3))
    return rng.permutation(counts)


def _identity(
    rng: np.random.Generator, params: SynthParams, site: SiteParams, site_idx: int, index: int, root: tuple
) -> Identity:
    sex = "F" if rng.random() < 0.45 else "M"
    lo, hi = params.anatomy.age_years
    age = int(np.clip(round(rng.normal((lo + hi) / 2.0 + 4.0, (hi - lo) / 5.0)), lo, hi))
    y0, y1 = site.study_years
    start = dt.date(y0, 1, 1)
    study = start + dt.timedelta(days=int(rng.integers(0, (dt.date(y1, 12, 31) - start).days + 1)))
    birth = study - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    secs = int(rng.integers(7 * 3600, 20 * 3600))
    # Affine maps with odd, 5-free multipliers are bijections mod 10^k: IDs are unique within a site.
    pid = (index * 7919 + 1_000_003 + site_idx * 3_331_333 + (params.seed % 9973) * 13) % 10**7
    acc = (index * 4099 + 17 + params.seed % 1000) % 10**6
    return Identity(
        patient_name=f"{_LAST[int(rng.integers(len(_LAST)))]}^{_FIRST[int(rng.integers(len(_FIRST)))]}",
        patient_id=f"{site.patient_id_prefix}{pid:07d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        age_years=age,
        study_date=study.strftime("%Y%m%d"),
        study_time=f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        accession=f"{site.patient_id_prefix}{study.year % 100:02d}{acc:06d}",
        referring_physician=_DOCTORS[int(rng.integers(len(_DOCTORS)))],
        study_uid=uid(*root, "study"),
        frame_uid=uid(*root, "frame"),
    )


def plan_patient(params: SynthParams, profile: str, site: str, index: int, n_slices: int) -> PatientPlan:
    """Plan one patient (no pixels): identity, scanner, anatomy, positioning, slices and distractor series."""
    prof = params.profile(profile)
    site_p = params.sites[site]
    site_idx = list(params.sites).index(site)
    pkey = profile_key(profile)
    root = (params.seed, profile, site, index)

    def stream(s: int) -> np.random.Generator:
        return _rng(params.seed, pkey, site_idx, index, s)

    ident = _identity(stream(_S_IDENTITY), params, site_p, site_idx, index, root)
    anat = sample_anatomy(stream(_S_ANATOMY), params.anatomy, site_p.compression_prevalence, ident.age_years)

    rng = stream(_S_SCANNER)
    w = np.array([s.weight for s in site_p.scanners], dtype=float)
    scanner_idx = int(rng.choice(len(w), p=w / w.sum()))
    sc = site_p.scanners[scanner_idx]
    matrix = max(32, round(sc.matrix * prof.matrix_scale / 8.0) * 8)
    fov = sc.fov_mm + rng.uniform(-sc.fov_jitter_mm, sc.fov_jitter_mm)
    ps = round(fov / matrix, 4)  # the value written to PixelSpacing is the one used to render
    theta = np.deg2rad(np.clip(rng.normal(0.0, sc.rotation_deg_sd), -3 * sc.rotation_deg_sd, 3 * sc.rotation_deg_sd))
    shift_a = float(np.clip(rng.normal(0.0, sc.shift_mm_sd), -15.0, 15.0))
    shift_s = float(np.clip(rng.normal(0.0, sc.shift_mm_sd), -15.0, 15.0))
    spacing = sc.slice_thickness_mm + sc.slice_gap_mm
    jitter = float(np.clip(rng.normal(0.0, params.slices.midline_jitter_mm), -1.6, 1.6))
    offsets = (np.arange(n_slices) - (n_slices - 1) / 2.0) * spacing + jitter
    slice_x = tuple(round(anat.midline_x + float(o), 3) for o in offsets)
    geoms = tuple(
        SliceGeometry(
            rows=matrix,
            cols=matrix,
            ps=ps,
            theta=float(theta),
            shift_a=shift_a,
            shift_s=shift_s,
            x_lat=float(o),
        )
        for o in offsets
    )
    table_y = round(float(rng.normal(0.0, 8.0)), 2)
    table_z = round(float(rng.normal(0.0, 15.0)), 2)

    drng = stream(_S_DISTRACTOR)
    dp = params.distractors
    has_t1 = bool(drng.random() < dp.sag_t1_rate)
    has_ax = bool(drng.random() < dp.axial_t2_rate)
    first = int(drng.integers(0, len(LEVEL_NAMES) - dp.axial_t2_slices + 1))
    axial = tuple(range(first, first + dp.axial_t2_slices)) if has_ax else ()

    equip = Equipment(
        institution_name=site_p.institution_name,
        institution_address=site_p.institution_address,
        manufacturer=sc.manufacturer,
        model=sc.model,
        field_strength=sc.field_strength,
        station_name=sc.station_name,
        software_versions=sc.software_versions,
        device_serial=f"{zlib.crc32(sc.station_name.encode()) % 100000:05d}",
    )
    return PatientPlan(
        site=site,
        site_idx=site_idx,
        index=index,
        ident=ident,
        equip=equip,
        scanner=sc,
        anat=anat,
        geoms=geoms,
        slice_x=slice_x,
        table_y=table_y,
        table_z=table_z,
        has_sag_t1=has_t1,
        axial_levels=axial,
        uid_root=root,
    )


def iter_plans(
    params: SynthParams, profile: str, sites: list[str] | None = None, max_patients: int | None = None
) -> Iterator[PatientPlan]:
    """Plans of a profile's patients, site by site (optionally a subset: some sites, the first N per site)."""
    prof = params.profile(profile)
    for site in prof.patients:
        if sites is not None and site not in sites:
            continue
        counts = slice_counts(params, profile, site)
        n = len(counts) if max_patients is None else min(len(counts), max_patients)
        for i in range(n):
            yield plan_patient(params, profile, site, i, int(counts[i]))


def artefact_stream(params: SynthParams, profile: str, plan: PatientPlan) -> tuple[np.random.Generator, bool, bool]:
    """The patient's artefact stream after its two per-patient draws: whether they move (ghosts) and wrap."""
    rng = _rng(params.seed, profile_key(profile), plan.site_idx, plan.index, _S_ARTEFACT)
    sc = plan.scanner
    moves, wraps = bool(rng.random() < sc.motion_ghost_prob), bool(rng.random() < sc.wrap_prob)
    return rng, moves, wraps


def sagittal_voxel_mm3(plan: PatientPlan) -> float:
    """Voxel volume of the patient's sagittal series (square pixels x slice thickness)."""
    return plan.geoms[0].ps ** 2 * plan.scanner.slice_thickness_mm


def series_snr(plan: PatientPlan) -> float:
    """Nominal CSF SNR of the patient's sagittal T2 series (before the per-series draw)."""
    return nominal_snr(plan.scanner.snr, sagittal_voxel_mm3(plan))


def annotate(params: SynthParams, profile: str, plan: PatientPlan) -> list[tuple[object, ...]]:
    """All readers' annotation rows for one patient's sagittal T2 images (no pixels needed)."""
    pkey = profile_key(profile)
    rngs = [_rng(params.seed, pkey, plan.site_idx, plan.index, READER_STREAM + r) for r in range(len(params.readers))]
    _, moves, _ = artefact_stream(params, profile, plan)
    snr = series_snr(plan)
    anat = plan.anat
    rows: list[tuple[object, ...]] = []
    for k, g in enumerate(plan.geoms):
        boxes = level_boxes(anat, g)
        sop = plan.sop_uid("sag_t2", k)
        amb = level_ambiguity(anat, g.x_lat, snr, moves)
        for reader, rng in zip(params.readers, rngs, strict=True):
            rows.extend(
                read_image(
                    reader,
                    rng,
                    sop,
                    boxes,
                    anat.severity,
                    anat.lookalike,
                    amb,
                    params.compression_min_grade,
                    g.cols,
                    g.rows,
                )
            )
    return rows


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "SERIES"


def _series_dir(plan: PatientPlan, number: int, description: str) -> Path:
    return Path(plan.ident.patient_id) / f"{plan.ident.study_date}_MR_CSPINE" / f"SE{number:03d}_{_safe(description)}"


def _sag_position(plan: PatientPlan, g: SliceGeometry, k: int) -> list[float]:
    """ImagePositionPatient of the first pixel; rows run +Y (posterior), columns -Z (inferior)."""
    y = (0.5 - g.cols / 2.0) * g.ps + plan.table_y
    z = (g.rows / 2.0 - 0.5) * g.ps + plan.table_z
    return [plan.slice_x[k], round(y, 4), round(z, 4)]


class _Writer:
    """Streams DICOM files and CSV rows for one generate_cohort call; tracks what it wrote."""

    def __init__(self, params: SynthParams, profile: str, out_dir: Path) -> None:
        self.params = params
        self.profile = profile
        self.out_dir = out_dir
        self.dicom_root = out_dir / "dicom"
        self.written: set[str] = set()

    def write(self, plan: PatientPlan, rel: Path, ds_kwargs: dict, pixels: np.ndarray) -> str:
        site_folder = self.params.sites[plan.site].folder
        rel_path = Path("dicom") / site_folder / rel
        write_atomic(build_dataset(pixels, ident=plan.ident, equip=plan.equip, **ds_kwargs), self.out_dir / rel_path)
        self.written.add(rel_path.as_posix())
        return rel_path.as_posix()

    def patient(self, plan: PatientPlan) -> tuple[list[list[object]], list[tuple[object, ...]], int, int]:
        """Write one patient's files; return its cohort rows, annotation rows, #images, #distractor files."""
        params, sc, anat = self.params, plan.scanner, plan.anat
        pkey = profile_key(self.profile)
        noise = _rng(params.seed, pkey, plan.site_idx, plan.index, _S_PIXELS)
        cohort_rows: list[list[object]] = []
        spacing = sc.slice_thickness_mm + sc.slice_gap_mm
        fs = sc.field_strength

        def cohort_row(
            sop: str,
            kind: str,
            desc: str,
            rows: int,
            cols: int,
            ps: float,
            n_comp: int,
            levels: tuple[str, ...],
            rel_path: str,
            x_lat: float | None,
        ) -> list[object]:
            worst = max(
                (anat.severity[LEVEL_NAMES.index(lv)] for lv in levels),
                default="none",
                key=("none", "mild", "moderate", "severe").index,
            )
            return [
                sop,
                plan.ident.patient_id,
                plan.site,
                sc.manufacturer,
                sc.model,
                f"{fs:.1f}",
                n_comp,
                worst,
                int(kind != "sag_t2"),
                kind,
                desc,
                rows,
                cols,
                f"{ps:.4f}",
                ";".join(levels),
                rel_path,
                ";".join(str(v) for v in anat.grades),
                ";".join(anat.lookalike),
                "" if x_lat is None else f"{x_lat:.2f}",
                int(moves),
                int(wraps),
                anat.canal_class,
                anat.curvature,
            ]

        series_specs: list[tuple[str, int, str, float, float, int, str, str, float]] = [
            (
                "sag_t2",
                _SERIES_T2,
                sc.series_description,
                sc.tr_ms,
                sc.te_ms,
                sc.echo_train_length,
                sc.sequence_name,
                "SK\\SP\\OSP",
                90.0,
            ),
        ]
        if plan.has_sag_t1:
            dp = params.distractors
            series_specs.insert(
                0,
                (
                    "sag_t1",
                    _SERIES_T1,
                    dp.sag_t1_description,
                    dp.sag_t1_tr_ms,
                    dp.sag_t1_te_ms,
                    3,
                    "tse2d1_3",
                    "SK\\SP\\OSP",
                    150.0,
                ),
            )
        n_images = n_distractor = 0
        voxel = sagittal_voxel_mm3(plan)
        # Artefacts: whether the patient moves or wraps is drawn once per patient; amounts per sagittal series.
        art_rng, moves, wraps = artefact_stream(params, self.profile, plan)
        labelled = anat.labelled_compressed(params.compression_min_grade)
        g0 = plan.geoms[0]
        for kind, number, desc, tr, te, etl, seq, variant, flip in series_specs:
            values = tissue_signal(tr, te, fs)
            acq = sample_acquisition(
                noise,
                blur=blur_for_thickness(sc.blur, sc.slice_thickness_mm),
                bias_strength=sc.bias_strength,
                snr=sc.snr,
                voxel_mm3=voxel,
                scale=sc.intensity_scale,
            )
            art = sample_artefacts(
                art_rng,
                moves=moves,
                wraps=wraps,
                phase_axis=sc.phase_axis,
                gibbs=sc.gibbs,
                ghost_amplitude=sc.motion_ghost_amplitude,
                wrap_mm=sc.wrap_mm,
                pi_factor=sc.parallel_imaging_r,
                g_max=sc.parallel_imaging_g_max,
                n_phase=g0.rows if sc.phase_axis == "col" else g0.cols,
                ps=g0.ps,
            )
            acq = replace(acq, art=art)
            series = SeriesInfo(
                series_uid=uid(*plan.uid_root, "series", kind),
                series_number=number,
                description=desc,
                tr_ms=tr,
                te_ms=te,
                echo_train_length=etl,
                sequence_name=seq,
                scanning_sequence="SE",
                sequence_variant=variant,
                flip_angle=flip,
                slice_thickness_mm=sc.slice_thickness_mm,
                spacing_mm=spacing,
                iop=SAGITTAL_IOP,
                phase_encoding=sc.phase_axis.upper(),  # the axis the scanner's ghosts and wrap were simulated along
            )
            rel_dir = _series_dir(plan, number, desc)
            for k, g in enumerate(plan.geoms):
                pixels = acquire(render_sagittal(anat, g, values), acq, noise)
                inst = _NOMINAL_CENTRE_INSTANCE - (len(plan.geoms) - 1) // 2 + k
                sop = plan.sop_uid(kind, k)
                rel = self.write(
                    plan,
                    rel_dir / f"{inst}.dcm",
                    dict(
                        series=series,
                        sop_uid=sop,
                        instance_number=inst,
                        pixel_spacing=g.ps,
                        position=_sag_position(plan, g, k),
                        slice_location=plan.slice_x[k],
                    ),
                    pixels,
                )
                present = ~np.isnan(level_boxes(anat, g)).any(axis=1)
                levels = tuple(lv for lv, c, p in zip(LEVEL_NAMES, labelled, present, strict=True) if c and p)
                cohort_rows.append(cohort_row(sop, kind, desc, g.rows, g.cols, g.ps, len(levels), levels, rel, g.x_lat))
                if kind == "sag_t2":
                    n_images += 1
                else:
                    n_distractor += 1

        if plan.axial_levels:
            n_distractor += self._axial(plan, noise, cohort_rows, cohort_row)
        return cohort_rows, annotate(params, self.profile, plan), n_images, n_distractor

    def _axial(self, plan: PatientPlan, noise: np.random.Generator, cohort_rows: list, cohort_row: Callable) -> int:
        params, sc, anat = self.params, plan.scanner, plan.anat
        dp = params.distractors
        g0 = plan.geoms[0]
        matrix = max(32, round(g0.rows * 0.75 / 8.0) * 8)
        ps = round(dp.axial_fov_mm / matrix, 4)
        values = tissue_signal(sc.tr_ms, sc.te_ms, sc.field_strength)
        acq = sample_acquisition(
            noise,
            blur=blur_for_thickness(sc.blur, sc.slice_thickness_mm),
            bias_strength=sc.bias_strength * 0.5,
            snr=sc.snr,
            voxel_mm3=ps * ps * sc.slice_thickness_mm,
            scale=sc.intensity_scale,
        )
        series = SeriesInfo(
            series_uid=uid(*plan.uid_root, "series", "ax_t2"),
            series_number=_SERIES_AX,
            description=dp.axial_t2_description,
            tr_ms=sc.tr_ms,
            te_ms=sc.te_ms,
            echo_train_length=sc.echo_train_length,
            sequence_name=sc.sequence_name,
            scanning_sequence="SE",
            sequence_variant="SK\\SP\\OSP",
            flip_angle=90.0,
            slice_thickness_mm=sc.slice_thickness_mm,
            spacing_mm=sc.slice_thickness_mm + sc.slice_gap_mm,
            iop=AXIAL_IOP,
        )
        rel_dir = _series_dir(plan, _SERIES_AX, dp.axial_t2_description)
        labelled = anat.labelled_compressed(params.compression_min_grade)
        all_levels = tuple(lv for lv, c in zip(LEVEL_NAMES, labelled, strict=True) if c)
        for k, level in enumerate(plan.axial_levels):
            # The slice sits at the disc's height in the sagittal frame of reference (same session).
            _, y_pix = frame_to_pixels(anat, g0, np.array([anat.disc_t[level]]), np.array([0.0]))
            z = plan.table_z - (float(y_pix[0]) - g0.rows / 2.0) * g0.ps
            pixels = acquire(render_axial(anat, level, matrix, matrix, ps, values), acq, noise)
            sop = plan.sop_uid("ax_t2", k)
            pos = [
                round(anat.midline_x - (matrix / 2.0 - 0.5) * ps, 4),
                round(plan.table_y - (matrix / 2.0 - 0.5) * ps, 4),
                round(z, 4),
            ]
            rel = self.write(
                plan,
                rel_dir / f"{k + 1}.dcm",
                dict(
                    series=series,
                    sop_uid=sop,
                    instance_number=k + 1,
                    pixel_spacing=ps,
                    position=pos,
                    slice_location=round(z, 4),
                ),
                pixels,
            )
            cohort_rows.append(
                cohort_row(
                    sop,
                    "ax_t2",
                    dp.axial_t2_description,
                    matrix,
                    matrix,
                    ps,
                    len(all_levels),
                    all_levels,
                    rel,
                    None,
                )
            )
        return len(plan.axial_levels)

    def remove_stale(self) -> None:
        """Delete .dcm files (and temp leftovers) under dicom/ this run did not write, then empty folders."""
        if not self.dicom_root.is_dir():
            return
        for dirpath, _dirs, files in os.walk(self.dicom_root, topdown=False):
            here = Path(dirpath)
            for name in files:
                rel = (here / name).relative_to(self.out_dir).as_posix()
                if (name.endswith(".dcm") and rel not in self.written) or name.endswith(".tmp"):
                    (here / name).unlink()
            if here != self.dicom_root and not any(here.iterdir()):
                here.rmdir()


def _readme(params: SynthParams, profile: str, summary: dict[str, dict[str, int]]) -> str:
    sites = "\n".join(
        f"  - {name} ({params.sites[name].role}): {c['patients']} patients, {c['images']} annotated images, "
        f"{c['distractor_files']} distractor files; scanners: "
        + ", ".join(f"{s.manufacturer} {s.model} {s.field_strength:.1f}T" for s in params.sites[name].scanners)
        for name, c in summary.items()
    )
    return (
        "SYNTHETIC DATA - NOT PATIENT DATA\n"
        "==================================\n\n"
        "Every image here is a computer-generated phantom of a sagittal T2-weighted cervical spine MRI\n"
        "made by cordwatch (pipelines/synth). These are NOT the data of Du et al. 2026 (Spine\n"
        "51(9):610-621), which are private, and not images of any person. Names, IDs, dates, institutions\n"
        "and physicians in the DICOM headers are invented so that de-identification can be exercised; any\n"
        "resemblance to real people or places is coincidental. Every file carries ImageComments and\n"
        f"PatientComments '{SYNTHETIC_COMMENT}'.\n\n"
        f"profile: {profile}\nseed: {params.seed}\n{sites}\n\n"
        "annotations.csv: boxes per intervertebral level C2-3..C7-T1 from a simulated expert\n"
        "(reference) and simulated mid-level and junior physicians. cohort.csv: per-image ground\n"
        "truth (distractors included). Distractor series (sagittal T1, axial T2) are never annotated\n"
        "and should be rejected by ingest.\n"
    )


def _csv_line(row: list[object] | tuple[object, ...]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


def generate_cohort(
    params: SynthParams,
    profile: str,
    out_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CohortSummary:
    """Write a synthetic cohort for a size profile into `out_dir` (see the module docstring for the layout).

    Deterministic: the same params, profile and seed give byte-identical files and CSVs; rerunning into the
    same directory overwrites them identically and deletes .dcm files under `dicom/` that this run did not
    produce. Files appear atomically (temporary file + rename); CSVs are streamed to temporary files and
    renamed at the end.

    Args:
        params: the `synth` section of params.yaml.
        profile: size profile name (e.g. ci, demo, paper).
        out_dir: output directory (created if missing).
        progress: called as progress(patients_done, patients_total) after each patient.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: unknown profile.
    """
    start = time.perf_counter()
    prof: SynthProfile = params.profile(profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(params, profile, out_dir)
    total = sum(prof.patients.values())
    per_site: dict[str, dict[str, int]] = {
        s: {"patients": 0, "images": 0, "distractor_files": 0, "annotations": 0} for s in prof.patients
    }
    ann_tmp = out_dir / ".annotations.csv.tmp"
    coh_tmp = out_dir / ".cohort.csv.tmp"
    done = 0
    with (
        ann_tmp.open("w", encoding="utf-8", newline="") as ann_f,
        coh_tmp.open("w", encoding="utf-8", newline="") as coh_f,
    ):
        ann_f.write(_csv_line(ANNOTATION_HEADER))
        coh_f.write(_csv_line(COHORT_HEADER))
        for plan in iter_plans(params, profile):
            cohort_rows, ann_rows, n_img, n_dis = writer.patient(plan)
            coh_f.writelines(_csv_line(r) for r in cohort_rows)
            ann_f.writelines(_csv_line(r) for r in ann_rows)
            c = per_site[plan.site]
            c["patients"] += 1
            c["images"] += n_img
            c["distractor_files"] += n_dis
            c["annotations"] += len(ann_rows)
            done += 1
            if progress is not None:
                progress(done, total)
    os.replace(ann_tmp, out_dir / "annotations.csv")
    os.replace(coh_tmp, out_dir / "cohort.csv")
    write_text_atomic(out_dir / README_NAME, _readme(params, profile, per_site))
    writer.remove_stale()
    return CohortSummary(
        n_patients=sum(c["patients"] for c in per_site.values()),
        n_images=sum(c["images"] for c in per_site.values()),
        n_distractor_files=sum(c["distractor_files"] for c in per_site.values()),
        n_annotations=sum(c["annotations"] for c in per_site.values()),
        per_site=per_site,
        out_dir=out_dir,
        seconds=time.perf_counter() - start,
    )
