"""Drift scenarios are generator settings that load strictly, and their streams show the change (and only it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest

from monitoring.scenarios import (
    STREAM_PROFILE,
    Scenario,
    StreamBatch,
    batch_seed,
    generate_stream,
    load_scenarios,
    scenario_synth_params,
    stream_params,
)
from pipelines.synth.cohort import iter_plans
from pipelines.synth.params import SynthParams

BASE = SynthParams()
SCENARIOS = load_scenarios()
NAMES = {
    "no_change",
    "new_scanner",
    "field_strength",
    "rising_noise",
    "new_site_population",
    "te_drift",
    "software_series_description",
}
HEADER = (
    "InstitutionName",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "EchoTime",
    "SoftwareVersions",
    "SeriesDescription",
)


def _seed_with_both_dev_scanners(batch_index: int, patients: int) -> int:
    """A stream seed whose batch `batch_index` scans patients on both dev scanners, so a change to either shows."""
    for seed in range(200):
        params = stream_params(BASE, "dev", patients, batch_seed(seed, batch_index), 0.5)
        if len({p.scanner.model for p in iter_plans(params, STREAM_PROFILE)}) == 2:
            return seed
    raise AssertionError("no seed puts patients on both dev scanners")


SEED = _seed_with_both_dev_scanners(1, 2)  # streams below: before=2, after=2, batch=2 -> batch 1 is the changed one


def _expected(params: SynthParams, site: str) -> set[tuple[object, ...]]:
    s = params.sites[site]
    return {
        (
            s.institution_name,
            sc.model,
            sc.field_strength,
            round(sc.te_ms, 3),
            sc.software_versions,
            sc.series_description,
        )
        for sc in s.scanners
    }


def _sag_t2(batch: StreamBatch) -> list[pydicom.Dataset]:
    with (batch.folder / "cohort.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["series_kind"] == "sag_t2"]
    return [pydicom.dcmread(batch.folder / r["rel_path"]) for r in rows]


def _headers(batch: StreamBatch) -> set[tuple[object, ...]]:
    out = set()
    for ds in _sag_t2(batch):
        values = [ds.get(k) for k in HEADER]
        values[2], values[3] = float(values[2]), round(float(values[3]), 3)
        out.add(tuple(values))
    return out


def _stream(tmp_path: Path, name: str, **sizes: int) -> list[StreamBatch]:
    sizes = {"before": 2, "after": 2, "batch": 2, **sizes}
    return generate_stream(BASE, SCENARIOS[name], tmp_path / name, seed=SEED, **sizes)


def test_every_scenario_loads_and_gives_valid_synth_params() -> None:
    assert set(SCENARIOS) == NAMES
    for scenario in SCENARIOS.values():
        for progress in (0.0, 0.5, 1.0):
            params = scenario_synth_params(BASE, scenario, progress)
            assert isinstance(params, SynthParams)
            assert scenario.target_site in params.sites
    assert scenario_synth_params(BASE, SCENARIOS["no_change"], 1.0) == BASE
    assert {n for n, s in SCENARIOS.items() if s.gradual} == {"rising_noise", "te_drift"}
    assert {n for n, s in SCENARIOS.items() if not s.expect_image_drift} == {"no_change", "software_series_description"}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("  typo:\n    description: x\n    expect_image_drift: true\n    overide: {}\n", "overide"),
        (
            "  typo:\n    description: x\n    expect_image_drift: true\n"
            "    overrides: {sites: {dev: {scanners: {1: {snrr: 3}}}}}\n",
            "snrr",
        ),
        (
            "  typo:\n    description: x\n    expect_image_drift: true\n"
            "    ramps: [{path: sites.dev.scanners.*.te, start: 1, end: 2}]\n",
            "'te'",
        ),
        (
            "  typo:\n    description: x\n    expect_image_drift: true\n"
            "    overrides: {sites: {dev: {scanners: {5: {snr: 3}}}}}\n",
            "index 5",
        ),
    ],
)
def test_unknown_keys_are_rejected_naming_the_scenario_and_the_key(tmp_path: Path, body: str, named: str) -> None:
    path = tmp_path / "scenarios.yaml"
    path.write_text("scenarios:\n" + body, encoding="utf-8")
    with pytest.raises(ValueError, match="typo") as err:
        load_scenarios(path)
    assert named in str(err.value)
    path.write_text("scenarios: {}\nextra: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="extra"):
        load_scenarios(path)


@pytest.mark.parametrize(
    "name", ["no_change", "new_scanner", "field_strength", "new_site_population", "software_series_description"]
)
def test_abrupt_streams_show_the_change_in_the_headers_of_the_changed_batches_only(tmp_path: Path, name: str) -> None:
    scenario = SCENARIOS[name]
    batches = _stream(tmp_path, name)
    assert [(b.changed, b.patients, b.progress) for b in batches] == [(False, 2, 0.0), (True, 2, 1.0)]
    assert all(b.dicom == b.folder / "dicom" and b.dicom.is_dir() for b in batches)
    base_headers = _expected(BASE, "dev")
    assert _headers(batches[0]) <= base_headers
    changed = scenario_synth_params(BASE, scenario, 1.0)
    seen = _headers(batches[1])
    assert seen <= _expected(changed, scenario.target_site)
    assert (seen <= base_headers) == (name == "no_change")  # every real change is visible in some header
    if name == "new_site_population":
        ages = [int(ds.PatientAge.rstrip("Y")) for ds in _sag_t2(batches[1])]
        assert min(ages) >= 50 and batches[1].site == "hcs"
    ds = _sag_t2(batches[1])[0]
    assert "SYNTHETIC" in ds.PatientComments and "SYNTHETIC" in ds.ImageComments
    manifest = json.loads((tmp_path / name / "stream.json").read_text(encoding="utf-8"))
    assert "SYNTHETIC" in manifest["note"] and manifest["scenario"] == name


def test_gradual_scenarios_move_monotonically_batch_by_batch(tmp_path: Path) -> None:
    batches = _stream(tmp_path, "te_drift", before=1, after=3, batch=1)
    assert [b.progress for b in batches] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    base_te = {sc.model: sc.te_ms for sc in BASE.sites["dev"].scanners}
    ratios = [float(ds.EchoTime) / base_te[ds.ManufacturerModelName] for b in batches for ds in _sag_t2(b)[:1]]
    assert ratios == sorted(ratios) and ratios[0] == pytest.approx(1.0) and ratios[-1] == pytest.approx(1.45)
    assert len(set(ratios)) == 4

    noise = SCENARIOS["rising_noise"]
    snrs = [[sc.snr for sc in scenario_synth_params(BASE, noise, p).sites["dev"].scanners] for p in (0, 0.3, 0.7, 1)]
    assert snrs[0] == [sc.snr for sc in BASE.sites["dev"].scanners]
    for scanner in range(2):
        column = [row[scanner] for row in snrs]
        assert column == sorted(column, reverse=True) and len(set(column)) == 4


def test_software_upgrade_changes_two_header_fields_and_no_pixel(tmp_path: Path) -> None:
    upgraded = scenario_synth_params(BASE, SCENARIOS["software_series_description"], 1.0)
    header_only = {"software_versions", "series_description"}
    for old, new in zip(BASE.sites["dev"].scanners, upgraded.sites["dev"].scanners, strict=True):
        assert old.model_dump(exclude=header_only) == new.model_dump(exclude=header_only)
    raw_old, raw_new = BASE.model_dump(exclude={"sites"}), upgraded.model_dump(exclude={"sites"})
    assert raw_old == raw_new and BASE.sites["ext"] == upgraded.sites["ext"]
    assert upgraded.sites["dev"].scanners[0] != BASE.sites["dev"].scanners[0]

    same = {ds.SOPInstanceUID: ds.PixelData for ds in _sag_t2(_stream(tmp_path, "no_change", before=0)[0])}
    moved = {ds.SOPInstanceUID: ds for ds in _sag_t2(_stream(tmp_path, "software_series_description", before=0)[0])}
    assert set(same) == set(moved)
    assert all(moved[sop].PixelData == pixels for sop, pixels in same.items())
    assert {ds.SoftwareVersions for ds in moved.values()} >= {"syngo MR XA31"}


def test_no_study_or_patient_repeats_across_batches_or_base_seeds(tmp_path: Path) -> None:
    batches = _stream(tmp_path, "new_scanner", before=2, after=4, batch=2)
    studies = [{ds.StudyInstanceUID for ds in _sag_t2(b)} for b in batches]
    patients = [{ds.PatientID for ds in _sag_t2(b)} for b in batches]
    assert sum(map(len, studies)) == len(set().union(*studies)) == 6
    assert sum(map(len, patients)) == len(set().union(*patients)) == 6
    seeds = {batch_seed(s, b) for s in range(20) for b in range(50)}
    assert len(seeds) == 20 * 50


def test_stream_sizes_must_fill_whole_batches(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiples"):
        generate_stream(BASE, SCENARIOS["no_change"], tmp_path, before=3, after=2, batch=2, seed=0)
    with pytest.raises(ValueError, match="changed_site"):
        Scenario(name="x", description="x", expect_image_drift=False, changed_site="dev")
