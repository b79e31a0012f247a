"""DICOM ingestion: series rules, de-identification, normalised images, labels, manifest and quarantine."""

from pipelines.ingest.core import AccountingError, IngestInputError, IngestSummary, run_ingest

__all__ = ["AccountingError", "IngestInputError", "IngestSummary", "run_ingest"]
