"""DICOM ingestion: series rules, de-identification, normalised images, labels, manifest and quarantine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.ingest.core import AccountingError, IngestInputError, IngestSummary, run_ingest

__all__ = ["AccountingError", "IngestInputError", "IngestSummary", "run_ingest"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `pipelines.config` imports `pipelines.ingest.params`, which runs this file first; importing the
    # core here would make every params load pay for pydicom and OpenCV (about a second).
    if name in __all__:
        from pipelines.ingest import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
