"""Drift scenarios as settings of the SYNTHETIC cohort generator, and the study streams made from them.

Monitoring must catch drift and only drift (issue 12, section 3). A scenario in `scenarios.yaml` says how the
generator's settings (`params.yaml`'s `synth:` block) change: abrupt overrides, deep-merged over the settings, and
ramps that move a value gradually over the changed part of a stream. `generate_stream` writes a stream of batches,
each its own small cohort: first batches of the monitored site as the model was trained on it, then batches with the
scenario applied. Each batch has its own seed (patients and UIDs never repeat across batches or base seeds), and the
same seed gives the same patients under every scenario, so scenarios differ only by what they change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from pipelines.io import write_json
from pipelines.progress import Progress, ProgressFn
from pipelines.settings import StrictModel
from pipelines.synth.cohort import generate_cohort
from pipelines.synth.params import SynthParams

DEFAULT = Path(__file__).with_name("scenarios.yaml")
STREAM_PROFILE = "drift_stream"  # the throw-away size profile a batch is generated with (holds only its site)
SEED_STRIDE = 100_003  # batch b of base seed s gets seed s * SEED_STRIDE + b: distinct for b < SEED_STRIDE
MANIFEST = "stream.json"


class Ramp(StrictModel):
    """One value moved gradually from `start` (progress 0) to `end` (progress 1) over the changed batches."""

    path: str = Field(pattern=r"^[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*$")
    start: float
    end: float
    scale: bool = False  # multiply the base value by the interpolated factor instead of setting it

    def value(self, base: float, progress: float) -> float:
        """The ramped value at `progress` for a setting whose unchanged value is `base`."""
        v = self.start + (self.end - self.start) * progress
        return base * v if self.scale else v


class Scenario(StrictModel):
    """A named setting of the generator (see `scenarios.yaml` for what each key means)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = Field(min_length=1)
    expect_image_drift: bool
    site: str = "dev"
    changed_site: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    ramps: tuple[Ramp, ...] = ()

    @model_validator(mode="after")
    def _sites(self) -> Scenario:
        if self.changed_site == self.site:
            raise ValueError("changed_site must differ from site (leave it out to change the site itself)")
        return self

    @property
    def gradual(self) -> bool:
        """Whether the change grows batch by batch (it has ramps)."""
        return bool(self.ramps)

    @property
    def target_site(self) -> str:
        """The site code of the changed batches."""
        return self.changed_site or self.site


class _ScenarioFile(StrictModel):
    scenarios: dict[str, dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class StreamBatch:
    """One batch of a stream: its folder and what it holds.

    Attributes:
        index: position in the stream (0-based).
        folder: the batch's cohort folder (DICOM under `dicom/`, plus cohort.csv, annotations.csv, README).
        dicom: the DICOM tree of the batch: what a monitor reads (the CSVs beside it are no DICOM).
        changed: whether the batch was made with the scenario's setting (for no_change, that setting is the base).
        site: site code the batch's patients come from.
        patients: patients (= studies) in the batch.
        images: sagittal T2 images in the batch (distractor series not counted).
        progress: the scenario progress used: 0 for unchanged batches, (k + 1) / n for changed batch k of n of a
            gradual scenario, 1 for changed batches of an abrupt one.
        seed: the generator seed of the batch.
    """

    index: int
    folder: Path
    dicom: Path
    changed: bool
    site: str
    patients: int
    images: int
    progress: float
    seed: int


def _messages(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())


def deep_merge(base: Any, override: Any, where: str = "") -> Any:
    """`override` merged over `base`: dict into dict, a dict with integer keys into those elements of a list;
    anything else replaces. Inputs are not modified."""
    if isinstance(override, dict) and isinstance(base, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = deep_merge(base[key], value, f"{where}.{key}") if key in base else copy.deepcopy(value)
        return out
    if isinstance(override, dict) and isinstance(base, list | tuple):
        items = list(base)
        for key, value in override.items():
            if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < len(items):
                raise ValueError(f"{where.lstrip('.')}: list index {key!r} out of range 0..{len(items) - 1}")
            items[key] = deep_merge(items[key], value, f"{where}.{key}")
        return items
    return copy.deepcopy(override)


def _ramp(node: Any, parts: list[str], ramp: Ramp, progress: float, where: str) -> Any:
    if not parts:
        if isinstance(node, bool) or not isinstance(node, int | float):
            raise ValueError(f"ramp {ramp.path}: {where} is {node!r}, not a number")
        value = ramp.value(float(node), progress)
        return round(value) if isinstance(node, int) else value
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head]
        if head != "*" and head not in node:
            raise ValueError(f"ramp {ramp.path}: no key {head!r} at {where or '(top)'}; known: {sorted(node)}")
        return {k: (_ramp(v, rest, ramp, progress, f"{where}.{k}") if k in keys else v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        if head == "*":
            return [_ramp(v, rest, ramp, progress, f"{where}.{i}") for i, v in enumerate(node)]
        if not head.isdigit() or int(head) >= len(node):
            raise ValueError(f"ramp {ramp.path}: {head!r} is no index of the {len(node)}-item list at {where}")
        i = int(head)
        return [_ramp(v, rest, ramp, progress, f"{where}.{i}") if j == i else v for j, v in enumerate(node)]
    raise ValueError(f"ramp {ramp.path}: {where} is a value, the path goes on ({'.'.join(parts)})")


def scenario_synth_params(base: SynthParams, scenario: Scenario, progress: float = 1.0) -> SynthParams:
    """The generator settings of the scenario's changed batches at `progress` (0..1 along the changed part of the
    stream; abrupt scenarios ignore it).

    Raises:
        ValueError: progress outside 0..1, a site missing from `base`, or overrides/ramps that do not fit SynthParams.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in 0..1, got {progress}")
    raw = base.model_dump()
    if scenario.site not in raw["sites"]:
        raise ValueError(
            f"scenario {scenario.name!r}: site {scenario.site!r} not in synth sites {sorted(raw['sites'])}"
        )
    if scenario.changed_site is not None and scenario.changed_site not in raw["sites"]:
        raw["sites"][scenario.changed_site] = copy.deepcopy(raw["sites"][scenario.site])
    try:
        raw = deep_merge(raw, scenario.overrides)
        for ramp in scenario.ramps:
            raw = _ramp(raw, ramp.path.split("."), ramp, progress, "")
        return SynthParams.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"scenario {scenario.name!r} does not fit the synth settings: {_messages(exc)}") from None
    except ValueError as exc:
        raise ValueError(f"scenario {scenario.name!r}: {exc}") from None


def load_scenarios(path: Path = DEFAULT, base: SynthParams | None = None) -> dict[str, Scenario]:
    """The scenarios of a file, each checked against `base` (default: the generator's defaults, = params.yaml) at
    the start and end of its change, so a typo fails here rather than in the middle of a benchmark.

    Raises:
        ValueError: the file's shape, a scenario's keys or values, or a setting SynthParams rejects; the message names
            the file and the scenario.
    """
    path = Path(path)
    base = base or SynthParams()
    try:
        doc = _ScenarioFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ValueError(f"{path}: {_messages(exc)}") from None
    out: dict[str, Scenario] = {}
    for name, body in doc.scenarios.items():
        try:
            scenario = Scenario.model_validate({**body, "name": name})
        except ValidationError as exc:
            raise ValueError(f"{path}: scenario {name!r}: {_messages(exc)}") from None
        for progress in (0.0, 1.0):
            try:
                scenario_synth_params(base, scenario, progress)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        out[name] = scenario
    return out


def batch_seed(seed: int, index: int) -> int:
    """The generator seed of batch `index` of a stream with base seed `seed` (distinct over both)."""
    if seed < 0 or not 0 <= index < SEED_STRIDE:
        raise ValueError(f"seed must be >= 0 and the batch index in 0..{SEED_STRIDE - 1}")
    return seed * SEED_STRIDE + index


def stream_params(params: SynthParams, site: str, patients: int, seed: int, matrix_scale: float) -> SynthParams:
    """`params` with the throw-away profile `STREAM_PROFILE` (only `site`, `patients` of them) and `seed`."""
    raw = params.model_dump()
    raw["seed"] = seed
    raw["profiles"] = {STREAM_PROFILE: {"patients": {site: patients}, "images": None, "matrix_scale": matrix_scale}}
    return SynthParams.model_validate(raw)


def generate_stream(
    base: SynthParams,
    scenario: Scenario,
    out_dir: Path,
    *,
    before: int,
    after: int,
    batch: int,
    seed: int,
    matrix_scale: float = 0.5,
    progress: ProgressFn | None = None,
) -> list[StreamBatch]:
    """Write a SYNTHETIC study stream: `before` patients of `scenario.site` as `base` has it, then `after` patients
    with the scenario applied, in batches of `batch` patients, each under `out_dir/batchNNNN/`.

    Deterministic per (base, scenario, seed, sizes); rerunning into the same folder rewrites the same files. Match
    `matrix_scale` to the profile the reference was generated with (0.5 ci, 0.8 demo, 1.0 paper): image size is
    itself a feature, so a mismatch is drift in every scenario. `out_dir/stream.json` records the batches.

    Raises:
        ValueError: negative sizes, sizes that are not multiples of `batch`, or a scenario that does not fit `base`.
    """
    if batch < 1 or before < 0 or after < 0 or before % batch or after % batch:
        raise ValueError(f"before ({before}) and after ({after}) must be >= 0 multiples of batch ({batch} >= 1)")
    out_dir = Path(out_dir)
    n_before, n_after = before // batch, after // batch
    total = n_before + n_after
    abrupt = None if scenario.gradual else scenario_synth_params(base, scenario, 1.0)
    batches: list[StreamBatch] = []
    for b in range(total):
        changed = b >= n_before
        level = 0.0
        params, site = base, scenario.site
        if changed:
            level = (b - n_before + 1) / n_after if scenario.gradual else 1.0
            params = abrupt or scenario_synth_params(base, scenario, level)
            site = scenario.target_site
        folder = out_dir / f"batch{b:04d}"
        seed_b = batch_seed(seed, b)
        summary = generate_cohort(stream_params(params, site, batch, seed_b, matrix_scale), STREAM_PROFILE, folder)
        batches.append(
            StreamBatch(
                index=b,
                folder=folder,
                dicom=folder / "dicom",
                changed=changed,
                site=site,
                patients=summary.n_patients,
                images=summary.n_images,
                progress=level,
                seed=seed_b,
            )
        )
        if progress is not None:
            progress(Progress("drift_stream", b + 1, total, "batch", detail=f"{scenario.name} batch {b}"))
    write_json(
        out_dir / MANIFEST,
        {
            "note": "SYNTHETIC phantom study stream (cordwatch monitoring/scenarios.py); no images of any person",
            "scenario": scenario.name,
            "description": scenario.description,
            "expect_image_drift": scenario.expect_image_drift,
            "seed": seed,
            "matrix_scale": matrix_scale,
            "batches": [
                {
                    "index": s.index,
                    "folder": s.folder.name,
                    "changed": s.changed,
                    "site": s.site,
                    "patients": s.patients,
                    "images": s.images,
                    "progress": s.progress,
                    "seed": s.seed,
                }
                for s in batches
            ],
        },
    )
    return batches
