"""`cordwatch predict` as a reading room runs it, on the ci project's registered model: the worklist and per-study
JSON, the DICOM SR and captures against dciodvfy and against the JSON, bad input, and where identity may go."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from pipelines.config import load_params
from pipelines.predict.dicom_results import read_structured_report
from tests.dicom_checks import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "models:/cordwatch-detector/1"  # a version, not an alias: other tests move `champion`


def _predict(project: Path, *args: str, params: Path | None = None):
    cwd = Path.cwd()
    os.chdir(project)
    try:
        return CliRunner().invoke(app, ["predict", *args, "--params", str(params or project / "params.yaml")])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _external_site(project: Path) -> Path:
    return next(p for p in (project / "data" / "synth" / "dicom").iterdir() if p.name.startswith("LAKESHORE"))


def test_xai_run_writes_worklist_results_and_valid_dicom(ci_project: Path, tmp_path: Path, harness: None) -> None:
    site = _external_site(ci_project)
    out = tmp_path / "out"
    # conf 0.001: the ci model (one epoch on 64-pixel images) is too weak to keep boxes at its operating point;
    # a low threshold gives every study detections to explain and report.
    params = ci_project / "params.yaml"
    low = tmp_path / "params-low-conf.yaml"
    low.write_text(params.read_text().replace("  conf: null", "  conf: 0.001"))
    cwd = Path.cwd()
    os.chdir(ci_project)
    started = time.time() - 1  # mtime granularity
    try:
        result = CliRunner().invoke(
            app, ["predict", str(site), "--mode", "xai", "--model", MODEL, "--out", str(out), "--params", str(low)]
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "SYNTHETIC" in result.output
    worklist = pd.read_csv(out / "summary.csv")
    cohort = pd.read_csv(ci_project / "data" / "synth" / "cohort.csv")
    sagittal_t2 = cohort[(cohort["site"] == "ext") & (cohort["series_kind"] == "sag_t2")]
    studies = {pydicom.dcmread(ci_project / "data" / "synth" / p).StudyInstanceUID for p in sagittal_t2["rel_path"]}
    assert set(worklist["study_instance_uid"]) == studies
    assert worklist["images"].sum() == len(sagittal_t2)
    assert (worklist["status"] == "ok").all() and worklist["explained"].all()
    assert list(worklist["priority"]) == sorted(worklist["priority"], reverse=True)  # most urgent first

    for row in worklist.itertuples():
        result_json = json.loads((out / row.result).read_text())
        study_dir = (out / row.result).parent
        assert result_json["model"]["version"] == "1" and result_json["synthetic"] is True
        assert result_json["xai"]["method"] == "hirescam"
        detections = [(im["sop_instance_uid"], d) for im in result_json["images"] for d in im["detections"]]
        assert detections, "low threshold: every image has boxes"
        # Every detection has its overlay PNG and its secondary capture, valid and in the source study.
        for sop, det in detections:
            assert (study_dir / det["heatmap"]).is_file()
            capture_path = study_dir / det["capture"]["path"]
            capture = pydicom.dcmread(capture_path)
            assert capture.StudyInstanceUID == row.study_instance_uid
            assert capture.SOPInstanceUID == det["capture"]["sop_instance_uid"]
            assert capture.BodyPartExamined
            assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == sop
        assert dciodvfy_errors(study_dir / det["capture"]["path"]) == []
        # The SR says what the JSON says.
        sr_path = study_dir / result_json["dicom"]["sr"]
        assert dciodvfy_errors(sr_path) == []
        sr = pydicom.dcmread(sr_path)
        assert sr.StudyInstanceUID == row.study_instance_uid
        reported = sorted(
            (r.sop_instance_uid, r.label, round(r.confidence, 4), tuple(round(v, 2) for v in r.box))
            for r in read_structured_report(sr)
        )
        expected = sorted(
            (sop, d["label"], d["confidence"], tuple(d["box"][k] for k in ("x_min", "y_min", "x_max", "y_max")))
            for sop, d in detections
        )
        assert len(reported) == len(expected)
        for got, want in zip(reported, expected, strict=True):
            assert got[:2] == want[:2] and got[2] == pytest.approx(want[2], abs=1e-4)
            assert got[3] == pytest.approx(want[3], abs=1e-2)

    # Identity stays in the output folder: not in the CLI's output or logs, nor in anything the run wrote
    # elsewhere (the project's state, reports, MLflow, Prefect's database). Ingestion's own state (its journal and
    # source map, which name input paths by design) predates the run and is not predict's.
    canaries = {row.study_instance_uid for row in worklist.itertuples()}
    canaries |= {str(pydicom.dcmread(next(site.rglob("*.dcm"))).PatientID), site.name}
    assert all(canary not in result.output for canary in canaries)
    written = [p for p in _files_outside(ci_project, out) if p.stat().st_mtime >= started]
    written += [p for p in _prefect_database() if p.is_file()]
    assert written, "the run wrote nothing outside --out? the check would prove nothing"
    for path in written:
        data = path.read_bytes()
        assert not [c for c in canaries if c.encode() in data], path


def _files_outside(project: Path, out: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and out not in p.parents and "synth" not in p.parts]


def _prefect_database() -> list[Path]:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url or ""
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return [Path(url.split("///", 1)[1])] if url.startswith("sqlite") and "///" in url else []


def test_quick_and_auto_modes_on_a_study(ci_project: Path, tmp_path: Path, harness: None) -> None:
    study = next(p for p in _external_site(ci_project).iterdir() if p.is_dir())
    # conf 0.001: the weak ci model keeps boxes (see the xai test)
    text = (ci_project / "params.yaml").read_text().replace("  conf: null", "  conf: 0.001")
    low_conf = tmp_path / "params-low.yaml"
    low_conf.write_text(text)
    quick = _predict(
        ci_project, str(study), "--mode", "quick", "--model", MODEL, "--out", str(tmp_path / "q"), params=low_conf
    )
    assert quick.exit_code == 0, quick.output
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["studies"] == 1 and summary["explained"] == 0 and summary["mode"] == "quick"
    assert not list((tmp_path / "q").rglob("*.png"))  # quick: no heatmaps
    assert list((tmp_path / "q").rglob("sr.dcm"))  # but the SR, for the PACS
    quick_result = json.loads((tmp_path / "q" / summary["worklist"][0]["result"]).read_text())
    scores = sorted({d["confidence"] for im in quick_result["images"] for d in im["detections"]})
    assert len(scores) >= 2
    # a band holding the lower half of the boxes, so the study is uncertain whatever the ci model labels; its upper
    # edge halfway between two reported (4-decimal) scores, so rounding cannot move a box across it
    mid = len(scores) // 2
    band = (0.0, round((scores[mid - 1] + scores[mid]) / 2, 6))
    band_yaml = "  uncertainty_band:\n  - 0.25\n  - 0.6\n"
    auto_params = tmp_path / "params-auto.yaml"
    auto_params.write_text(text.replace(band_yaml, f"  uncertainty_band:\n  - {band[0]!r}\n  - {band[1]!r}\n"))
    assert load_params(auto_params).predict.uncertainty_band == band
    out = tmp_path / "a"
    auto = _predict(ci_project, str(study), "--mode", "auto", "--model", MODEL, "--out", str(out), params=auto_params)
    assert auto.exit_code == 0, auto.output
    row = pd.read_csv(tmp_path / "a" / "summary.csv").iloc[0]
    res = json.loads((tmp_path / "a" / row["result"]).read_text())
    detections = [d for im in res["images"] for d in im["detections"]]
    assert res["explained"] and res["triage"]["uncertain"]
    assert res["explain_reason"] == ("positive" if res["triage"]["compression_suspected"] else "uncertain")
    # a map for each box a reader would question, and none for the others (selection: tests/unit/predict)
    questioned = [d["label"] == "compression" or band[0] <= d["confidence"] < band[1] for d in detections]
    assert any(questioned)
    for det, asked in zip(detections, questioned, strict=True):
        assert ("heatmap" in det) == asked, det


def test_bad_input_is_reported_per_file_and_the_rest_still_runs(
    ci_project: Path, tmp_path: Path, harness: None, write_mr
) -> None:
    study = next(p for p in _external_site(ci_project).iterdir() if p.is_dir())
    tree = tmp_path / "in"
    shutil.copytree(study, tree / "good")
    good = next((tree / "good").rglob("*.dcm"))
    uid = pydicom.dcmread(good).StudyInstanceUID
    (tree / "good" / "notes.txt").write_text("not an image")
    (tree / "good" / "cut.dcm").write_bytes(good.read_bytes()[:-2000])  # header intact, pixel data cut short
    write_mr(tree / "other" / "t1.dcm", SeriesDescription="SAG T1 TSE", EchoTime=10.0)  # a study with no T2
    out = tmp_path / "out"
    result = _predict(ci_project, str(tree), "--mode", "quick", "--model", MODEL, "--out", str(out))
    assert result.exit_code == 1, (result.output, result.exception)  # something failed; the rest was read
    assert isinstance(result.exception, SystemExit), result.exception  # exit 1 by choice, not a crash
    worklist = pd.read_csv(out / "summary.csv").set_index("study_instance_uid")
    res = json.loads((out / worklist.loc[uid, "result"]).read_text())
    assert len(res["images"]) >= 1  # the good images were read
    reasons = {f["path"].split("/")[-1]: f.get("reason") for f in res["files"] if f["status"] == "failed"}
    assert reasons.get("cut.dcm") in {"truncated", "unreadable"}
    assert worklist.loc[uid, "failed_files"] >= 1 and res["status"] == "failed"
    no_t2 = [r for r in worklist.itertuples() if r.images == 0 and isinstance(r.Index, str)]  # NaN: no study
    assert len(no_t2) == 1
    other = json.loads((out / no_t2[0].result).read_text())
    assert any(p["reason"] == "no_selected_image" for p in other["problems"])
    assert any(f["status"] == "not_selected" and f["reason"].startswith("series_rule:") for f in other["files"])
    text_files = [
        p for p in json.loads((out / "summary.json").read_text())["worklist"] if p["study_instance_uid"] == ""
    ]
    assert text_files and text_files[0]["failed_files"] >= 1  # notes.txt: no study, still accounted for

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = _predict(ci_project, str(empty), "--model", MODEL, "--out", str(tmp_path / "o2"))
    assert nothing.exit_code == 2 and "no files" in nothing.output
    missing = _predict(ci_project, str(tmp_path / "nope"), "--model", MODEL)
    assert missing.exit_code == 2 and "not found" in missing.output
    no_model = _predict(ci_project, str(tree), "--model", "models:/cordwatch-detector@nobody", "--out", str(out))
    assert no_model.exit_code == 2 and "alias 'nobody'" in no_model.output


def test_predict_from_a_real_pacs_stores_sr_and_captures_in_each_study(
    ci_project: Path, tmp_path: Path, harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    from pipelines.predict.pacs import DicomWebPacs
    from tests.servers import orthanc

    site = _external_site(ci_project)
    low = tmp_path / "params-low-conf.yaml"
    # Two DICOM workers: the SR and captures are built beside the detection and waited for before STOW.
    text = (ci_project / "params.yaml").read_text().replace("  conf: null", "  conf: 0.001")
    low.write_text(text.replace("  dicom_workers: 0", "  dicom_workers: 2"))
    assert "dicom_workers: 2" in low.read_text()
    with orthanc(tmp_path / "orthanc") as server:
        monkeypatch.setenv("CORDWATCH_PACS_USERNAME", server.user.username)
        monkeypatch.setenv("CORDWATCH_PACS_PASSWORD", server.user.password)
        uploaded = [pydicom.dcmread(p) for p in sorted(site.rglob("*.dcm"))]  # T2 and the distractor series
        DicomWebPacs(server.dicomweb).store(uploaded)
        studies = {ds.StudyInstanceUID for ds in uploaded}
        out = tmp_path / "out"

        def run():
            cwd = Path.cwd()
            os.chdir(ci_project)
            try:
                return CliRunner().invoke(
                    app,
                    ["predict", "--pacs", server.dicomweb, "--mode", "xai", "--model", MODEL, "--out", str(out),
                     "--params", str(low)],
                )  # fmt: skip
            finally:
                os.chdir(cwd)

        first = run()
        assert first.exit_code == 0, (first.output, first.exception)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["source"] == "pacs" and summary["studies"] == len(studies)
        session = requests.Session()
        session.auth = (server.user.username, server.user.password)
        raw = DICOMwebClient(server.dicomweb, session=session)
        for row in summary["worklist"]:
            result = json.loads((out / row["result"]).read_text())
            uid = result["study_instance_uid"]
            assert result["pacs"]["stored"] == 1 + len(result["dicom"]["captures"]) > 1
            held = raw.search_for_instances(study_instance_uid=uid)
            by_sop = {item["00080018"]["Value"][0]: item["00080016"]["Value"][0] for item in held}
            assert (
                by_sop.get(result["dicom"]["sr_sop_instance_uid"]) == "1.2.840.10008.5.1.4.1.1.88.34"
            )  # Comprehensive 3D SR
            captures = [d["capture"]["sop_instance_uid"] for im in result["images"] for d in im["detections"]]
            assert captures and all(by_sop.get(c) == "1.2.840.10008.5.1.4.1.1.7" for c in captures)
            # What the PACS holds is what was written, and it validates.
            sr = raw.retrieve_instance(uid, _series_of(raw, uid, result["dicom"]["sr_sop_instance_uid"]),
                                       result["dicom"]["sr_sop_instance_uid"])  # fmt: skip
            written = tmp_path / "from-pacs.dcm"
            sr.save_as(written, enforce_file_format=True)
            assert dciodvfy_errors(written) == []
            assert len(read_structured_report(sr)) == sum(len(im["detections"]) for im in result["images"])
        assert not (out / ".incoming").exists()  # scratch copies removed

        again = run()  # nothing new for this model version: no study read twice, nothing stored twice
        assert again.exit_code == 0, again.output
        rerun = json.loads((out / "summary.json").read_text())
        assert rerun["studies"] == 0 and rerun["skipped_already_read"] == len(studies) and rerun["stored"] == 0

        # Monitoring reads the same PACS through the same path: a feature row per study, and nothing stored back.
        from monitoring.collect import collect_features, read_store
        from pipelines.config import load_params
        from pipelines.predict.model import resolve_model

        held_before = sum(len(raw.search_for_instances(study_instance_uid=u)) for u in studies)
        cwd = Path.cwd()
        os.chdir(ci_project)
        try:
            params = load_params(ci_project / "params.yaml")
            kept = collect_features(
                params, pacs_url=server.dicomweb, store=tmp_path / "store", out_dir=tmp_path / "monitor",
                model=resolve_model(MODEL, params),
            )  # fmt: skip
        finally:
            os.chdir(cwd)
        assert kept["new_rows"] == len(studies) == len(read_store(tmp_path / "store")) and kept["stored"] == 0
        assert sum(len(raw.search_for_instances(study_instance_uid=u)) for u in studies) == held_before


def _series_of(client, study_uid: str, sop_uid: str) -> str:
    for item in client.search_for_instances(study_instance_uid=study_uid):
        if item["00080018"]["Value"][0] == sop_uid:
            return item["0020000E"]["Value"][0]
    raise AssertionError("instance not on the server")
