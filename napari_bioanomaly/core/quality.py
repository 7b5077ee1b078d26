"""Image quality control: flags for images that would mislead training or review.

Large collections hold blank frames, exported masks mistaken for images, dark or
saturated acquisitions and out-of-focus images. Each check is a cheap statistic
of the pixels, with a threshold that can be changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .images import to_grayscale
from .model import BioAnomalyError, ImageRecord


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


#: File attribute that keeps an image's flags in the annotation file ("ok" when none).
QC_ATTRIBUTE = "qc"


def flags_to_text(flags: tuple[str, ...] | list[str]) -> str:
    """The stored form: ``"ok"`` or the flags joined by ``"; "``."""
    return "; ".join(flags) if flags else "ok"


def flags_from_text(text: object) -> tuple[str, ...] | None:
    """Flags of a stored attribute; ``None`` when the image was never checked."""
    if text is None or str(text).strip() == "":
        return None
    value = str(text).strip()
    return () if value == "ok" else tuple(f.strip() for f in value.split(";") if f.strip())


def check_record(root: str | Path, record: ImageRecord, store: bool = True) -> tuple[str, ...]:
    """Flags of a dataset image (``("unreadable",)`` when it cannot be read), kept in its
    :data:`QC_ATTRIBUTE` file attribute when ``store``."""
    from .images import read_image
    from .paths import resolve_image

    try:
        flags = check(read_image(resolve_image(Path(root), record.filename))).flags
    except BioAnomalyError:
        flags = ("unreadable",)
    if store:
        record.file_attributes[QC_ATTRIBUTE] = flags_to_text(flags)
    return flags


def stored_or_checked(root: str | Path, record: ImageRecord) -> tuple[str, ...]:
    """The stored flags of an image, or a fresh check when it has none (not stored)."""
    stored = flags_from_text(record.file_attributes.get(QC_ATTRIBUTE))
    return stored if stored is not None else check_record(root, record, store=False)
