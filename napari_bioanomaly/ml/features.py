"""Per-pixel descriptors of a normalised image: intensity, edges and texture at sigmas
0.7-16 px (scikit-image's multi-scale basic features). The forest classifies them; the
memory bank keeps those of normal pixels."""

from __future__ import annotations

import numpy as np

#: Smallest and largest Gaussian sigma (pixels) of the features.
SIGMA_MIN, SIGMA_MAX = 0.7, 16.0


def features(norm: np.ndarray) -> np.ndarray:
    """Per-pixel features ``(rows, cols, 20)`` of a normalised image (float32)."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        norm.astype(np.float32, copy=False), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
    ).astype(np.float32, copy=False)
