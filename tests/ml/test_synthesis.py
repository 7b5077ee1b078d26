"""Synthetic anomalies: what the ``synthetic`` model is trained to find."""

from __future__ import annotations

import numpy as np

from napari_bioanomaly.ml import synthesis


def _tile(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 0.05, (128, 160)).astype(np.float32)


def test_anomalies_change_the_tile_inside_their_mask_only():
    tile, source = _tile(0), _tile(1)
    changed = 0
    for k in range(60):
        out, mask = synthesis.synthesise(np.random.default_rng(k), tile, source)
        assert out.shape == tile.shape and mask.shape == tile.shape and mask.dtype == bool
        np.testing.assert_array_equal(out[~mask], tile[~mask])
        if mask.any():
            changed += 1
            assert mask.sum() >= synthesis.MIN_PIXELS
            assert np.abs(out[mask] - tile[mask]).mean() > 1e-3
    # about half of the tiles get one (a few tiny ones are dropped)
    assert 0.3 * 60 <= changed <= 0.6 * 60


def test_strokes_are_thin_and_blobs_are_not():
    rng = np.random.default_rng(3)
    from scipy import ndimage

    for _ in range(20):
        stroke = synthesis.stroke_mask((128, 128), rng)
        if stroke.sum() > 20:  # a stroke is gone after eroding 3 px
            assert not ndimage.binary_erosion(stroke, iterations=3).any()
    blobs = [synthesis.blob_mask((128, 128), rng) for _ in range(20)]
    assert all(0.003 < b.mean() < 0.25 for b in blobs)
    assert any(ndimage.binary_erosion(b, iterations=3).any() for b in blobs)


def test_perlin_noise_is_smooth_at_its_scale():
    noise = synthesis.perlin((64, 64), (2, 2), np.random.default_rng(0))
    assert noise.shape == (64, 64)
    assert np.abs(noise).max() <= 1.5
    # neighbours differ little compared with the range
    assert np.abs(np.diff(noise, axis=0)).max() < 0.2 * np.ptp(noise)


def test_synthesis_is_reproducible_from_the_seed():
    tile, source = _tile(0), _tile(1)
    a = synthesis.synthesise(np.random.default_rng([7, 3]), tile, source)
    b = synthesis.synthesise(np.random.default_rng([7, 3]), tile, source)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
