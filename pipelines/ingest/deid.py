"""De-identification: keyed pseudonyms and the DICOM PS3.15 Basic Application Level Confidentiality Profile.

Library: `dicom-anonymizer` (KitwareMedical). It encodes PS3.15 Table E.1-1 action codes (D, Z, X, U and their
combinations) tag by tag, versioned by DICOM edition (we use its `dicomfields_2026c` table), and works on an
in-memory pydicom Dataset. dicognito replaces values with plausible fakes rather than applying the profile's
action codes, and deid needs recipe files; neither maps as directly onto the standard.

Pseudonyms are HMAC-SHA256 of the original identifier under a secret key, so the same patient always gets the same
key (patients stay groupable for leakage-free splits) while nobody without the key can reverse or re-derive it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

log = logging.getLogger(__name__)

PROFILE_TABLE = "dicomfields_2026c"
PROFILE_NAME = f"DICOM PS3.15 Basic Application Level Confidentiality Profile ({PROFILE_TABLE}, dicom-anonymizer)"

# Attributes whose values identify the patient or the encounter; their values (and their parts) are scrubbed from
# any free text we keep, and a final guard checks no output value contains them.
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionAddress",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
)


class PseudonymKeyError(RuntimeError):
    """No usable pseudonymisation key."""


def load_key(env_var: str, key_file: Path) -> bytes:
    """Return the pseudonymisation secret.

    Taken from the environment variable when set. Otherwise a local key file is used, created (mode 0600) on first
    use so a single-machine install works out of the box; it must be backed up, since losing it changes every
    pseudonym. The key itself is never logged.
    """
    value = os.environ.get(env_var, "")
    if value:
        if len(value) < 16:
            raise PseudonymKeyError(f"${env_var} is set but shorter than 16 characters; use a long random secret")
        return value.encode()
    if key_file.is_file():
        data = key_file.read_bytes().strip()
        if len(data) < 16:
            raise PseudonymKeyError(f"pseudonym key file {key_file} is too short; delete it or set ${env_var}")
        return data
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    log.warning(
        "no $%s set: created a local pseudonym key at %s (back it up; pseudonyms depend on it)", env_var, key_file
    )
    return key_file.read_bytes().strip()


@dataclass(frozen=True)
class Pseudonymizer:
    """Keyed, namespaced pseudonyms: `P` patient, `S` study, `R` series, `I` image, `F` source file, `T` site."""

    key: bytes

    def _digest(self, namespace: str, value: str, length: int = 16) -> str:
        mac = hmac.new(self.key, f"{namespace}\x00{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:length]

    def patient(self, patient_id: str, issuer: str = "") -> str:
        return "P" + self._digest("patient", f"{issuer}\x00{patient_id.strip()}")

    def study(self, study_uid: str) -> str:
        return "S" + self._digest("study", study_uid.strip())

    def series(self, series_uid: str) -> str:
        return "R" + self._digest("series", series_uid.strip())

    def image(self, sop_instance_uid: str) -> str:
        return "I" + self._digest("image", sop_instance_uid.strip())

    def source(self, relative_path: str) -> str:
        return "F" + self._digest("source", relative_path)

    def site(self, institution: str) -> str:
        return "site-" + self._digest("site", institution.strip().upper(), 8)


def identity_tokens(ds: Dataset) -> set[str]:
    """Identity strings of this dataset, for scrubbing free text and for the leak guard.

    Whole values of every identity attribute, plus the parts (3+ characters) of names, IDs and addresses; UIDs are
    kept whole, since their numeric components also occur in innocent numbers.
    """
    tokens: set[str] = set()
    for keyword in IDENTITY_KEYWORDS:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            tokens.add(text)
            if not keyword.endswith("UID"):
                tokens.update(p for p in re.split(r"[\^\s,.\-/]+", text) if len(p) >= 3)
    return tokens


def scrub(text: str, tokens: Iterable[str]) -> str:
    """Remove identity tokens from free text (the PS3.15 'Clean Descriptors' idea), longest first."""
    for token in sorted(tokens, key=len, reverse=True):
        if token and token.upper() in text.upper():
            text = re.sub(re.escape(token), "[removed]", text, flags=re.IGNORECASE)
    return text


def apply_basic_profile(ds: Dataset) -> None:
    """Apply the Basic Profile in place and mark the dataset as de-identified (PS3.15 E.1.1).

    Every action in the table is a no-op for an absent attribute, so only the actions for attributes present in
    this dataset (plus the repeating-group masks) are handed to the library: the same result, several times faster
    than looping over all ~650 table entries per file (`tests/unit/ingest/test_deid.py` checks the equivalence).
    """
    from dicomanonymizer import simpledicomanonymizer as anonymizer

    single, masked = _basic_profile_actions()
    present = {int(t) for t in ds.keys()}  # noqa: SIM118 - iterating a Dataset yields elements
    if getattr(ds, "file_meta", None) is not None:
        present.update(int(t) for t in ds.file_meta.keys())  # noqa: SIM118
    rules = {single[t][0]: single[t][1] for t in present if t in single}
    # Each repeating-group mask costs the library a full recursive walk; hand over only the masks that match some
    # element anywhere in the dataset (found in one walk of our own).
    everywhere = {int(e.tag) for e in ds.iterall()}
    for mask, action in masked.items():
        group, element, gmask, emask = mask
        if any((t >> 16) & gmask == group & gmask and (t & 0xFFFF) & emask == element & emask for t in everywhere):
            rules[mask] = action
    anonymizer.anonymize_dataset(ds, base_rules_gen=lambda: rules, delete_private_tags=True)
    # The library caches old->new UIDs in a module-level dict; clear it so memory stays flat over long runs and
    # no original UID lingers in the worker.
    anonymizer.dictionary.clear()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = PROFILE_NAME[:64]


_ACTIONS: tuple[dict[int, tuple[tuple[int, ...], Callable]], dict[tuple[int, ...], Callable]] | None = None


def _basic_profile_actions() -> tuple[dict[int, tuple[tuple[int, ...], Callable]], dict[tuple[int, ...], Callable]]:
    """The profile's actions, split into single tags (by tag number) and repeating-group masks; built once."""
    global _ACTIONS
    if _ACTIONS is None:
        from dicomanonymizer import simpledicomanonymizer as anonymizer

        table = anonymizer.initialize_actions(PROFILE_TABLE)
        single = {(t[0] << 16) | t[1]: (t, a) for t, a in table.items() if len(t) == 2}
        masked = {t: a for t, a in table.items() if len(t) > 2}
        _ACTIONS = (single, masked)
    return _ACTIONS


def apply_full_table(ds: Dataset) -> None:
    """The library's own full-table pass (reference for the equivalence test and the benchmark)."""
    from dicomanonymizer import simpledicomanonymizer as anonymizer

    anonymizer.anonymize_dataset(
        ds, base_rules_gen=lambda: anonymizer.initialize_actions(PROFILE_TABLE), delete_private_tags=True
    )
    anonymizer.dictionary.clear()


def leaked(values: Iterable[object], tokens: Iterable[str]) -> list[str]:
    """Return the identity tokens (of 4+ characters) that appear in any of the given output values."""
    texts = [str(v).upper() for v in values if v is not None]
    hits = []
    for token in tokens:
        if len(token) < 4:
            continue
        up = token.upper()
        if any(up in t for t in texts):
            hits.append(token)
    return hits
