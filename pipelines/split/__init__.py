"""Leakage-free splits: development patients to stratified folds and an internal test set, external sites whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.split.params import SplitParams

if TYPE_CHECKING:
    from pipelines.split.core import SplitError, make_splits, split_summary

__all__ = ["SplitError", "SplitParams", "make_splits", "split_summary"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `pipelines.config` imports `pipelines.split.params`, which runs this file first; importing the
    # core here would make every params load pay for scikit-learn.
    if name in __all__:
        from pipelines.split import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
