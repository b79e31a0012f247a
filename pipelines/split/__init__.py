"""Leakage-free splits: development patients to stratified folds and an internal test set, external sites whole."""

from pipelines.split.core import SplitError, make_splits, split_summary

__all__ = ["SplitError", "make_splits", "split_summary"]
