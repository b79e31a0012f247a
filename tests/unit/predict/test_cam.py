"""Map arithmetic: the gradient formulas, letterbox undone, overlay and the localisation figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.predict import cam


def test_hirescam_is_elementwise_and_gradcam_uses_pooled_weights() -> None:
    act = torch.zeros(2, 4, 4)
    act[0, 1, 1], act[1, 2, 3] = 2.0, 3.0
    grad = torch.zeros(2, 4, 4)
    grad[0, 1, 1], grad[1, 0, 0] = 1.0, 5.0  # channel 1's gradient lies where channel 1 is silent
    hires = cam.gradient_map(act, grad, "hirescam")
    assert hires[1, 1] == 2.0 and float(hires.sum()) == 2.0  # only where gradient and activation meet
    grad_cam = cam.gradient_map(act, grad, "gradcam")
    assert grad_cam[2, 3] > 0  # Grad-CAM spreads channel 1's pooled weight over all of channel 1
    with pytest.raises(ValueError, match="unknown"):
        cam.gradient_map(act, grad, "scorecam")


def test_to_source_undoes_the_letterbox() -> None:
    # A 100 x 200 (h x w) source letterboxed to 64 x 64: scaled by 0.32 to 32 x 64, padded 16 rows top and bottom.
    layer = torch.zeros(8, 8)
    layer[3, 6] = 1.0  # input rows 24-32, cols 48-56 -> source rows ~25-50, cols ~150-175
    out = cam.to_source([layer], (64, 64), (100, 200))
    assert out.shape == (100, 200) and out.max() == pytest.approx(1.0)
    row, col = np.unravel_index(int(out.argmax()), out.shape)
    assert 25 <= row <= 55 and 145 <= col <= 180
    assert cam.to_source([torch.zeros(8, 8)], (64, 64), (100, 200)).max() == 0.0  # no evidence, no map


def test_energy_inside_counts_the_box_and_its_margin() -> None:
    heat = np.zeros((50, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    heat[30, 30] = 100.0
    assert cam.energy_inside(heat, (10, 10, 20, 20)) == pytest.approx(100 / 200)
    assert cam.energy_inside(heat, (10, 10, 20, 20), margin_px=11) == pytest.approx(1.0)
    assert cam.energy_inside(np.zeros((5, 5)), (0, 0, 5, 5)) == 0.0


def test_overlay_leaves_pixels_without_evidence_untouched_apart_from_the_box() -> None:
    gray = np.full((40, 40, 3), 100, np.uint8)
    heat = np.zeros((40, 40), np.float32)
    heat[5:10, 5:10] = 1.0
    out = cam.overlay(gray, heat, (20, 20, 30, 30), alpha=0.5)
    assert out.shape == gray.shape and out.dtype == np.uint8
    assert (out[0:4, 0:4] == 100).all() and (out[35:, 35:] == 100).all()
    assert (out[6, 6] != 100).any()  # blended
    assert (out[20, 25] == 255).all()  # the box outline


def test_eigencam_points_along_the_first_principal_direction() -> None:
    act = torch.zeros(3, 6, 6)
    act[:, 2, 2] = torch.tensor([5.0, 5.0, 5.0])  # one outstanding position dominates the variance
    m = cam.eigencam(act)
    assert int(m.argmax()) == 2 * 6 + 2 and float(m.min()) >= 0.0
