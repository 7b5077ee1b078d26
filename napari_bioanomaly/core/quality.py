"""Image quality control: flags for images that would mislead training or review.

Large collections hold blank frames, exported masks mistaken for images, dark or
saturated acquisitions and out-of-focus images. Each check is a cheap statistic
of the pixels, with a threshold that can be changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .images import to_grayscale


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the checks (intensities are fractions of the image's dtype range)."""

    uniform_std: float = 1e-3
    binary_levels: int = 2
    saturated_fraction: float = 0.05
    focus_min: float = 0.01


@dataclass(frozen=True)
class QualityReport:
    """Statistics of one image and the flags they raise."""

    std: float
    levels: int
    p75: float
    saturated: float
    focus: float
    flags: tuple[str, ...]


def _scale(image: np.ndarray) -> np.ndarray:
    gray = to_grayscale(image)
    if np.issubdtype(gray.dtype, np.integer):
        return gray.astype(np.float64) / np.iinfo(gray.dtype).max
    return gray.astype(np.float64)


def check(image: np.ndarray, limits: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Flags: ``uniform`` (no contrast), ``binary`` (two levels: a mask, not a
    micrograph), ``dim`` (75th percentile at zero), ``saturated`` (many pixels at the
    top of the range), ``out of focus`` (low variance of the Laplacian of the
    standardised image)."""
    x = _scale(image)
    step = max(1, int(np.sqrt(x.size / 1_000_000)))  # about 1 M pixels are plenty
    sample = x[::step, ::step]
    std = float(sample.std())
    levels = len(np.unique(sample[:: max(1, sample.shape[0] // 256), :]))
    p75 = float(np.percentile(sample, 75))
    saturated = float(np.mean(sample >= 0.999 * max(float(x.max()), 1e-12))) if std > 0 else 1.0
    # variance of the Laplacian of the standardised image: independent of brightness and
    # contrast; sharp micrographs give about 1-3, a Gaussian blur of sigma 2 about 0.01
    focus = float(ndimage.laplace((sample - sample.mean()) / (std or 1.0)).var())
    flags = []
    if std < limits.uniform_std:
        flags.append("uniform")
    elif levels <= limits.binary_levels:
        flags.append("binary")
    if p75 <= 0:
        flags.append("dim")
    if std >= limits.uniform_std and saturated > limits.saturated_fraction and levels > 2:
        flags.append("saturated")
    if std >= limits.uniform_std and levels > limits.binary_levels and focus < limits.focus_min:
        flags.append("out of focus")
    return QualityReport(std, levels, p75, saturated, focus, tuple(flags))
