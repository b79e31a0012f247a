"""Class-activation maps from a layer's activations and the gradient of one detection's logit, and their overlay.

Methods (the measured comparison is `benchmarks/cam_localisation.py`; the README says which won and why):
- `hirescam` (Draelos & Carin 2020): sum over channels of gradient x activation, per position. Faithful to what the
  logit's first-order change depends on; the gradient of one kept box's logit makes it instance-specific (ODAM's
  point, Zhao et al. ICLR 2023).
- `gradcam` (Selvaraju et al. 2017): channel weights = gradient averaged over positions, then weighted activations.
- `eigencam` (Muhammad & Yeasin 2020): the activations' first principal component; no gradient, no class, the same
  map for every box of an image: the baseline an instance map must beat.

Written here rather than taken from `grad-cam` (pytorch-grad-cam): its CAM classes run their own forward per call
and expect a tensor output, so every box would cost a full forward and backward; these functions are its formulas
applied to activations and gradients the detector already has (detector.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO}


def gradient_map(activation: torch.Tensor, gradient: torch.Tensor, method: str) -> torch.Tensor:
    """Maps (>= 0) from a layer's activation (C x h x w) and logits' gradients (C x h x w, or K x C x h x w for K
    logits at once): h x w, or K x h x w."""
    if method == "hirescam":
        raw = (gradient * activation).sum(-3)
    elif method == "gradcam":
        raw = (gradient.mean((-2, -1), keepdim=True) * activation).sum(-3)
    else:
        raise ValueError(f"unknown gradient CAM method {method!r} (hirescam, gradcam)")
    return F.relu(raw)


def eigencam(activation: torch.Tensor) -> torch.Tensor:
    """The projection of each position on the activations' first principal direction (C x h x w -> h x w, >= 0)."""
    c, h, w = activation.shape
    raw = activation.reshape(c, h * w).T.float()
    flat = raw - raw.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ vh[0]
    # An eigenvector's sign is arbitrary (and a centred projection sums to zero whichever it is): take the sign
    # under which the map rises with the activations' strength.
    strength = raw.norm(dim=1)
    if float(((strength - strength.mean()) * proj).sum()) < 0:
        proj = -proj
    return F.relu(proj.reshape(h, w))


def to_source(layer_maps: Sequence[torch.Tensor], input_hw: tuple[int, int], source_hw: tuple[int, int]) -> np.ndarray:
    """Layer maps of one box -> one map over the source image, in [0, 1].

    Each layer's map is scaled to its own maximum (layers differ in scale), bilinearly upsampled to the letterboxed
    input, averaged over layers, the letterbox padding cut off (as `ops.scale_boxes` undoes it for boxes) and
    resized to the source image. A map with no positive evidence stays all zeros.
    """
    stacked = [_upsampled(m[None], input_hw)[0] for m in layer_maps if float(m.max()) > 0]
    sh, sw = source_hw
    if not stacked:
        return np.zeros((sh, sw), np.float32)
    return _to_source_hw(torch.stack(stacked).mean(0, keepdim=True), input_hw, source_hw)[0]


def to_source_stack(maps: torch.Tensor, input_hw: tuple[int, int], source_hw: tuple[int, int]) -> np.ndarray:
    """`to_source` for K one-layer maps of the same size at once (K x h x w -> K x H x W): one interpolation for
    all the boxes of a level instead of one per box."""
    return _to_source_hw(_upsampled(maps, input_hw), input_hw, source_hw)


def _upsampled(maps: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """K x h x w maps, each scaled to its maximum (all-zero stays zero), bilinearly upsampled to K x ih x iw."""
    peak = maps.amax((-2, -1), keepdim=True).clamp_min(1e-12)
    return F.interpolate((maps / peak)[:, None].float(), size=input_hw, mode="bilinear", align_corners=False)[:, 0]


def _to_source_hw(maps: torch.Tensor, input_hw: tuple[int, int], source_hw: tuple[int, int]) -> np.ndarray:
    """K x ih x iw maps on the letterboxed input -> K x sh x sw on the source, each in [0, 1]."""
    (ih, iw), (sh, sw) = input_hw, source_hw
    gain = min(ih / sh, iw / sw)
    pad_x, pad_y = round((iw - sw * gain) / 2 - 0.1), round((ih - sh * gain) / 2 - 0.1)
    inner = maps[:, pad_y : pad_y + round(sh * gain), pad_x : pad_x + round(sw * gain)]
    out = F.interpolate(inner[:, None], size=(sh, sw), mode="bilinear", align_corners=False)[:, 0]
    peak = out.amax((-2, -1), keepdim=True)
    out = torch.where(peak > 0, (out / peak.clamp_min(1e-12)).clamp(0, 1), out)
    return out.cpu().numpy().astype(np.float32)


def overlay(
    gray_rgb: np.ndarray,
    heatmap: np.ndarray,
    box: Sequence[float],
    *,
    alpha: float = 0.45,
    colormap: str = "jet",
    box_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """The image with the map blended over it (alpha scaled by the map, so no evidence leaves the image as it is)
    and the box outlined; RGB uint8, the source's size. No text is burned in (the secondary capture's header says
    what it shows)."""
    out = gray_rgb.copy()
    rows, cols = np.nonzero(heatmap > 0)
    if rows.size:  # blend only the map's support: instance maps are local, the rest of the image stays as it is
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        heat = np.clip(heatmap[r0:r1, c0:c1], 0, 1)
        colored = cv2.applyColorMap(np.uint8(heat * 255), COLORMAPS[colormap])[..., ::-1]
        weight = (alpha * heat)[..., None]
        base = out[r0:r1, c0:c1].astype(np.float32)
        out[r0:r1, c0:c1] = np.clip(base * (1 - weight) + colored * weight, 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = (round(v) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), box_color, 1)
    return out


def energy_inside(heatmap: np.ndarray, box: Sequence[float], margin_px: float = 0.0) -> float:
    """Share of the map's mass inside the box grown by margin_px on each side (0 for an empty map): the
    localisation figure (energy-based pointing game, Wang et al. Score-CAM 2020)."""
    total = float(heatmap.sum())
    if total <= 0:
        return 0.0
    h, w = heatmap.shape
    x0, y0, x1, y1 = box
    c0, r0 = max(0, int(np.floor(x0 - margin_px))), max(0, int(np.floor(y0 - margin_px)))
    c1, r1 = min(w, int(np.ceil(x1 + margin_px))), min(h, int(np.ceil(y1 + margin_px)))
    return float(heatmap[r0:r1, c0:c1].sum()) / total


def peak_inside(heatmap: np.ndarray, box: Sequence[float], margin_px: float = 0.0) -> bool:
    """Whether the map's maximum lies in the box grown by margin_px (the pointing game, Zhang et al. 2018)."""
    r, c = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    x0, y0, x1, y1 = box
    return bool(x0 - margin_px <= c <= x1 + margin_px and y0 - margin_px <= r <= y1 + margin_px)


def remove_evidence(image: np.ndarray, flat_index: np.ndarray, sigma_px: float = 6.0) -> np.ndarray:
    """The image with the given pixels (flat indices) replaced by its own Gaussian blur: structure removed,
    brightness kept (the deletion check; on T2, black pixels would imitate compression, not remove it)."""
    out = image.copy()
    rows, cols = np.unravel_index(flat_index, image.shape[:2])
    out[rows, cols] = cv2.GaussianBlur(image, (0, 0), sigma_px)[rows, cols]
    return out
