"""Synthetic cohort generator: valid DICOM, sound labels, determinism, site effects, distractors, readers."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydantic import ValidationError

from pipelines.synth import CohortSummary, SynthParams, generate_cohort
from pipelines.synth.anatomy import sample_anatomy
from pipelines.synth.calibration import calibration_table, reader_ap50, reader_map50, simulate_annotations
from pipelines.synth.cohort import annotate, iter_plans, plan_patient, slice_counts
from pipelines.synth.params import LEVEL_NAMES, load_synth_params
from pipelines.synth.render import SliceGeometry, level_boxes, render_sagittal, tissue_signal
from tests.dicom_checks import dciodvfy_errors

PARAMS_YAML = Path(__file__).resolve().parents[3] / "params.yaml"
ANNOTATION_COLUMNS = [
    "sop_instance_uid",
    "reader_id",
    "reader_level",
    "label",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "severity",
]
BOX = ["x_min", "y_min", "x_max", "y_max"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def params() -> SynthParams:
    return SynthParams()


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory, params: SynthParams) -> tuple[CohortSummary, Path, list]:
    out = tmp_path_factory.mktemp("ci") / "synth"
    calls: list[tuple[int, int]] = []
    summary = generate_cohort(params, "ci", out, progress=lambda d, t: calls.append((d, t)))
    return summary, out, calls


@pytest.fixture(scope="module")
def cohort(ci_run: tuple) -> pd.DataFrame:
    return pd.read_csv(ci_run[1] / "cohort.csv")


@pytest.fixture(scope="module")
def annotations(ci_run: tuple) -> pd.DataFrame:
    return pd.read_csv(ci_run[1] / "annotations.csv")


# --- params ---


def test_params_yaml_synth_block_equals_model_defaults(params: SynthParams) -> None:
    raw = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))["synth"]
    assert SynthParams.model_validate(raw) == params
    assert load_synth_params(PARAMS_YAML) == params
    # Every key line of the synth block carries an inline comment (ultralytics style).
    text = PARAMS_YAML.read_text(encoding="utf-8")
    block = text[text.index("\nsynth:") : text.index("\ningest:")]
    for line in block.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "  # " in line, f"uncommented key line: {line!r}"


def test_unknown_keys_rejected(params: SynthParams) -> None:
    raw = params.model_dump(mode="json")
    with pytest.raises(ValidationError, match="sede"):
        SynthParams.model_validate({**raw, "sede": 1})
    raw["sites"]["dev"]["scanners"][0]["snrr"] = 3
    with pytest.raises(ValidationError, match="snrr"):
        SynthParams.model_validate(raw)


def test_profile_lookup_lists_available(params: SynthParams) -> None:
    assert params.profile("ci").patients["dev"] > 0
    with pytest.raises(ValueError, match=r"available profiles: ci, demo, paper"):
        params.profile("nope")


def test_invalid_params_rejected(params: SynthParams) -> None:
    raw = params.model_dump(mode="json")
    raw["profiles"]["ci"]["patients"]["mars"] = 3
    with pytest.raises(ValidationError, match="unknown sites"):
        SynthParams.model_validate(raw)
    raw = params.model_dump(mode="json")
    raw["readers"] = [r for r in raw["readers"] if r["level"] != "expert"]
    with pytest.raises(ValidationError, match="exactly one expert"):
        SynthParams.model_validate(raw)


def test_paper_profile_counts(params: SynthParams) -> None:
    prof = params.profile("paper")
    assert prof.patients == {"dev": 641, "ext": 94}
    dev, ext = slice_counts(params, "paper", "dev"), slice_counts(params, "paper", "ext")
    assert (len(dev), len(ext)) == (641, 94)
    assert (int(dev.sum()), int(ext.sum())) == (1256, 175)  # 1,431 images, as in the study
    assert set(np.unique(np.concatenate([dev, ext]))) <= {1, 2, 3}
    assert 1.9 < (dev.sum() + ext.sum()) / 735 < 2.0


# --- DICOM ---


def test_summary_matches_files(ci_run: tuple, cohort: pd.DataFrame, annotations: pd.DataFrame) -> None:
    summary, out, calls = ci_run
    prof = SynthParams().profile("ci")
    assert summary.n_patients == sum(prof.patients.values()) == cohort["patient_id"].nunique()
    assert summary.n_images == int((cohort["is_distractor"] == 0).sum())
    assert summary.n_distractor_files == int((cohort["is_distractor"] == 1).sum())
    assert summary.n_annotations == len(annotations)
    assert {s: c["patients"] for s, c in summary.per_site.items()} == prof.patients
    assert len(list((out / "dicom").rglob("*.dcm"))) == len(cohort)
    assert not list(out.rglob("*.tmp"))
    assert calls[-1] == (summary.n_patients, summary.n_patients)
    readme = (out / "SYNTHETIC_DATA_README.txt").read_text()
    assert "SYNTHETIC" in readme and "NOT the data of Du et al." in readme


def test_dicom_files_valid(ci_run: tuple, cohort: pd.DataFrame) -> None:
    out = ci_run[1]
    for row in cohort.itertuples():
        ds = pydicom.dcmread(out / row.rel_path)
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4" == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == row.sop_instance_uid
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.ImplementationClassUID
        assert ds.Modality == "MR" and ds.BodyPartExamined == "CSPINE" and ds.MRAcquisitionType == "2D"
        assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (1, "MONOCHROME2")
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        for kw in (
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate",
            "StudyTime", "ReferringPhysicianName", "InstitutionName", "InstitutionAddress", "StationName",
            "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "RepetitionTime", "EchoTime",
            "SliceThickness", "PixelSpacing", "ImagePositionPatient", "SeriesDescription", "ScanningSequence",
            "SequenceVariant", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
        ):  # fmt: skip
            assert str(ds.data_element(kw).value).strip(), kw
        assert ds.PatientID == row.patient_id and str(ds.PatientID) in row.rel_path
        assert "SYNTHETIC PHANTOM" in ds.ImageComments
        assert [float(v) for v in ds.PixelSpacing] == [row.pixel_spacing] * 2
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns) == (row.rows, row.columns)
        assert arr.dtype == np.uint16 and arr.max() < 4096 and arr.std() > 0
        iop = [float(v) for v in ds.ImageOrientationPatient]
        if row.series_kind == "ax_t2":
            assert iop == [1, 0, 0, 0, 1, 0]
        else:
            assert iop == [0, 1, 0, 0, 0, -1]
            assert 128 <= ds.Rows <= 160  # ci profile: small matrices
    # One study per patient; the series of a study share its frame of reference.
    sample = [pydicom.dcmread(out / p, stop_before_pixels=True) for p in cohort["rel_path"]]
    per_patient = pd.DataFrame(
        [(d.PatientID, d.StudyInstanceUID, d.FrameOfReferenceUID) for d in sample], columns=["p", "s", "f"]
    )
    assert (per_patient.groupby("p")[["s", "f"]].nunique() == 1).all().all()


def test_dciodvfy_reports_no_errors(ci_run: tuple, cohort: pd.DataFrame) -> None:
    out = ci_run[1]
    for rel in cohort.groupby(["series_kind", "model"])["rel_path"].first():
        assert dciodvfy_errors(out / rel) == [], rel


# --- labels ---


def test_annotation_contract(cohort: pd.DataFrame, annotations: pd.DataFrame, params: SynthParams) -> None:
    assert list(annotations.columns) == ANNOTATION_COLUMNS
    assert set(annotations["reader_level"]) == {"expert", "mid", "junior"}
    assert annotations.groupby("reader_level")["reader_id"].nunique().to_dict() == {
        "expert": 1,
        "mid": 2,
        "junior": 2,
    }
    assert set(annotations["label"]) <= {"normal", "compression"}
    assert set(annotations["severity"]) <= {"none", "mild", "moderate", "severe"}
    assert ((annotations["label"] == "normal") == (annotations["severity"] == "none")).all()
    images = cohort[cohort["is_distractor"] == 0].set_index("sop_instance_uid")
    # Distractors are never annotated; every labelled image is.
    assert set(annotations["sop_instance_uid"]) == set(images.index)
    size = images.loc[annotations["sop_instance_uid"], ["columns", "rows"]].to_numpy()
    b = annotations[BOX].to_numpy()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= size[:, 0]).all() and (b[:, 3] <= size[:, 1]).all()
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def test_one_expert_box_per_level(cohort: pd.DataFrame, annotations: pd.DataFrame) -> None:
    expert = annotations[annotations["reader_level"] == "expert"]
    per_image = expert.groupby("sop_instance_uid")
    assert (per_image.size() == len(LEVEL_NAMES)).all()
    # Boxes run head to feet without overlapping much: one per level, in order.
    for _, grp in per_image:
        y = grp.sort_values("y_min")
        assert (y["y_min"].to_numpy()[1:] >= y["y_max"].to_numpy()[:-1] - 2.0).all()
    truth = cohort[cohort["is_distractor"] == 0].set_index("sop_instance_uid")
    n_comp = expert.assign(c=expert["label"] == "compression").groupby("sop_instance_uid")["c"].sum()
    assert (n_comp == truth.loc[n_comp.index, "n_compressed_levels"]).all()
    rank = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
    worst = expert.assign(r=expert["severity"].map(rank)).groupby("sop_instance_uid")["r"].max()
    assert (worst == truth.loc[worst.index, "max_severity"].map(rank)).all()


def test_compression_boxes_sit_on_narrowed_canal(params: SynthParams) -> None:
    """Each compressed level's box holds less CSF than the same patient rendered without that compression."""
    values = tissue_signal(3500.0, 100.0, 3.0)
    checked = 0
    for i in range(12):
        anat = sample_anatomy(np.random.default_rng([99, i]), params.anatomy, prevalence=1.0)
        g = SliceGeometry(rows=256, cols=256, ps=0.94, theta=0.04, shift_a=1.0, shift_s=-2.0, x_lat=1.5)
        boxes = level_boxes(anat, g)
        img = render_sagittal(anat, g, values)
        for k, sev in enumerate(anat.severity):
            if sev == "none":
                continue
            healthy = dataclasses.replace(
                anat,
                severity=tuple("none" if j == k else s for j, s in enumerate(anat.severity)),
                mechanism=tuple("none" if j == k else m for j, m in enumerate(anat.mechanism)),
                edema_len=np.where(np.arange(len(anat.edema_len)) == k, 0.0, anat.edema_len),
            )
            ref = render_sagittal(healthy, g, values)
            x0, y0 = np.floor(boxes[k, :2]).astype(int)
            x1, y1 = np.ceil(boxes[k, 2:]).astype(int)
            csf = 0.85 * values["csf"]  # above the grade-3 cord hyperintensity, which is bright but not CSF
            assert (img[y0:y1, x0:x1] > csf).sum() < (ref[y0:y1, x0:x1] > csf).sum(), (i, k, sev)
            checked += 1
    assert checked >= 10


def test_compression_darkens_boxes_in_dicom(ci_run: tuple, cohort: pd.DataFrame, annotations: pd.DataFrame) -> None:
    """On the written DICOM, compression boxes are darker (less bright CSF) than normal boxes on average."""
    out = ci_run[1]
    expert = annotations[annotations["reader_level"] == "expert"]
    rel = cohort.set_index("sop_instance_uid")["rel_path"]
    stats: dict[str, list[float]] = {"normal": [], "compression": []}
    for sop, grp in expert.groupby("sop_instance_uid"):
        arr = pydicom.dcmread(out / rel[sop]).pixel_array.astype(float)
        crops = [
            arr[int(r.y_min) : int(np.ceil(r.y_max)), int(r.x_min) : int(np.ceil(r.x_max))] for r in grp.itertuples()
        ]
        ref = np.percentile(np.concatenate([c.ravel() for c in crops]), 95)
        for c, r in zip(crops, grp.itertuples(), strict=True):
            stats[r.label].append(float(c.mean() / ref))
    assert len(stats["compression"]) >= 10
    assert np.mean(stats["compression"]) < np.mean(stats["normal"]) - 0.02


# --- determinism ---


def test_same_seed_identical_bytes_and_rerun_overwrites(ci_run: tuple, params: SynthParams, tmp_path: Path) -> None:
    first = _hashes(ci_run[1])
    out = tmp_path / "again"
    generate_cohort(params, "ci", out)
    assert _hashes(out) == first
    # Rerun into the same directory: identical again, and stale files from another run are removed.
    stale = out / "dicom" / "OLD_SITE" / "P0" / "1.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    (out / "dicom" / ".x.dcm.tmp").write_bytes(b"half")
    generate_cohort(params, "ci", out)
    assert _hashes(out) == first
    assert not (out / "dicom" / "OLD_SITE").exists()


def test_different_seed_differs(params: SynthParams, ci_run: tuple, tmp_path: Path) -> None:
    other = params.model_copy(update={"seed": params.seed + 1})
    ann_a = pd.read_csv(ci_run[1] / "annotations.csv")
    ann_b = simulate_annotations(other, "ci")
    assert not set(ann_a["sop_instance_uid"]) & set(ann_b["sop_instance_uid"])
    assert not np.array_equal(ann_a[BOX].to_numpy()[:50], ann_b[BOX].to_numpy()[:50])


def test_patients_are_order_independent(params: SynthParams, annotations: pd.DataFrame) -> None:
    # Planning patient 3 alone gives what the full streaming run wrote for it.
    counts = slice_counts(params, "ci", "ext")
    plan = plan_patient(params, "ci", "ext", 3, int(counts[3]))
    again = next(p for p in iter_plans(params, "ci", ["ext"]) if p.index == 3)
    assert plan.ident == again.ident and plan.geoms == again.geoms
    sops = {plan.sop_uid("sag_t2", k) for k in range(len(plan.geoms))}
    written = annotations[annotations["sop_instance_uid"].isin(sops)]
    alone = pd.DataFrame(annotate(params, "ci", plan), columns=ANNOTATION_COLUMNS)
    assert len(alone) > 0
    assert alone[BOX].astype(float).to_numpy().tolist() == written[BOX].to_numpy().tolist()
    simulated = simulate_annotations(params, "ci")
    assert simulated[BOX].round(2).equals(annotations[BOX].round(2))


# --- sites, scanners, distractors ---


def test_sites_differ_in_scanner_and_metadata(ci_run: tuple, cohort: pd.DataFrame) -> None:
    out = ci_run[1]
    sag = cohort[cohort["series_kind"] == "sag_t2"]
    dev, ext = sag[sag["site"] == "dev"], sag[sag["site"] == "ext"]
    assert not set(dev["manufacturer"]) & set(ext["manufacturer"])
    assert set(cohort["field_strength"]) == {1.5, 3.0}
    inst = {
        s: {pydicom.dcmread(out / p, stop_before_pixels=True).InstitutionName for p in g["rel_path"]}
        for s, g in sag.groupby("site")
    }
    assert len(inst["dev"]) == len(inst["ext"]) == 1 and inst["dev"] != inst["ext"]
    # Resolution differs by scanner (matrix and pixel spacing).
    assert sag.groupby("model")["rows"].first().nunique() > 1
    assert dev["pixel_spacing"].mean() != pytest.approx(ext["pixel_spacing"].mean(), abs=0.01)


def test_distractor_rates_and_tags(params: SynthParams, ci_run: tuple, cohort: pd.DataFrame) -> None:
    big = params.model_copy(
        update={
            "profiles": {
                **params.profiles,
                "rate": params.profile("ci").model_copy(update={"patients": {"dev": 400}}),
            }
        }
    )
    plans = list(iter_plans(big, "rate"))
    dp = params.distractors
    assert np.mean([p.has_sag_t1 for p in plans]) == pytest.approx(dp.sag_t1_rate, abs=0.07)
    assert np.mean([bool(p.axial_levels) for p in plans]) == pytest.approx(dp.axial_t2_rate, abs=0.07)
    out = ci_run[1]
    kinds = set(cohort["series_kind"])
    assert {"sag_t2", "sag_t1", "ax_t2"} <= kinds
    for kind, grp in cohort[cohort["is_distractor"] == 1].groupby("series_kind"):
        ds = pydicom.dcmread(out / grp["rel_path"].iloc[0], stop_before_pixels=True)
        if kind == "sag_t1":
            assert ds.SeriesDescription == dp.sag_t1_description and float(ds.EchoTime) == dp.sag_t1_te_ms
        else:
            assert ds.SeriesDescription == dp.axial_t2_description
    # A patient's distractor series sit in the same study as its labelled series.
    assert (cohort.groupby("patient_id")["rel_path"].apply(lambda s: s.str.split("/").str[3].nunique()) == 1).all()


def test_rates_zero_means_no_distractors(params: SynthParams) -> None:
    quiet = params.model_copy(
        update={"distractors": params.distractors.model_copy(update={"sag_t1_rate": 0.0, "axial_t2_rate": 0.0})}
    )
    assert not any(p.has_sag_t1 or p.axial_levels for p in iter_plans(quiet, "ci"))


# --- readers ---


def test_reader_map50_perfect_and_degraded(annotations: pd.DataFrame) -> None:
    ref = annotations[annotations["reader_level"] == "expert"]
    assert reader_map50(ref, ref) == pytest.approx(0.995, abs=1e-3)  # ultralytics' 101-point AP ceiling
    # Calling every box "normal" zeroes compression AP; shifting boxes by their width kills every match.
    all_normal = ref.assign(label="normal")
    assert reader_ap50(all_normal, ref)["compression"] == 0.0
    shifted = ref.assign(x_min=ref["x_max"], x_max=ref["x_max"] + (ref["x_max"] - ref["x_min"]))
    assert reader_map50(shifted, ref) == 0.0
    # Simulated physicians are imperfect.
    mid = reader_map50(annotations[annotations["reader_level"] == "mid"], ref)
    assert mid < 0.995


@pytest.mark.slow
def test_paper_calibration_subset(params: SynthParams) -> None:
    """Mid-level readers land near the study's 0.912 mAP50 on the paper profile; juniors lower."""
    table = calibration_table(params, "paper", max_patients=300).set_index("reader_id")
    assert table.loc["mean_mid", "map50"] == pytest.approx(0.912, abs=0.025)
    assert table.loc["mean_junior", "map50"] < table.loc["mean_mid", "map50"] - 0.02
