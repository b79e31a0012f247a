"""Typed parameters of the synthetic cohort generator (the `synth:` section of `params.yaml`).

The defaults here equal the `synth:` block of `params.yaml`, which documents every key inline; a test keeps
the two in step. Every model rejects unknown keys so a typo fails loudly instead of silently using a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipelines.contracts import SEVERITIES
from pipelines.settings import StrictModel

LEVEL_NAMES: tuple[str, ...] = ("C2-3", "C3-4", "C4-5", "C5-6", "C6-7", "C7-T1")
SEVERITY_NAMES: tuple[str, ...] = SEVERITIES
Severity = Literal["mild", "moderate", "severe"]


class ScannerParams(StrictModel):
    """One scanner model at a site: identity, sagittal T2 protocol and the image effects it causes."""

    manufacturer: str
    model: str
    field_strength: Literal[1.5, 3.0]
    weight: float = Field(1.0, gt=0)
    station_name: str = "MRC00001"
    software_versions: str = "1.0"
    series_description: str = "SAG T2 TSE"
    sequence_name: str = "*tse2d1_15"
    matrix: int = Field(256, ge=32, le=1024)
    fov_mm: float = Field(240.0, gt=50)
    fov_jitter_mm: float = Field(10.0, ge=0)
    slice_thickness_mm: float = Field(3.0, gt=0)
    slice_gap_mm: float = Field(0.3, ge=0)
    tr_ms: float = Field(3500.0, gt=0)
    te_ms: float = Field(100.0, gt=0)
    echo_train_length: int = Field(15, ge=1)
    snr: float = Field(25.0, gt=0)
    bias_strength: float = Field(0.2, ge=0, le=1.5)
    blur: float = Field(0.1, ge=0, le=0.25)
    intensity_scale: float = Field(2000.0, gt=0)
    shift_mm_sd: float = Field(6.0, ge=0)
    rotation_deg_sd: float = Field(3.0, ge=0)
    # Artefacts a reader sees; each field's default here is its neutral value (a hand-written scanner gets none),
    # while the shipped scanners in `_default_sites` (= params.yaml) set vendor-plausible ones.
    phase_axis: Literal["row", "col"] = "col"
    gibbs: float = Field(1.0, ge=0.3, le=1.0)
    motion_ghost_prob: float = Field(0.0, ge=0, le=1)
    motion_ghost_amplitude: float = Field(0.0, ge=0, le=0.3)
    wrap_prob: float = Field(0.0, ge=0, le=1)
    wrap_mm: float = Field(0.0, ge=0, le=60)
    parallel_imaging_r: float = Field(1.0, ge=1, le=4)
    parallel_imaging_g_max: float = Field(1.0, ge=1, le=3)


class SiteParams(StrictModel):
    """One centre: its identity (what de-identification must remove) and its scanners."""

    role: Literal["development", "external"]
    institution_name: str
    institution_address: str
    folder: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    patient_id_prefix: str = Field(pattern=r"^[A-Z]{1,4}$")
    study_years: tuple[int, int] = (2019, 2023)
    compression_prevalence: float = Field(0.6, ge=0, le=1)
    scanners: list[ScannerParams] = Field(min_length=1)


class SynthProfile(StrictModel):
    """One cohort size: patients (and optionally exact image totals) per site, and the matrix scale."""

    patients: dict[str, int]
    images: dict[str, int] | None = None
    matrix_scale: float = Field(1.0, gt=0.1, le=2.0)

    @model_validator(mode="after")
    def _images_fit(self) -> SynthProfile:
        if any(n < 0 for n in self.patients.values()):
            raise ValueError("patients per site must be >= 0")
        if self.images is not None:
            for site, n_img in self.images.items():
                n_pat = self.patients.get(site)
                if n_pat is None:
                    raise ValueError(f"images given for site {site!r} that has no patients entry")
                if not n_pat <= n_img <= 3 * n_pat:
                    raise ValueError(f"site {site!r}: images ({n_img}) must lie in [patients, 3*patients]")
        return self


class SliceParams(StrictModel):
    """How many adjacent near-midline sagittal T2 slices each patient contributes (1-3)."""

    probs: tuple[float, float, float] = (0.14, 0.76, 0.10)
    three_fraction: float = Field(0.10, ge=0, le=1)
    midline_jitter_mm: float = Field(1.5, ge=0)


LookAlike = Literal["touching_bulge", "wide_canal_bulge", "dark_disc", "epidural_vein", "flow_void"]
LOOKALIKE_NAMES: tuple[str, ...] = ("touching_bulge", "wide_canal_bulge", "dark_disc", "epidural_vein", "flow_void")
CanalClass = Literal["narrow", "normal", "wide"]
Curvature = Literal["lordosis", "straight", "kyphosis"]


class AnatomyParams(StrictModel):
    """Patient anatomy, where and how badly the cord is compressed (Kang grades), and what only looks like it.

    Grades follow Kang et al. (Spine 2011), named as the annotations' severity column: mild = grade 1 (CSF
    effaced over the cord, no cord deformity), moderate = grade 2 (cord deformed), severe = grade 3 (cord
    deformed with intramedullary T2 hyperintensity); none = grade 0.
    """

    n_levels_probs: tuple[float, float, float, float] = (0.45, 0.30, 0.17, 0.08)
    level_probs: tuple[float, float, float, float, float, float] = (0.03, 0.17, 0.25, 0.33, 0.18, 0.04)
    severity_probs: dict[Severity, float] = Field(
        default_factory=lambda: {"mild": 0.40, "moderate": 0.35, "severe": 0.25}
    )
    mechanism_probs: dict[Literal["disc", "osteophyte", "ligamentum_flavum"], float] = Field(
        default_factory=lambda: {"disc": 0.60, "osteophyte": 0.25, "ligamentum_flavum": 0.15}
    )
    pincer_prob_severe: float = Field(0.3, ge=0, le=1)
    canal_class_probs: dict[CanalClass, float] = Field(
        default_factory=lambda: {"narrow": 0.15, "normal": 0.70, "wide": 0.15}
    )
    canal_radius_mm: dict[CanalClass, tuple[float, float]] = Field(
        default_factory=lambda: {"narrow": (5.0, 5.9), "normal": (6.0, 7.5), "wide": (7.6, 8.8)}
    )
    cord_radius_mm: tuple[float, float] = (3.5, 4.2)
    cord_enlargement: tuple[float, float] = (0.05, 0.15)
    curvature_probs: dict[Curvature, float] = Field(
        default_factory=lambda: {"lordosis": 0.60, "straight": 0.25, "kyphosis": 0.15}
    )
    curvature_mm: dict[Curvature, tuple[float, float]] = Field(
        default_factory=lambda: {"lordosis": (9.0, 3.0), "straight": (0.0, 1.5), "kyphosis": (-6.0, 2.0)}
    )
    age_years: tuple[int, int] = (30, 82)
    degeneration_prob: float = Field(0.35, ge=0, le=1)
    degeneration_per_decade: float = Field(0.06, ge=0, le=0.3)
    height_loss_per_decade: float = Field(0.015, ge=0, le=0.1)
    marrow_heterogeneity: float = Field(0.12, ge=0, le=0.5)
    modic_prob: float = Field(0.3, ge=0, le=1)
    protrusion_width_mm: tuple[float, float] = (4.0, 9.0)
    lookalike_probs: dict[LookAlike, float] = Field(
        default_factory=lambda: {
            "touching_bulge": 0.12,
            "wide_canal_bulge": 0.40,
            "dark_disc": 0.08,
            "epidural_vein": 0.05,
            "flow_void": 0.06,
        }
    )

    @model_validator(mode="after")
    def _complete(self) -> AnatomyParams:
        if set(self.severity_probs) != {"mild", "moderate", "severe"}:
            raise ValueError("severity_probs needs exactly mild, moderate, severe")
        if set(self.mechanism_probs) != {"disc", "osteophyte", "ligamentum_flavum"}:
            raise ValueError("mechanism_probs needs exactly disc, osteophyte, ligamentum_flavum")
        for name, table in (("canal_class_probs", self.canal_class_probs), ("canal_radius_mm", self.canal_radius_mm)):
            if set(table) != {"narrow", "normal", "wide"}:
                raise ValueError(f"{name} needs exactly narrow, normal, wide")
        for name, table in (("curvature_probs", self.curvature_probs), ("curvature_mm", self.curvature_mm)):
            if set(table) != {"lordosis", "straight", "kyphosis"}:
                raise ValueError(f"{name} needs exactly lordosis, straight, kyphosis")
        if set(self.lookalike_probs) != set(LOOKALIKE_NAMES):
            raise ValueError(f"lookalike_probs needs exactly {', '.join(LOOKALIKE_NAMES)}")
        plain = sum(v for k, v in self.lookalike_probs.items() if k != "wide_canal_bulge")
        if plain > 1.0 or self.lookalike_probs["wide_canal_bulge"] > 1.0:
            raise ValueError("lookalike_probs are per normal level: the kinds other than wide_canal_bulge sum to <= 1")
        for lo, hi in self.canal_radius_mm.values():
            if not 0 < lo <= hi:
                raise ValueError("canal_radius_mm ranges need 0 < low <= high")
        return self


class ReaderParams(StrictModel):
    """One simulated physician: box jitter, missed compressions, overcalls, skipped levels, and how ambiguity
    (an off-midline slice, a noisy or moving scan) raises their misses."""

    reader_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    level: Literal["expert", "mid", "junior"]
    box_jitter: float = Field(0.01, ge=0, le=0.5)
    miss_rate: dict[Severity, float] = Field(default_factory=lambda: {"mild": 0.0, "moderate": 0.0, "severe": 0.0})
    false_positive_rate: float = Field(0.0, ge=0, le=1)
    lookalike_fp_rate: float = Field(0.0, ge=0, le=1)
    ambiguity_miss_factor: float = Field(0.0, ge=0, le=10)
    omit_rate: float = Field(0.0, ge=0, le=1)


class DistractorParams(StrictModel):
    """Extra series per patient that the ingest series rules must reject (never annotated)."""

    sag_t1_rate: float = Field(0.3, ge=0, le=1)
    sag_t1_description: str = "SAG T1 TSE"
    sag_t1_tr_ms: float = Field(600.0, gt=0)
    sag_t1_te_ms: float = Field(10.0, gt=0)
    axial_t2_rate: float = Field(0.3, ge=0, le=1)
    axial_t2_description: str = "AX T2 TSE"
    axial_t2_slices: int = Field(2, ge=1, le=6)
    axial_fov_mm: float = Field(180.0, gt=50)


def _default_readers() -> list[ReaderParams]:
    return [
        ReaderParams(reader_id="expert_1", level="expert", box_jitter=0.01),
        *(
            ReaderParams(
                reader_id=f"mid_{k}",
                level="mid",
                box_jitter=0.10,
                miss_rate={"mild": 0.13, "moderate": 0.025, "severe": 0.0},
                false_positive_rate=0.004,
                lookalike_fp_rate=0.07,
                ambiguity_miss_factor=1.0,
                omit_rate=0.003,
            )
            for k in (1, 2)
        ),
        *(
            ReaderParams(
                reader_id=f"junior_{k}",
                level="junior",
                box_jitter=0.11,
                miss_rate={"mild": 0.20, "moderate": 0.05, "severe": 0.01},
                false_positive_rate=0.008,
                lookalike_fp_rate=0.12,
                ambiguity_miss_factor=1.0,
                omit_rate=0.005,
            )
            for k in (1, 2)
        ),
    ]


def _default_sites() -> dict[str, SiteParams]:
    return {
        "dev": SiteParams(
            role="development",
            institution_name="Northbridge University Hospital",
            institution_address="1 Infirmary Road, Northbridge",
            folder="NORTHBRIDGE_UH",
            patient_id_prefix="NB",
            study_years=(2018, 2023),
            compression_prevalence=0.62,
            scanners=[
                ScannerParams(
                    manufacturer="SIEMENS",
                    model="MAGNETOM Skyra",
                    field_strength=3.0,
                    weight=0.6,
                    station_name="NBMR3T01",
                    software_versions="syngo MR E11",
                    series_description="SAG T2 TSE",
                    sequence_name="*tse2d1_17",
                    matrix=320,
                    fov_mm=240.0,
                    fov_jitter_mm=10.0,
                    slice_thickness_mm=3.0,
                    slice_gap_mm=0.3,
                    tr_ms=3500.0,
                    te_ms=95.0,
                    echo_train_length=17,
                    snr=30.0,
                    bias_strength=0.30,
                    blur=0.06,
                    intensity_scale=1800.0,
                    shift_mm_sd=6.0,
                    rotation_deg_sd=3.0,
                    phase_axis="col",
                    gibbs=0.85,
                    motion_ghost_prob=0.1,
                    motion_ghost_amplitude=0.05,
                    wrap_prob=0.05,
                    wrap_mm=20.0,
                    parallel_imaging_r=2.0,
                    parallel_imaging_g_max=1.15,
                ),
                ScannerParams(
                    manufacturer="GE MEDICAL SYSTEMS",
                    model="Optima MR450w",
                    field_strength=1.5,
                    weight=0.4,
                    station_name="NBMR15T02",
                    software_versions="DV26.0_R03",
                    series_description="SAG T2 FRFSE",
                    sequence_name="frfse-xl",
                    matrix=256,
                    fov_mm=240.0,
                    fov_jitter_mm=10.0,
                    slice_thickness_mm=3.0,
                    slice_gap_mm=0.5,
                    tr_ms=3000.0,
                    te_ms=110.0,
                    echo_train_length=20,
                    snr=17.0,
                    bias_strength=0.15,
                    blur=0.14,
                    intensity_scale=3200.0,
                    shift_mm_sd=6.0,
                    rotation_deg_sd=3.0,
                    phase_axis="col",
                    gibbs=0.75,
                    motion_ghost_prob=0.1,
                    motion_ghost_amplitude=0.05,
                    wrap_prob=0.08,
                    wrap_mm=25.0,
                    parallel_imaging_r=2.0,
                    parallel_imaging_g_max=1.35,
                ),
            ],
        ),
        "ext": SiteParams(
            role="external",
            institution_name="Lakeshore Regional Medical Center",
            institution_address="200 Harbour Street, Lakeshore",
            folder="LAKESHORE_RMC",
            patient_id_prefix="LS",
            study_years=(2021, 2024),
            compression_prevalence=0.62,
            scanners=[
                ScannerParams(
                    manufacturer="Philips",
                    model="Ingenia",
                    field_strength=3.0,
                    weight=0.7,
                    station_name="LSMR3T",
                    software_versions="5.6.1",
                    series_description="T2W_TSE SAG",
                    sequence_name="TSE",
                    matrix=288,
                    fov_mm=250.0,
                    fov_jitter_mm=15.0,
                    slice_thickness_mm=3.0,
                    slice_gap_mm=0.3,
                    tr_ms=3800.0,
                    te_ms=120.0,
                    echo_train_length=24,
                    snr=26.0,
                    bias_strength=0.40,
                    blur=0.10,
                    intensity_scale=1000.0,
                    shift_mm_sd=9.0,
                    rotation_deg_sd=5.0,
                    phase_axis="col",
                    gibbs=0.85,
                    motion_ghost_prob=0.3,
                    motion_ghost_amplitude=0.08,
                    wrap_prob=0.1,
                    wrap_mm=25.0,
                    parallel_imaging_r=2.0,
                    parallel_imaging_g_max=1.2,
                ),
                ScannerParams(
                    manufacturer="Canon Medical Systems",
                    model="Vantage Orian",
                    field_strength=1.5,
                    weight=0.3,
                    station_name="LSMR15T",
                    software_versions="V6.0",
                    series_description="SAG T2 FSE",
                    sequence_name="FSE2D",
                    matrix=256,
                    fov_mm=260.0,
                    fov_jitter_mm=15.0,
                    slice_thickness_mm=3.5,
                    slice_gap_mm=0.5,
                    tr_ms=3200.0,
                    te_ms=105.0,
                    echo_train_length=18,
                    snr=15.0,
                    bias_strength=0.25,
                    blur=0.18,
                    intensity_scale=2500.0,
                    shift_mm_sd=9.0,
                    rotation_deg_sd=5.0,
                    phase_axis="row",
                    gibbs=0.7,
                    motion_ghost_prob=0.3,
                    motion_ghost_amplitude=0.08,
                    wrap_prob=0.05,
                    wrap_mm=15.0,
                    parallel_imaging_r=2.0,
                    parallel_imaging_g_max=1.4,
                ),
            ],
        ),
    }


def _default_profiles() -> dict[str, SynthProfile]:
    return {
        "ci": SynthProfile(patients={"dev": 10, "ext": 5}, images=None, matrix_scale=0.5),
        "demo": SynthProfile(patients={"dev": 130, "ext": 30}, images=None, matrix_scale=0.8),
        "paper": SynthProfile(patients={"dev": 641, "ext": 94}, images={"dev": 1256, "ext": 175}, matrix_scale=1.0),
    }


class SynthParams(StrictModel):
    """The `synth:` section: seed, size profiles, sites and scanners, anatomy, readers and distractors."""

    seed: int = Field(20260301, ge=0)
    compression_min_grade: int = Field(1, ge=1, le=3)
    profiles: dict[str, SynthProfile] = Field(default_factory=_default_profiles)
    sites: dict[str, SiteParams] = Field(default_factory=_default_sites)
    slices: SliceParams = Field(default_factory=SliceParams)
    anatomy: AnatomyParams = Field(default_factory=AnatomyParams)
    readers: list[ReaderParams] = Field(default_factory=_default_readers)
    distractors: DistractorParams = Field(default_factory=DistractorParams)

    @model_validator(mode="after")
    def _consistent(self) -> SynthParams:
        for name, prof in self.profiles.items():
            unknown = sorted(set(prof.patients) - set(self.sites))
            if unknown:
                raise ValueError(f"profile {name!r} names unknown sites {unknown}; known: {sorted(self.sites)}")
        experts = [r.reader_id for r in self.readers if r.level == "expert"]
        if len(experts) != 1:
            raise ValueError(f"exactly one expert (reference) reader is required, got {experts}")
        ids = [r.reader_id for r in self.readers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"reader ids must be unique, got {ids}")
        return self

    def profile(self, name: str) -> SynthProfile:
        """Return the named size profile.

        Raises:
            ValueError: if there is no such profile; the message lists the available ones.
        """
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(
                f"unknown synth profile {name!r}; available profiles: {', '.join(sorted(self.profiles))}"
            ) from None


def load_synth_params(path: Path | None = None) -> SynthParams:
    """Read synth params from a YAML file: params.yaml (its `synth:` section) or a bare synth block.

    Args:
        path: the file; None gives the defaults (equal to params.yaml's `synth:` block).
    """
    if path is None:
        return SynthParams()
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, dict) and isinstance(raw.get("synth"), dict):
        raw = raw["synth"]
    return SynthParams.model_validate(raw)
