"""coloc_core.heatmap: the stored uint8 map (quantise, dequantise)."""

from __future__ import annotations

import numpy as np
import pytest

from coloc_core.heatmap import dequantize_heatmap, quantize_heatmap


def test_quantize_heatmap_range_and_constant_map():
    a = np.array([[0.5, 1.0], [2.0, 3.0]], dtype=np.float32)
    q = quantize_heatmap(a)
    assert q.dtype == np.uint8 and q.shape == (2, 2)
    assert q.min() == 0 and q.max() == 255
    assert q[0, 1] == round(0.5 / 2.5 * 255)
    assert (quantize_heatmap(np.ones((3, 3))) == 0).all()
    assert (quantize_heatmap(np.array([[np.nan, 1.0]])) == 0).all()
    assert a[0, 0] == 0.5  # input untouched
    np.testing.assert_allclose(dequantize_heatmap(q).max(), 1.0)


def test_quantize_round_trip_is_within_half_a_level_of_the_scaled_map():
    rng = np.random.default_rng(0)
    attention = rng.normal(size=(7, 9)) * 3.0 + 1.0
    heat = dequantize_heatmap(quantize_heatmap(attention))
    assert heat.dtype == np.float32 and heat.shape == (7, 9)
    scaled = (attention - attention.min()) / (attention.max() - attention.min())
    np.testing.assert_allclose(heat, scaled, atol=0.5 / 255 + 1e-6)
    # quantising the stored map again gives the same bytes
    np.testing.assert_array_equal(quantize_heatmap(heat), quantize_heatmap(attention))


def test_quantize_heatmap_needs_a_2d_map():
    with pytest.raises(ValueError):
        quantize_heatmap(np.zeros((2, 3, 4)))
