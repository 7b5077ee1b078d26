"""Whole images through tile-sized networks: overlapping tiles blended without seams.

How it works: the image is padded (reflected) to at least one tile and to a
multiple of 16, cut into tiles overlapping by ``overlap`` of a tile, and each
tile's output maps are weighted by a window that falls off towards the tile
border before they are summed; dividing by the summed weights blends the tiles.
Out of device memory, the batch of tiles is halved until it fits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..core.model import BioAnomalyError
from .device import free_memory, is_oom


def window(tile: int) -> np.ndarray:
    """Blending weights of a tile: 1 in the middle, falling to near 0 at the border."""
    ramp = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1) / (tile / 4)
    w = np.clip(ramp, 0.02, 1.0)
    return np.outer(w, w).astype(np.float32)


def starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last flush with the end."""
    if size <= tile:
        return [0]
    out = list(range(0, size - tile + 1, stride))
    if out[-1] != size - tile:
        out.append(size - tile)
    return out


def blend_tiles(
    norm: np.ndarray,
    tile: int,
    fn: Callable[[torch.Tensor], np.ndarray],
    device: torch.device | str = "cpu",
    overlap: float = 0.25,
    batch: int = 4,
) -> np.ndarray:
    """Maps ``(C, rows, cols)`` of a normalised image from ``fn``: tiles ``(N, 1, t, t)`` ->
    maps ``(N, C, t, t)`` (numpy)."""
    rows, cols = norm.shape
    pr, pc = max(tile, -(-rows // 16) * 16), max(tile, -(-cols // 16) * 16)
    padded = np.pad(norm, ((0, pr - rows), (0, pc - cols)), mode="reflect" if rows > 1 else "edge")
    weight = np.zeros((pr, pc), dtype=np.float32)
    win = window(tile)
    stride = max(16, int(tile * (1 - overlap)))
    origins = [(r, c) for r in starts(pr, tile, stride) for c in starts(pc, tile, stride)]
    acc: np.ndarray | None = None
    k = 0
    while k < len(origins):
        chunk = origins[k : k + batch]
        x = torch.from_numpy(
            np.stack([padded[r : r + tile, c : c + tile] for r, c in chunk])[:, None]
        ).to(device)
        try:
            maps = fn(x)
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            del x
            free_memory(device)
            if batch == 1:
                raise BioAnomalyError(
                    f"out of memory on {device} with one {tile} px tile: predict on the CPU "
                    "(--device cpu) or free the device's memory"
                ) from None
            batch = max(1, len(chunk) // 2)
            continue
        if acc is None:
            acc = np.zeros((maps.shape[1], pr, pc), dtype=np.float32)
        for (r, c), m in zip(chunk, maps, strict=True):
            acc[:, r : r + tile, c : c + tile] += m * win
            weight[r : r + tile, c : c + tile] += win
        k += len(chunk)
    assert acc is not None
    return (acc / np.maximum(weight, 1e-6))[:, :rows, :cols]
