"""Per-pixel descriptors of a normalised image.

:func:`features`: intensity, edges and texture at sigmas 0.7-16 px (scikit-image's
multi-scale basic features, 20 values). The memory bank's filter descriptors are these.
The forest describes pixels by :func:`forest_features`: these (``filters``) or, its
default, these and three values of wider context (``context``, :func:`context_features`):
whether the pixel lies on a long thin line (the line cue along 21 and 61 px segments)
and how much it stands out from its 31 px neighbourhood (the reference's local
contrast). A filter response at 16 px cannot tell a crack 100 px long from a grain of
texture; the line cue can. A second forest (auto-context) also sees
:func:`probability_features`: the first forest's anomaly probability around the pixel.
"""

from __future__ import annotations

import numpy as np

#: Smallest and largest Gaussian sigma (pixels) of the features.
SIGMA_MIN, SIGMA_MAX = 0.7, 16.0
#: The forest's feature sets and how many values each gives per pixel.
FEATURE_SETS = {"filters": 20, "context": 23}
#: Lengths (px) of the line cue's segments in the context features.
CONTEXT_LINES = (21, 61)
#: Gaussian sigmas (px) at which a second forest sees the first one's probabilities, and
#: how many values :func:`probability_features` gives per pixel.
PROBABILITY_SIGMAS = (1.0, 2.0, 4.0, 8.0)
PROBABILITY_FEATURES = len(PROBABILITY_SIGMAS) + len(CONTEXT_LINES) + 2


def features(norm: np.ndarray) -> np.ndarray:
    """Per-pixel features ``(rows, cols, 20)`` of a normalised image (float32); an image
    one pixel high or wide is described as if its edge repeated (gradients need two)."""
    from skimage.feature import multiscale_basic_features

    rows, cols = norm.shape
    padded = np.pad(norm, ((0, rows < 2), (0, cols < 2)), mode="edge")
    return multiscale_basic_features(
        padded.astype(np.float32, copy=False), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
    )[:rows, :cols].astype(np.float32, copy=False)


def context_features(norm: np.ndarray) -> np.ndarray:
    """``(rows, cols, 3)``: the line cue along 21 and 61 px segments and the local
    contrast ``|x - median_31(x)|`` (:mod:`~napari_bioanomaly.core.reference`)."""
    from ..core.reference import contrast_map, line_map

    maps = [line_map(norm, length) for length in CONTEXT_LINES] + [contrast_map(norm)]
    return np.stack(maps, axis=-1).astype(np.float32, copy=False)


def forest_features(norm: np.ndarray, kind: str = "context") -> np.ndarray:
    """The forest's per-pixel features of set ``kind`` (:data:`FEATURE_SETS`)."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"feature set must be one of {', '.join(FEATURE_SETS)}, not {kind!r}")
    base = features(norm)
    if kind == "filters":
        return base
    return np.concatenate([base, context_features(norm)], axis=-1)


def probability_features(prob: np.ndarray) -> np.ndarray:
    """``(rows, cols, 8)``: what a second forest learns from the first one's anomaly
    probability map (auto-context, as ilastik does): the probability itself, its largest
    value within 2 px, its Gaussian means at :data:`PROBABILITY_SIGMAS` and the line cue
    along :data:`CONTEXT_LINES` of it (a crack the first forest found in pieces lines up)."""
    from scipy import ndimage

    from ..core.reference import line_map

    prob = prob.astype(np.float32, copy=False)
    maps = [prob, ndimage.maximum_filter(prob, 5)]
    maps += [ndimage.gaussian_filter(prob, sigma) for sigma in PROBABILITY_SIGMAS]
    maps += [line_map(prob, length) for length in CONTEXT_LINES]
    return np.stack(maps, axis=-1).astype(np.float32, copy=False)
