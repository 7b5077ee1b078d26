"""Synthetic anomalies pasted into normal tiles: the training signal of the ``synthetic`` model.

A network that is shown normal tiles, half of them with a made-up anomaly whose
mask it must find, learns what *departs* from the user's normal images without a
single annotation (DRAEM, Zavrtanik et al. 2021, without pretrained weights or
outside textures). What departs is what matters, not the made-up anomaly: the
anomalies are varied enough that the one thing they share is "not like the rest
of this image".

Shapes: blobs (thresholded Perlin noise, as DRAEM: spots, colonies, smudges) or
strokes (smooth random curves 1-5 px wide: scratches, hairs, fibres, cracks).
Fillings: a patch of *another* normal image, turned and with its contrast
changed; a local intensity change (darker or brighter: dust, dark spots); or
smooth noise. Each is blended over the tile with a random opacity, so faint
anomalies are learned too; the target is the mask.

Numpy only (runs in the data loader).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Share of training tiles that get an anomaly (the rest teach "normal stays normal").
P_ANOMALY = 0.5
#: Share of anomalies that are strokes (the others are blobs).
P_STROKE = 0.4
#: A synthetic anomaly smaller than this (pixels) is dropped: nothing to learn.
MIN_PIXELS = 8


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise of ``shape`` with ``res`` gradient cells per axis, in about [-1, 1]."""
    rows, cols = shape
    gr, gc = res
    angles = rng.uniform(0, 2 * np.pi, (gr + 1, gc + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, gr, rows, endpoint=False)
    x = np.linspace(0, gc, cols, endpoint=False)
    yi, xi = y.astype(int), x.astype(int)
    yf, xf = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grad[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    u, v = fade(yf), fade(xf)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (top * (1 - u) + bottom * u) * np.sqrt(2)


def blob_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Thresholded Perlin noise: one to a few irregular blobs covering 0.5-20% of the tile."""
    scale = int(rng.integers(1, 5))  # 2..16 cells across the larger side
    cells = 2**scale
    res = tuple(max(1, round(cells * side / max(shape))) for side in shape)
    noise = perlin(shape, res, rng)  # type: ignore[arg-type]
    share = rng.uniform(0.005, 0.2)
    return noise > np.quantile(noise, 1.0 - share)


def stroke_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random curve 1-5 px wide, a fifth to most of the tile long."""
    rows, cols = shape
    length = rng.uniform(0.2, 0.9) * max(shape)
    n = max(2, int(length))
    turn = rng.normal(0, rng.uniform(0.005, 0.06), n).cumsum()  # slowly bending
    angle = rng.uniform(0, 2 * np.pi) + turn
    start = rng.uniform((0, 0), (rows, cols))
    path = start + np.stack([np.sin(angle), np.cos(angle)], axis=1).cumsum(axis=0)
    keep = (path[:, 0] >= 0) & (path[:, 0] < rows) & (path[:, 1] >= 0) & (path[:, 1] < cols)
    mask = np.zeros(shape, dtype=bool)
    pts = path[keep].astype(int)
    mask[pts[:, 0], pts[:, 1]] = True
    width = int(rng.integers(1, 6))
    if width > 1:
        mask = ndimage.binary_dilation(mask, iterations=width // 2)
    return mask


def filling(
    rng: np.random.Generator, tile: np.ndarray, source: np.ndarray
) -> np.ndarray:
    """What the anomaly looks like: a turned, re-contrasted patch of another image,
    a darker or brighter version of the tile, or smooth noise."""
    spread = float(np.std(tile)) + 0.05
    kind = rng.choice(3, p=(0.5, 0.3, 0.2))
    if kind == 0:
        patch = np.rot90(source, int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = patch[: tile.shape[0], : tile.shape[1]]
        if patch.shape != tile.shape:
            patch = np.resize(patch, tile.shape)
        gain = rng.uniform(0.5, 2.0) * (-1 if rng.random() < 0.3 else 1)
        return (patch - patch.mean()) * gain + tile.mean() + rng.normal(0, spread)
    if kind == 1:
        sign = -1 if rng.random() < 0.6 else 1  # dark spots and dust are the common ones
        return tile + sign * rng.uniform(0.5, 3.0) * spread
    noise = ndimage.gaussian_filter(rng.normal(0, 1, tile.shape), rng.uniform(1, 6))
    return tile.mean() + noise / (noise.std() + 1e-6) * spread * rng.uniform(0.5, 2.0)


def synthesise(
    rng: np.random.Generator, tile: np.ndarray, source: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``tile`` with (in :data:`P_ANOMALY` of calls) a synthetic anomaly, and its mask.

    ``source`` is a tile of another normal image, the raw material of textures.
    """
    mask = np.zeros(tile.shape, dtype=bool)
    if rng.random() >= P_ANOMALY:
        return tile, mask
    mask = stroke_mask(tile.shape, rng) if rng.random() < P_STROKE else blob_mask(tile.shape, rng)
    if mask.sum() < MIN_PIXELS:
        return tile, np.zeros(tile.shape, dtype=bool)
    opacity = rng.uniform(0.25, 1.0)
    fill = filling(rng, tile, source)
    out = np.where(mask, (1 - opacity) * tile + opacity * fill, tile)
    return out.astype(np.float32), mask
