"""Image quality control: flags for images that would mislead training or review.

Large collections hold blank frames, exported masks mistaken for images, dark or
saturated acquisitions and out-of-focus images. Each check is a cheap statistic
of the pixels, with a threshold that can be changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from .images import NON_FINITE, to_grayscale, with_finite_pixels
from .model import BioAnomalyError, ImageRecord


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the checks (intensities are fractions of the image's dtype range)."""

    uniform_std: float = 1e-3
    binary_levels: int = 2
    saturated_fraction: float = 0.05
    focus_min: float = 0.01


#: Checked with at least this many images (a folder), an image is out of focus when its
#: focus is below :data:`FOCUS_SHARE` of their median, not below ``focus_min``: how sharp
#: a sharp image is depends on what it shows. Sharp electroluminescence images of solar
#: cells lie at 0.007-0.04 (41 of 636 below 0.01, none below a tenth of their median);
#: sharp textures blurred by 1-2 px fall below a tenth of their peers' median, where the
#: fixed limit passed CrackForest's blurred by 3 px (``benchmarks/bench_qc.py``;
#: docs/benchmarks.md, "Image quality control").
FOCUS_PEERS = 8
FOCUS_SHARE = 0.1
OUT_OF_FOCUS = "out of focus"
#: The file attribute whose values group the images judged together for focus: images of
#: different kinds may differ in sharpness as much as a blur does (the five real sets in
#: one folder: 15 of 636 sharp solar cells out of focus and none of 20 KolektorSDD or
#: CrackForest images blurred by 2 px; grouped by set, as each set alone; bench_qc.py).
FOCUS_GROUP = "cell_line"


@dataclass(frozen=True)
class QualityReport:
    """Statistics of one image and the flags they raise."""

    std: float
    levels: int
    p75: float
    saturated: float
    focus: float
    flags: tuple[str, ...]


def _scale(gray: np.ndarray) -> np.ndarray:
    """Grayscale pixels as float64, integer ones as fractions of their range
    (:func:`_integer_range`); float ones as they are."""
    if np.issubdtype(gray.dtype, np.integer):
        return gray.astype(np.float64) / _integer_range(gray)
    return gray.astype(np.float64)


def _integer_range(gray: np.ndarray) -> int:
    """The top of an integer image's range: its type's for 8 and 16 bits; for wider types
    (int32, uint32: 12-bit camera data stored so) the smallest of 16 bits or more that
    holds its values, so such data is judged as a 16-bit image of it would be, not as a
    sliver of 2^31 (which flagged every image uniform)."""
    if gray.dtype.itemsize <= 2:
        return int(np.iinfo(gray.dtype).max)
    top = max(abs(int(gray.min())), abs(int(gray.max()))) if gray.size else 0
    return int(2 ** max(16, top.bit_length()) - 1)


def check(image: np.ndarray, limits: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Flags: ``uniform`` (no contrast), ``binary`` (two levels: a mask, not a
    micrograph), ``dim`` (75th percentile at zero), ``saturated`` (many pixels at the
    top of the range), ``out of focus`` (low variance of the Laplacian of the
    standardised image), ``non-finite pixels`` (NaN or infinite pixels of a float
    image: the statistics are of the others, :data:`~.images.NON_FINITE`)."""
    gray, non_finite = with_finite_pixels(to_grayscale(image))
    x = _scale(gray)
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
    if non_finite:
        flags.append(NON_FINITE)
    report = QualityReport(std, levels, p75, saturated, focus, tuple(flags))
    return with_focus_limit(report, limits.focus_min, limits)


def _focus_applies(report: QualityReport, limits: QualityThresholds) -> bool:
    """Whether focus means anything for the image (not blank, not a mask)."""
    return report.std >= limits.uniform_std and report.levels > limits.binary_levels


def with_focus_limit(
    report: QualityReport, limit: float, limits: QualityThresholds = QualityThresholds()
) -> QualityReport:
    """``report`` flagged out of focus (or not) by the focus ``limit``."""
    flags = tuple(f for f in report.flags if f != OUT_OF_FOCUS)
    if _focus_applies(report, limits) and report.focus < limit:
        flags += (OUT_OF_FOCUS,)
    return replace(report, flags=flags)


def focus_limit(
    reports: Sequence[QualityReport | None], limits: QualityThresholds = QualityThresholds()
) -> tuple[float, str]:
    """The focus below which an image checked with ``reports`` (``None``: unreadable) is
    out of focus, and how it was found: :data:`FOCUS_SHARE` of their median focus with
    at least :data:`FOCUS_PEERS` images that have one, else ``limits.focus_min``."""
    focus = [r.focus for r in reports if r is not None and _focus_applies(r, limits)]
    if len(focus) < FOCUS_PEERS:
        return limits.focus_min, f"focus below {limits.focus_min:g}"
    median = float(np.median(focus))
    limit = FOCUS_SHARE * median
    return limit, (
        f"focus below {limit:.3g} ({FOCUS_SHARE:g} x {median:.3g}, the median of the "
        f"{len(focus)} images)"
    )


def among_peers(
    reports: Sequence[QualityReport | None],
    groups: Sequence[object] | None = None,
    limits: QualityThresholds = QualityThresholds(),
) -> tuple[list[QualityReport | None], str]:
    """The ``reports`` of images checked together, out of focus judged against one
    another (:func:`focus_limit`), and what the limit was. With ``groups`` (a value per
    report, e.g. each image's :data:`FOCUS_GROUP`), against the others of the group."""
    keys = list(groups) if groups is not None else [None] * len(reports)
    if len(keys) != len(reports):
        raise ValueError(f"{len(keys)} groups for {len(reports)} images")
    members: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    judged: list[QualityReport | None] = list(reports)
    rules = []
    for key, idx in members.items():
        limit, how = focus_limit([reports[i] for i in idx], limits)
        rules.append(how if groups is None else f"{'no group' if key is None else key}: {how}")
        for i in idx:
            r = reports[i]
            judged[i] = None if r is None else with_focus_limit(r, limit, limits)
    return judged, "; ".join(rules)


def focus_groups(
    records: Sequence[ImageRecord], attribute: str = FOCUS_GROUP
) -> list[object] | None:
    """Each image's file ``attribute`` (``None`` where it has none), or ``None`` when no
    image has one."""
    values = [r.file_attributes.get(attribute) or None for r in records]
    return values if any(v is not None for v in values) else None


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


UNREADABLE = ("unreadable",)


def check_file(root: str | Path, record: ImageRecord) -> QualityReport | None:
    """The report of a dataset image alone; ``None`` when it cannot be read."""
    from .images import read_image
    from .paths import resolve_image

    try:
        return check(read_image(resolve_image(Path(root), record.filename)))
    except BioAnomalyError:
        return None


def flags_of(report: QualityReport | None) -> tuple[str, ...]:
    """The flags of a report of :func:`check_file` (:data:`UNREADABLE` for ``None``)."""
    return UNREADABLE if report is None else report.flags


def stored_or_checked(root: str | Path, records: Sequence[ImageRecord]) -> list[tuple[str, ...]]:
    """The stored flags of each image, or, for those never checked, fresh ones (not
    stored), out of focus judged among the images checked now (of their cell line)."""
    stored = [flags_from_text(r.file_attributes.get(QC_ATTRIBUTE)) for r in records]
    fresh = [i for i, flags in enumerate(stored) if flags is None]
    chosen = [records[i] for i in fresh]
    checked, _ = among_peers([check_file(root, r) for r in chosen], focus_groups(chosen))
    for i, report in zip(fresh, checked, strict=True):
        stored[i] = flags_of(report)
    return [flags if flags is not None else UNREADABLE for flags in stored]
