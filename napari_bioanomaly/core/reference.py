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
from .threads import cpu_threads

#: Radius of the median disc (31 px across).
RADIUS = 15
#: The line cue (:func:`line_map`): length (px) of the straight segments it averages
#: along, how many orientations it tries, the sigmas (px) of its difference of Gaussians.
LINE_LENGTH, LINE_ANGLES, LINE_SIGMAS = 61, 24, (1.0, 3.0)
#: Added to the local root mean square that :func:`local_normalised` divides by: a flat,
#: noiseless area stays flat instead of its rounding noise becoming lines.
RMS_FLOOR = 1e-3


def normalised(image: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """Grayscale image scaled so the ``low``/``high`` percentiles map to 0 and 1, clipped."""
    gray = to_grayscale(image).astype(np.float32, copy=False)
    lo, hi = np.percentile(gray, [low, high])
    return np.clip((gray - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)


def reference_map(image: np.ndarray) -> np.ndarray:
    """``|x - median_31(x)|`` of the normalised image, smoothed (sigma 1 px)."""
    return contrast_map(normalised(image))


def local_normalised(values: np.ndarray, window: int) -> np.ndarray:
    """``values`` divided by their root mean square over the ``window`` px square around
    each pixel (plus :data:`RMS_FLOOR`): a faint structure in a smooth area counts as
    much as a strong one in a coarse texture."""
    values = values.astype(np.float32, copy=False)
    rms = np.sqrt(np.maximum(ndimage.uniform_filter(values * values, window, mode="reflect"), 0))
    return values / (rms + np.float32(RMS_FLOOR))


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


def line_kernels(length: int = LINE_LENGTH, angles: int = LINE_ANGLES) -> np.ndarray:
    """``(angles, length, length)`` kernels, each the mean along one straight segment of
    ``length`` px through the centre (orientations spread over 180 degrees)."""
    c = length // 2
    t = np.linspace(-c, c, 4 * length)
    out = np.zeros((angles, length, length), np.float32)
    for i, a in enumerate(np.arange(angles) * np.pi / angles):
        rows = np.clip(np.round(c + t * np.sin(a)).astype(int), 0, length - 1)
        cols = np.clip(np.round(c + t * np.cos(a)).astype(int), 0, length - 1)
        out[i, rows, cols] = 1.0
        out[i] /= out[i].sum()
    return out


def line_map(norm: np.ndarray, length: int = LINE_LENGTH, angles: int = LINE_ANGLES,
             window: int | None = None) -> np.ndarray:  # fmt: skip
    """Evidence of long thin structures (scratches, hairs, cracks) in a normalised image.

    How it works: a difference of Gaussians (:data:`LINE_SIGMAS`) marks thin dark and
    thin bright structures; each is averaged along straight segments of ``length`` px
    at ``angles`` orientations, and the best orientation's mean less the mean over all
    orientations is kept (a line accumulates along its own direction only, a speck or a
    texture grain in every direction alike); the stronger polarity wins, smoothed
    (sigma 2 px). The borders are mirrored. With ``window``, the difference of Gaussians
    is first divided by its local root mean square (:func:`local_normalised`), so faint
    lines in smooth areas count as much as strong ones in coarse textures.
    """
    from scipy.fft import set_workers
    from scipy.signal import fftconvolve

    norm = norm.astype(np.float32, copy=False)
    fine, coarse = (ndimage.gaussian_filter(norm, sigma) for sigma in LINE_SIGMAS)
    dog = coarse - fine
    if window is not None:
        dog = local_normalised(dog, window)
    half = length // 2
    both = np.stack([np.maximum(dog, 0), np.maximum(-dog, 0)])  # dark lines, bright lines
    padded = np.pad(both, ((0, 0), (half, half), (half, half)), mode="reflect")[:, None]
    kernels = line_kernels(length, angles)
    best = np.full(both.shape, -np.inf, np.float32)
    total = np.zeros(both.shape, np.float32)
    with set_workers(min(8, cpu_threads())):
        for k in range(0, angles, 8):  # a few orientations at a time: memory stays small
            means = fftconvolve(padded, kernels[None, k : k + 8], mode="valid", axes=(2, 3))
            best = np.maximum(best, means.max(axis=1))
            total += means.sum(axis=1)
    cue = (best - total / angles).max(axis=0)
    return ndimage.gaussian_filter(cue, 2.0).astype(np.float32)


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
