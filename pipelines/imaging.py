"""The pixels the detector sees: one windowing for ingestion and for the registered model's own preprocessing.

Ingestion writes this 8-bit image as the training PNG; the MLflow pyfunc model (pipelines/register) applies the same
function to a DICOM it is given, so a registered model sees what it was trained on.
"""

from __future__ import annotations

import numpy as np


def normalise(arr: np.ndarray, clip: tuple[float, float], monochrome1: bool = False) -> np.ndarray:
    """Robust window to 8 bits: clip to percentiles (outliers from vendors' scaling), then scale to 0-255.

    Integer images (all MR we have met) use a histogram and a lookup table: nearest-rank percentiles in O(n),
    about 6x faster than `np.percentile` on a 320x320 image. Anything else falls back to `np.percentile`.
    """
    if arr.dtype.kind in "ui" and arr.size:
        offset = int(arr.min())
        span = int(arr.max()) - offset
        if span < 1 << 20:
            shifted = (arr - offset) if offset else arr
            cumulative = np.cumsum(np.bincount(shifted.ravel(), minlength=span + 1))
            lo, hi = (int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1])) for q in clip)
            hi = max(hi, lo + 1)
            levels = np.arange(span + 1, dtype=np.float32)
            lut = np.clip((levels - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
            out = lut[shifted]
            return 255 - out if monochrome1 else out
    data = arr.astype(np.float32, copy=False)
    lo_f, hi_f = np.percentile(data, clip)
    if hi_f <= lo_f:
        hi_f = lo_f + 1.0
    out = np.clip((data - lo_f) * (255.0 / (hi_f - lo_f)), 0, 255).astype(np.uint8)
    return 255 - out if monochrome1 else out


def model_image(pixels: np.ndarray, clip: tuple[float, float], monochrome1: bool = False) -> np.ndarray:
    """The detector's 3-channel input from a decoded 2-D image: `normalise`, then the gray level on each channel
    (what ultralytics makes of the grayscale training PNG when it reads it as BGR).

    Raises:
        ValueError: pixels that are not one 2-D image.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected one 2-D image, got pixel data of shape {pixels.shape}")
    gray = normalise(pixels, clip, monochrome1)
    return np.repeat(gray[:, :, None], 3, axis=2)
