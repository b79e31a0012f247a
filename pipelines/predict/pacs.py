"""A DICOMweb PACS for `cordwatch predict --pacs URL`: find studies (QIDO-RS), fetch their MR images (WADO-RS),
store results back (STOW-RS).

All HTTP goes through `dicomweb_client.api.DICOMwebClient` on a `requests.Session`. Credentials (basic auth) come
from the constructor or from the environment: `CORDWATCH_PACS_USERNAME` and `CORDWATCH_PACS_PASSWORD`.

Failures surface as one `PacsError` that names the server and what failed, never a study or a patient: an
unreachable server fails at once (no retries on a refused connection; `dicomweb_client`'s own retrying, which
retries every exception with backoff for about half a minute, is turned off), while answers 429/502/503/504 to a
GET are retried a few times with a short backoff by the session. Logs carry counts only; `dicomweb_client`'s own
log lines, which name UIDs, get their UIDs replaced by `<uid>`.

Tested against Orthanc 1.10 with its DICOMweb plugin 1.7 (tests/integration/test_pacs.py). What it taught:
- study-level QIDO filters on `ModalitiesInStudy`; a `Modality` filter at study level matches nothing;
- with a `ModalitiesInStudy` filter, `offset` is ignored without a `limit` and wrong with one (the first `limit`
  matches less `offset`), so searches leave the page size to the server and stop at a page with nothing new;
- `LimitFindResults` > 0 in Orthanc's config truncates QIDO answers in a way no offset can page: keep it 0;
- a StudyInstanceUID stored under two PatientIDs is two Orthanc studies (two QIDO rows): each UID is kept once;
- instances are stored as sent and served back byte for byte, so what we STOW must be Part 10 (see `_part10`);
- STOW-RS of an instance the server already holds succeeds (a re-run stores the same objects once);
- a refused instance makes the whole answer an HTTP error (400 for a missing mandatory tag, reason 0xC000; 409 for
  a study that does not match the URL, reason 0x0110) whose body, DICOM JSON without a Content-Type, still lists
  the failed and the stored instances: the others of the request are stored.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MRImageStorage
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

USERNAME_ENV = "CORDWATCH_PACS_USERNAME"
PASSWORD_ENV = "CORDWATCH_PACS_PASSWORD"

# What fetch_study downloads: single-frame MR images, the only objects ingestion's series rules can select. The
# results we store back (SR, Secondary Capture) and anything else in the study (presentation states, reports,
# multi-frame enhanced MR) are left on the server.
READABLE_SOP_CLASSES: frozenset[str] = frozenset({MRImageStorage})

STORE_BATCH = 32  # instances per STOW-RS request: bounds the encoded request held in memory
CONNECT_TIMEOUT_S = 10.0
_STATUS_RETRIES = Retry(
    total=3,
    connect=0,  # a refused or unreachable server fails at once
    read=0,  # a read timeout is not retried either: it already took timeout_s
    status=3,
    status_forcelist=(429, 502, 503, 504),
    backoff_factor=0.5,
    allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,  # GET, not STOW's POST (its body is a consumed generator)
    raise_on_status=False,  # the last answer reaches raise_for_status and becomes a PacsError
    respect_retry_after_header=False,  # a server asking for an hour must not stall a run
)
_UID_RE = re.compile(r"\d+(?:\.\d+){4,}")  # 5+ components: UIDs, not IPv4 addresses
_SAFE_UID_RE = re.compile(r"^[0-9](?:[0-9.]{0,63})$")  # what may become a file name

# DICOM PS3.18 / PS3.7 failure reasons a STOW-RS answer may give (FailureReason, US).
_FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0122: "SOP class not supported",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
}

# tags of QIDO answers
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_SOP_CLASS = "00080016"
_MODALITIES = "00080061"
_N_SERIES = "00201206"
_N_INSTANCES = "00201208"


class PacsError(RuntimeError):
    """The PACS cannot be reached or refused a request; the message names the server and the operation only."""


@dataclass(frozen=True)
class StudyRef:
    """A study on the PACS, with the non-identifying counts the server reports (None where it gives none)."""

    study_uid: str
    modalities: tuple[str, ...] = ()
    n_series: int | None = None
    n_instances: int | None = None


class _RedactUids(logging.Filter):
    """Replace UIDs in a library's log lines by `<uid>`: dicomweb_client logs every study and instance it asks for."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _UID_RE.sub("<uid>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def _redact_library_logs() -> None:
    # urllib3 logs each request line (with the UIDs in its path) at DEBUG
    for name in ("dicomweb_client.web", "dicomweb_client.session_utils", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUids) for f in logger.filters):
            logger.addFilter(_RedactUids())


def _public_url(url: str) -> str:
    """`url` without user:password@ (it goes into messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _os_reason(exc: BaseException) -> str | None:
    """The innermost OS-level reason in a requests/urllib3 chain ('Connection refused'), without URLs."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        todo += [a for a in current.args if isinstance(a, BaseException)]
        todo += [e for e in (getattr(current, "reason", None), current.__cause__, current.__context__) if e]
    return None


def _value(item: dict[str, Any], tag: str) -> Any:
    """First value of `tag` in a DICOM JSON object, None where absent."""
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _count(item: dict[str, Any], tag: str) -> int | None:
    value = _value(item, tag)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _stow_failures(response: requests.Response | None) -> Dataset | None:
    """The STOW-RS answer in a failed request's body when it lists failed instances, else None."""
    if response is None or not response.content:
        return None
    try:  # JSON whatever the Content-Type: Orthanc sends its 400 answer without one
        answer = Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError):
        return None
    return answer if answer.get("FailedSOPSequence") else None


def _part10(ds: Dataset, index: int) -> Dataset:
    """`ds` as dicomweb_client must send it: a DICOM Part 10 object (128-byte preamble, complete file meta).

    dicomweb_client encodes with `pydicom.dcmwrite(buffer, ds)`, which (pydicom 3) writes no preamble for a dataset
    made in memory; Orthanc stores such bytes as they are and serves them back, and then nothing reads them
    (dcmread refuses an object without the 'DICM' prefix). A shallow copy gets what is missing; pixels are shared.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise ValueError(f"dataset {index} has no file meta Transfer Syntax UID; it cannot be encoded")
    complete = (
        len(getattr(ds, "preamble", None) or b"") == 128
        and meta.get("MediaStorageSOPClassUID") == ds.get("SOPClassUID")
        and meta.get("MediaStorageSOPInstanceUID") == ds.get("SOPInstanceUID")
    )
    if complete:
        return ds
    fixed = ds.copy()
    fixed.file_meta = copy.deepcopy(meta)  # FileMetaDataset(meta) would share the caller's elements
    fixed.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    fixed.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if len(getattr(ds, "preamble", None) or b"") != 128:
        fixed.preamble = b"\x00" * 128
    return fixed


class DicomWebPacs:
    """A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS under one root URL, e.g. `http://host:8042/dicom-web`).

    Args:
        url: the DICOMweb root URL.
        timeout_s: read timeout of each request (the connect timeout is at most 10 s).
        username: basic-auth user; default `CORDWATCH_PACS_USERNAME` from the environment, none if unset.
        password: basic-auth password; default `CORDWATCH_PACS_PASSWORD` from the environment.
    """

    def __init__(
        self, url: str, *, timeout_s: float = 60, username: str | None = None, password: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._public = _public_url(self.url)
        username = username if username is not None else os.environ.get(USERNAME_ENV) or None
        password = password if password is not None else os.environ.get(PASSWORD_ENV)
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=_STATUS_RETRIES)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if username is not None:
            session.auth = (username, password or "")
        _redact_library_logs()
        try:
            self._client = DICOMwebClient(
                self.url, session=session, timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
            )
        except ValueError as exc:
            raise PacsError(f"PACS {self._public}: not a DICOMweb URL ({exc})") from None
        self._client.set_http_retry_params(retry=False)  # its retrying retries every exception for ~30 s
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"DicomWebPacs({self._public!r})"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn requests' and dicomweb_client's failures into one PacsError without URLs, UIDs or bodies."""
        try:
            yield
        except requests.HTTPError as exc:
            response = exc.response
            status = f"HTTP {response.status_code} {response.reason}" if response is not None else "an HTTP error"
            hint = " (check the credentials)" if response is not None and response.status_code in (401, 403) else ""
            raise PacsError(f"PACS {self._public}: {what} failed: {status}{hint}") from None
        except requests.Timeout:
            raise PacsError(f"PACS {self._public}: {what} failed: no answer within {self.timeout_s:g} s") from None
        except requests.ConnectionError as exc:
            reason = _os_reason(exc) or type(exc).__name__
            raise PacsError(f"PACS {self._public}: {what} failed: cannot connect ({reason})") from None
        except requests.RequestException as exc:
            raise PacsError(f"PACS {self._public}: {what} failed: {type(exc).__name__}") from None
        except (ValueError, InvalidDicomError) as exc:  # dicomweb_client: unexpected media type, JSON, multipart, part
            reason = _UID_RE.sub("<uid>", str(exc))[:200]
            raise PacsError(f"PACS {self._public}: {what} failed: unexpected answer ({reason})") from None

    def _paged(
        self, what: str, search: Callable[..., list[dict]], key: str, limit: int | None, **kwargs: Any
    ) -> list[dict]:
        """A QIDO search's answers, each once (by the UID under `key`), at most `limit`.

        The first request leaves the page size to the server; while pages bring new answers, the next one asks from
        offset = answers so far (a server may cap an answer, PS3.18 6.7.1.2). A page with nothing new ends it:
        Orthanc ignores the offset of a `ModalitiesInStudy` search without a limit and answers everything again.
        """
        found: dict[str, dict] = {}
        while limit is None or len(found) < limit:
            with self._errors(what):
                page = search(offset=len(found) or None, limit=None if limit is None else limit - len(found), **kwargs)
            new = {str(uid): item for item in page if (uid := _value(item, key)) and str(uid) not in found}
            if not new:
                break
            found.update(new)
        return list(found.values())[:limit]

    def find_studies(
        self, *, modality: str | None = "MR", since: datetime.date | None = None, limit: int | None = None
    ) -> list[StudyRef]:
        """Studies on the server (QIDO-RS), each once.

        Args:
            modality: only studies holding this modality (`ModalitiesInStudy`); None for any.
            since: only studies with a StudyDate on or after this day.
            limit: at most this many studies.
        """
        filters: dict[str, str] = {}
        if modality:
            filters["ModalitiesInStudy"] = modality
        if since is not None:
            filters["StudyDate"] = f"{since:%Y%m%d}-"
        fields = ["ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
        found = self._paged(
            "searching studies",
            self._client.search_for_studies,
            _STUDY_UID,
            limit,
            search_filters=filters,
            fields=fields,
        )
        studies: list[StudyRef] = []
        for item in found:
            modalities = tuple(str(m) for m in (item.get(_MODALITIES) or {}).get("Value") or [])
            if modality and modalities and modality not in modalities:
                continue  # a server that ignores the filter but reports the study's modalities
            studies.append(
                StudyRef(str(_value(item, _STUDY_UID)), modalities, _count(item, _N_SERIES), _count(item, _N_INSTANCES))
            )
        log.info("PACS: %d studies found", len(studies))
        return studies

    def fetch_study(
        self, study_uid: str, dest: Path, *, sop_classes: Collection[str] = READABLE_SOP_CLASSES
    ) -> list[Path]:
        """Download a study's readable images (WADO-RS) as DICOM Part 10 files `dest/<SOPInstanceUID>.dcm`.

        The study's instances are listed first (QIDO-RS) and only those of `sop_classes` fetched, one request and
        one instance in memory at a time, in the server's stored transfer syntax. A file already in `dest` is the
        same object (same SOPInstanceUID) and is not fetched again; files are written under a temporary name and
        renamed, so a present file is complete.

        Returns:
            The paths of the study's readable images, fetched or already there.
        """
        dest.mkdir(parents=True, exist_ok=True)
        listed = self._paged(
            "listing a study's instances",
            self._client.search_for_instances,
            _SOP_UID,
            None,
            study_instance_uid=study_uid,
            fields=["SOPClassUID", "SeriesInstanceUID"],
        )
        wanted = [item for item in listed if _value(item, _SOP_CLASS) in sop_classes]
        paths: list[Path] = []
        fetched = 0
        for item in wanted:
            series_uid, sop_uid = _value(item, _SERIES_UID), _value(item, _SOP_UID)
            if not series_uid or not sop_uid or not _SAFE_UID_RE.match(str(sop_uid)):
                raise PacsError(f"PACS {self._public}: a study's instance list names an instance without valid UIDs")
            path = dest / f"{sop_uid}.dcm"
            if not path.exists():
                with self._errors("retrieving an instance"):
                    ds = self._client.retrieve_instance(study_uid, str(series_uid), str(sop_uid))
                if str(ds.get("SOPInstanceUID", "")) != sop_uid:
                    raise PacsError(f"PACS {self._public}: retrieving an instance returned another instance")
                partial = path.with_name(path.name + ".part")
                pydicom.dcmwrite(partial, ds, enforce_file_format=True)
                partial.replace(path)
                del ds
                fetched += 1
            paths.append(path)
        log.info(
            "PACS: %d of a study's %d instances are readable images; %d fetched, %d already there",
            len(wanted),
            len(listed),
            fetched,
            len(wanted) - fetched,
        )
        return paths

    def store(self, datasets: Sequence[Dataset]) -> None:
        """Store instances on the server (STOW-RS), each into the study its StudyInstanceUID names.

        Storing an instance the server already holds is not a failure (Orthanc answers success). Datasets must carry
        file meta with a Transfer Syntax UID (highdicom's objects do); a missing preamble or Media Storage UIDs are
        added on a shallow copy, so the server holds a Part 10 object any client can read back.

        Raises:
            ValueError: a dataset has no file meta Transfer Syntax UID (it could not be encoded).
            PacsError: the server is unreachable, or refused some instances (how many, and why).
        """
        datasets = [_part10(ds, index) for index, ds in enumerate(datasets)]
        failed: dict[str, int] = {}
        stored = 0
        for start in range(0, len(datasets), STORE_BATCH):
            batch = list(datasets[start : start + STORE_BATCH])
            with self._errors(f"storing {len(batch)} instances"):
                try:
                    answer = self._client.store_instances(batch)
                except requests.HTTPError as exc:
                    # A refusal arrives as an HTTP error (Orthanc: 409) whose body says which instances and why.
                    answer = _stow_failures(exc.response)
                    if answer is None:
                        raise
            for item in answer.get("FailedSOPSequence", []):
                reason = int(item.get("FailureReason", 0) or 0)
                text = _FAILURE_REASONS.get(reason)
                key = f"reason 0x{reason:04X}" + (f" ({text})" if text else "")
                failed[key] = failed.get(key, 0) + 1
            stored += len(answer.get("ReferencedSOPSequence", []))
        n_failed = sum(failed.values())
        log.info("PACS: %d of %d instances stored, %d failed", stored, len(datasets), n_failed)
        if n_failed:
            reasons = "; ".join(f"{n} x {reason}" for reason, n in sorted(failed.items()))
            raise PacsError(
                f"PACS {self._public}: storing instances failed for {n_failed} of {len(datasets)} ({reasons})"
            )
