"""PR curves: the model's curve ends at its overall recall, a reader is one point, and plots are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.evaluate.plots import plot_pr_curves
from pipelines.evaluate.scoring import match, metrics, pr_curve

REF = pd.DataFrame(
    [
        ("a", "normal", 10, 10, 20, 20),
        ("a", "compression", 10, 30, 20, 40),
        ("b", "normal", 10, 10, 20, 20),
        ("c", "compression", 5, 5, 15, 15),
    ],
    columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max"],
)


def test_model_curve_and_reader_point(tmp_path: Path) -> None:
    model = REF.assign(score=[0.9, 0.8, 0.6, 0.3])
    model = pd.concat([model, pd.DataFrame([("b", "compression", 50, 50, 60, 60, 0.7)], columns=model.columns)])
    m = match(model.reset_index(drop=True), REF)
    recall, precision, score = pr_curve(m, 1)  # compression
    assert np.all(np.diff(score) < 0)  # descending thresholds
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])  # 0.8 TP, 0.7 FP, 0.3 TP
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    assert recall[-1] == metrics(m, conf=0.0)["sensitivity"]
    reader = match(REF.iloc[[0, 3]].reset_index(drop=True), REF)  # no score column: a reader
    r_recall, r_precision, _ = pr_curve(reader, 1)
    assert r_recall.tolist() == [0.5] and r_precision.tolist() == [1.0]
    files = plot_pr_curves({"model": m, "reader": reader}, tmp_path, "external_test", 0.5, synthetic=True)
    assert [f.name for f in files] == ["pr_external_test_normal.png", "pr_external_test_compression.png"]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)
