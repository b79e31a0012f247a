"""Explainable inference: quick read, full XAI and auto mode, DICOM results for a PACS."""
