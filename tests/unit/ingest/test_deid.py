"""Pseudonyms, key handling, the Basic Profile and the scrubber."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipelines.ingest import deid
from tests.conftest import CANARY, mr_dataset


def test_pseudonyms_are_stable_keyed_and_namespaced() -> None:
    a, b = deid.Pseudonymizer(b"k" * 32), deid.Pseudonymizer(b"j" * 32)
    assert a.patient("123") == a.patient("123") == a.patient(" 123 ")
    assert a.patient("123") != b.patient("123")  # another key, another pseudonym
    assert a.patient("123") != a.patient("123", issuer="OTHER")  # same ID, other issuer: another patient
    assert a.patient("X")[1:] != a.study("X")[1:]  # namespaces never collide
    assert a.patient("123").startswith("P") and len(a.patient("123")) == 17


def test_key_from_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYKEY", "s" * 20)
    assert deid.load_key("MYKEY", tmp_path / "k") == b"s" * 20
    assert not (tmp_path / "k").exists()
    monkeypatch.setenv("MYKEY", "short")
    with pytest.raises(deid.PseudonymKeyError, match="shorter"):
        deid.load_key("MYKEY", tmp_path / "k")


def test_local_key_is_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOKEY", raising=False)
    key_file = tmp_path / "state" / "pseudonym.key"
    first = deid.load_key("NOKEY", key_file)
    assert len(first) == 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert deid.load_key("NOKEY", key_file) == first


def test_basic_profile_removes_identity() -> None:
    ds = mr_dataset()
    deid.apply_basic_profile(ds)
    text = str(ds)
    for value in CANARY.values():
        assert value not in text
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.Manufacturer == "SIEMENS" and float(ds.MagneticFieldStrength) == 3.0  # acquisition facts survive


def test_scrub_and_leak_guard() -> None:
    ds = mr_dataset(SeriesDescription="SAG T2 zzcanary quentin CANARYID93417")
    tokens = deid.identity_tokens(ds)
    cleaned = deid.scrub(str(ds.SeriesDescription), tokens)
    assert "ZZCANARY" not in cleaned.upper() and "CANARYID93417" not in cleaned
    assert cleaned.startswith("SAG T2")
    assert deid.leaked(["SIEMENS", cleaned], tokens) == []
    assert deid.leaked(["hello CANARYID93417"], tokens) == ["CANARYID93417"]
    # UIDs are kept whole: their numeric parts are not tokens (they would match innocent numbers)
    assert not any(t.isdigit() and len(t) < 10 for t in tokens if t not in CANARY.values() and t != "19410923")


def _comparable(ds) -> dict:
    """Elements and values, with UIDs reduced to 'present' (the library replaces them with random ones)."""
    return {int(e.tag): ("<uid>" if e.VR == "UI" else str(e.value)) for e in ds.iterall() if e.tag != 0x00120063}


def test_present_tags_shortcut_equals_full_profile_table() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    paths = [get_testdata_file(n, download=False) for n in ("MR_small.dcm", "CT_small.dcm", "rtplan.dcm")]
    for make in [mr_dataset, *[(lambda p=p: dcmread(p)) for p in paths]]:
        fast, full = make(), make()  # two independent reads: the profile mutates in place
        before = _comparable(fast)
        assert before == _comparable(full)
        deid.apply_basic_profile(fast)
        deid.apply_full_table(full)
        for attr in ("PatientIdentityRemoved", "DeidentificationMethod"):
            del fast[attr]
        assert _comparable(fast) == _comparable(full)
        assert _comparable(fast) != before  # the profile did change something
