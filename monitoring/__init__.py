"""Drift features, Evidently reports and prospective evaluation (later issues)."""
