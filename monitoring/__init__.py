"""Drift monitoring (issue 12, in progress): feature store, windows and segments, drift comparison, dashboard."""
