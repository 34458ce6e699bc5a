"""The stored heatmap: an attention map min-max scaled and quantised to uint8, and back.

The predictions table stores this map (``pipelines.predictions`` turns it into the ``heatmap`` column's
bytes); every box and score is computed from it, not from the float map, so a box computed later from
the table (``coloc_core.boxes.scoremap_from_attention(dequantize_heatmap(h))``) is the box the labeling
stage wrote. :mod:`coloc_core.predict` quantises with it, as the labeling stage does.
"""

from __future__ import annotations

import numpy as np


def quantize_heatmap(attention: np.ndarray) -> np.ndarray:
    """Min-max normalise an attention map and quantise it to uint8 (the stored heatmap).

    A constant or non-finite map becomes all zeros (as SPEC §6 does for score maps).

    Shape:
        attention: (h, w) float. Returns (h, w) uint8, 0 = the map's minimum, 255 = its maximum.
    """
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention must be (h, w), got {a.shape}")
    if not np.isfinite(a).all():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 0.0:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def dequantize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """The stored uint8 heatmap back to float32 in [0, 1].

    Shape:
        heatmap: (h, w) uint8. Returns (h, w) float32.
    """
    return np.asarray(heatmap, dtype=np.float32) / 255.0
