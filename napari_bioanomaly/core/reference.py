"""The no-learning reference that every model is measured against.

A model earns its place only by beating a fixed filter on the same images: the
absolute difference between each pixel and the median of its 31 px disc
(dust, spots, scratches and hairs stand out from their surroundings; so do
cell edges and textures, which is what makes it a reference and not a
detector). Its one setting, the threshold, is chosen where it gives the best
pixel F1 on the training images, so it is as good as such a filter can be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .images import to_grayscale

#: Radius of the median disc (31 px across).
RADIUS = 15


def normalised(image: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """Grayscale image scaled so the ``low``/``high`` percentiles map to 0 and 1, clipped."""
    gray = to_grayscale(image).astype(np.float32, copy=False)
    lo, hi = np.percentile(gray, [low, high])
    return np.clip((gray - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)


def reference_map(image: np.ndarray) -> np.ndarray:
    """``|x - median_31(x)|`` of the normalised image, smoothed (sigma 1 px)."""
    return contrast_map(normalised(image))


def contrast_map(norm: np.ndarray) -> np.ndarray:
    """Local contrast of a normalised image: ``|x - median_31(x)|``, smoothed (sigma 1 px).

    How it works: the median is a histogram (rank) filter on the image clipped to
    ``[0, 1]`` and quantised to 8 bits, which is fast for a large disc.
    """
    from skimage.filters.rank import median
    from skimage.morphology import disk

    norm = np.clip(norm, 0.0, 1.0).astype(np.float32, copy=False)
    med = median(np.round(norm * 255).astype(np.uint8), disk(RADIUS)).astype(np.float32) / 255
    return ndimage.gaussian_filter(np.abs(norm - med), 1.0)


def best_threshold(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """The threshold of the maps with the best pixel F1 against the boolean truths
    (60 quantiles of the maps between the median and the 99.9th percentile tried)."""
    values = np.concatenate([np.ravel(m) for m in maps])
    truth = np.concatenate([np.ravel(t) for t in truths]).astype(bool)
    n_true = np.count_nonzero(truth)
    best, best_t = -1.0, float(np.quantile(values, 0.99))
    for t in np.quantile(values, np.linspace(0.5, 0.999, 60)):
        pred = values > t
        f1 = 2 * np.count_nonzero(pred & truth) / max(np.count_nonzero(pred) + n_true, 1)
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def pixel_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """``2 |P & T| / (|P| + |T|)`` of two boolean masks (1.0 when both are empty)."""
    denom = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 2 * np.count_nonzero(pred & truth) / denom if denom else 1.0
