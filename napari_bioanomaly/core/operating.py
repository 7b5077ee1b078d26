"""The operating point of a model: the probability threshold and minimum region area
that turn its anomaly map into regions, chosen where validation F1 is best.

A network's probabilities are rarely calibrated at 0.5 for rare, small
anomalies, and specks of a few pixels cost precision: both settings are
chosen on the validation images after training (best mean of instance and
pixel F1, see :func:`choose`), kept in the checkpoint, and used by
``predict``, the Review widget and cross-validation unless the user overrides
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .metrics import MatchCounts, instance_counts
from .model import BioAnomalyError

#: Thresholds of ``1 - p(background)`` tried when choosing an operating point.
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Minimum region areas (pixels) tried when choosing an operating point.
MIN_AREAS = (0.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
#: What predict used before operating points were stored.
DEFAULT_THRESHOLD, DEFAULT_MIN_AREA = 0.5, 16.0


@dataclass(frozen=True)
class OperatingPoint:
    """Threshold and minimum area of predicted regions, and how they were chosen.

    ``f1`` and ``pixel_f1`` are the validation instance F1 (IoU >= 0.5) and
    pixel F1 at this point; ``source`` is ``"validation"`` or ``"default"``.
    """

    threshold: float = DEFAULT_THRESHOLD
    min_area: float = DEFAULT_MIN_AREA
    f1: float | None = None
    pixel_f1: float | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, int | float) and 0 < self.threshold < 1):
            raise BioAnomalyError(f"operating threshold must be in (0, 1), not {self.threshold!r}")
        if not (isinstance(self.min_area, int | float) and 0 <= self.min_area < 1e12):
            raise BioAnomalyError(f"operating min_area must be >= 0, not {self.min_area!r}")
        for name in ("f1", "pixel_f1"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and 0 <= v <= 1):
                raise BioAnomalyError(f"operating {name} must be in [0, 1], not {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> OperatingPoint:
        """Validated inverse of :meth:`to_dict` (``None`` gives the default point)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise BioAnomalyError("operating point must be a mapping")
        try:
            return cls(
                float(data["threshold"]),
                float(data["min_area"]),
                None if data.get("f1") is None else float(data["f1"]),
                None if data.get("pixel_f1") is None else float(data["pixel_f1"]),
                str(data.get("source", "validation")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BioAnomalyError(f"operating point is malformed ({exc})") from None

    def describe(self) -> str:
        text = f"threshold {self.threshold:g}, min area {self.min_area:g} px"
        if self.f1 is not None:
            text += f" (validation F1 {self.f1:.3f}, pixel F1 {self.pixel_f1 or 0:.3f})"
        return text


def _components(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the connected foreground (as predict finds them) and their sizes."""
    from scipy import ndimage

    labels, _ = ndimage.label(fg)
    return labels, np.bincount(labels.ravel())


def point_counts(
    heat: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas: Sequence[float] = MIN_AREAS,
    iou: float = 0.5,
) -> np.ndarray:
    """Counts ``(len(thresholds), len(min_areas), 5)`` of one image: TP, FP, FN,
    predicted pixels inside the truth, and predicted pixels, at each point.

    ``heat`` is ``1 - p(background)``; ``truth`` an instance label image (0 =
    background). Counts add up over images (and over processes).
    """
    out = np.zeros((len(thresholds), len(min_areas), 5))
    inside = truth > 0
    for i, t in enumerate(thresholds):
        labels, sizes = _components(heat > t)
        for j, area in enumerate(min_areas):
            small = sizes < area
            small[0] = True
            kept = np.where(small[labels], 0, labels)
            c = instance_counts(truth, kept, iou)
            fg = kept > 0
            out[i, j] = (c.tp, c.fp, c.fn, np.count_nonzero(fg & inside), np.count_nonzero(fg))
    return out


def choose(
    counts: np.ndarray,
    truth_pixels: int,
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas: Sequence[float] = MIN_AREAS,
) -> OperatingPoint:
    """The point of summed :func:`point_counts` with the best :func:`f1_score`: the mean of
    instance F1 (IoU >= 0.5) and pixel F1.

    Instance F1 alone is ill-posed for thin structures (a crack found in three
    pieces matches nothing) and pixel F1 alone ignores specks and merged
    regions; their mean rewards both. Ties (to three decimals) go to the
    better instance F1, then to the threshold nearest 0.5.
    """
    best: tuple[float, float, float] | None = None
    point = OperatingPoint()
    for i, t in enumerate(thresholds):
        for j, area in enumerate(min_areas):
            tp, fp, fn, hit, pred = counts[i, j]
            f1 = MatchCounts(int(tp), int(fp), int(fn)).f1
            denom = pred + truth_pixels
            pixel_f1 = 2 * hit / denom if denom else 1.0
            key = (round(f1_score(f1, pixel_f1), 3), round(f1, 3), -abs(t - 0.5))
            if best is None or key > best:
                best = key
                point = OperatingPoint(float(t), float(area), float(f1), float(pixel_f1),
                                       "validation")  # fmt: skip
    return point


def f1_score(instance_f1: float, pixel_f1: float) -> float:
    """What operating points and model selection maximise: the mean of the two F1s."""
    return (instance_f1 + pixel_f1) / 2


def choose_operating_point(
    heats: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas: Sequence[float] = MIN_AREAS,
    iou: float = 0.5,
) -> OperatingPoint:
    """The threshold and minimum area with the best :func:`f1_score` over these images."""
    if not heats:
        return OperatingPoint()
    counts = sum(point_counts(h, t, thresholds, min_areas, iou) for h, t in zip(heats, truths,
                                                                               strict=True))
    truth_pixels = int(sum(np.count_nonzero(t) for t in truths))
    return choose(np.asarray(counts), truth_pixels, thresholds, min_areas)
