"""The operating point of a model: the probability threshold and minimum region area
that turn its anomaly map into regions, chosen where validation F1 is best.

A network's probabilities are rarely calibrated at 0.5 for rare, small
anomalies, and specks of a few pixels cost precision: both settings are
chosen on the validation images after training (best mean of instance and
pixel F1, see :func:`choose` and :mod:`.chooser`), kept in the checkpoint, and
used by ``predict``, the Review widget and cross-validation unless the user
overrides them.

What "best" means depends on the anomalies (:func:`criterion_for`): for thin
structures (cracks, scratches, hairs: most annotated pixels in regions at least ten
times longer than wide) an instance IoU of 0.5 is ill-posed, since a crack found in
three pieces matches nothing and a one-pixel shift halves a thin region's IoU; their
point maximises pixel F1. Otherwise it maximises the mean of instance and pixel F1.

A point may also hold a *minimum peak* (hysteresis, as Canny keeps edges and ilastik's
threshold applet offers: a component of ``map > threshold`` is kept only where the map
exceeds ``min_peak``, so faint false specks go and a true region keeps its faint rim),
a minimum area per class (on steel, a 256 px floor that removes false specks among
large patches also removes half of the true inclusions), and *vote weights*: a region's
class is the one its pixels' probabilities vote for, each class's votes weighted
(:func:`vote`). How the chooser decides each is in :mod:`.chooser`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
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
#: What operating points and model selection maximise (see :func:`f1_score`).
CRITERIA = ("mean", "pixel")
#: A region is elongated when its skeleton is at least this many times its mean width...
ELONGATION = 10.0
#: ... and a dataset is of thin structures when this share of its annotated pixels is in
#: elongated regions (CrackForest 0.99, KolektorSDD 0.94, NEU-Seg 0.30).
THIN_SHARE = 2 / 3


@dataclass(frozen=True)
class OperatingPoint:
    """Threshold and minimum area of predicted regions, and how they were chosen.

    ``f1`` and ``pixel_f1`` are the validation instance F1 (IoU >= 0.5) and
    pixel F1 at this point; ``source`` is ``"validation"``, ``"default"`` or ``"user"``
    (see :meth:`overridden`).
    ``class_min_area`` holds the classes whose minimum area differs from
    ``min_area`` (see :meth:`min_area_of`). ``criterion`` is what the point
    maximised: ``mean`` (of instance and pixel F1) or ``pixel`` (pixel F1, for
    thin structures; see :func:`criterion_for`). ``min_peak``: regions are kept only where
    the map reaches it (hysteresis; ``None``: every region above ``threshold``).
    ``vote_weights``: what each named class's probabilities count for when a region's
    class is voted (classes not named count 1; see :func:`vote`). ``regions``: how many
    annotated validation regions ``f1`` and ``pixel_f1`` were measured on (``None`` in
    points stored before 2026-12-05).
    """

    threshold: float = DEFAULT_THRESHOLD
    min_area: float = DEFAULT_MIN_AREA
    f1: float | None = None
    pixel_f1: float | None = None
    source: str = "default"
    class_min_area: Mapping[str, float] = field(default_factory=dict)
    criterion: str = "mean"
    min_peak: float | None = None
    vote_weights: Mapping[str, float] = field(default_factory=dict)
    regions: int | None = None

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise BioAnomalyError(
                f"operating criterion must be one of {', '.join(CRITERIA)}, not {self.criterion!r}"
            )
        if not (isinstance(self.threshold, int | float) and 0 < self.threshold < 1):
            raise BioAnomalyError(f"operating threshold must be in (0, 1), not {self.threshold!r}")
        if self.min_peak is not None and not (
            isinstance(self.min_peak, int | float) and self.threshold < self.min_peak < 1
        ):
            raise BioAnomalyError(
                f"operating min_peak must be above the threshold {self.threshold:g} and below "
                f"1, not {self.min_peak!r}"
            )
        areas = {"min_area": self.min_area}
        if not isinstance(self.class_min_area, Mapping):
            raise BioAnomalyError("operating class_min_area must map classes to areas")
        for name, area in self.class_min_area.items():
            if not isinstance(name, str):
                raise BioAnomalyError(f"operating class_min_area: class {name!r} is not a name")
            areas[f"min_area of {name!r}"] = area
        for what, area in areas.items():
            if not (isinstance(area, int | float) and 0 <= area < 1e12):
                raise BioAnomalyError(f"operating {what} must be >= 0, not {area!r}")
        object.__setattr__(self, "class_min_area", {k: float(v) for k, v in
                                                    self.class_min_area.items()})  # fmt: skip
        if not isinstance(self.vote_weights, Mapping):
            raise BioAnomalyError("operating vote_weights must map classes to weights")
        for name, weight in self.vote_weights.items():
            if not (isinstance(name, str) and isinstance(weight, int | float)
                    and 1e-6 <= weight <= 1e6):  # fmt: skip
                raise BioAnomalyError(
                    f"operating vote weight of {name!r} must be a positive number, not {weight!r}"
                )
        object.__setattr__(self, "vote_weights", {k: float(v) for k, v in
                                                  self.vote_weights.items()})  # fmt: skip
        for name in ("f1", "pixel_f1"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and 0 <= v <= 1):
                raise BioAnomalyError(f"operating {name} must be in [0, 1], not {v!r}")
        if self.regions is not None and not (
            isinstance(self.regions, int) and not isinstance(self.regions, bool)
            and 0 <= self.regions < 10**12
        ):  # fmt: skip
            raise BioAnomalyError(
                f"operating regions must be a count of validation regions, not {self.regions!r}"
            )

    @property
    def score(self) -> float | None:
        """The validation score this point was chosen by (:func:`f1_score` under its
        criterion); ``None`` when it holds no validation F1s."""
        if self.f1 is None:
            return None
        return f1_score(self.f1, self.pixel_f1 or 0.0, self.criterion)

    def overridden(
        self,
        threshold: float | None = None,
        min_area: float | None = None,
        min_peak: float | None = None,
    ) -> OperatingPoint:
        """This point with a user's values where given (``source`` ``"user"``; checked, so
        a bad value is refused before any image is read). A user's ``min_area`` holds for
        every class; a user's ``threshold`` is a plain one unless ``min_peak`` is given too;
        the vote weights stay the model's."""
        if threshold is None and min_area is None and min_peak is None:
            return self
        return replace(
            self,
            threshold=self.threshold if threshold is None else threshold,
            min_area=self.min_area if min_area is None else min_area,
            class_min_area=self.class_min_area if min_area is None else {},
            min_peak=min_peak if min_peak is not None else
            self.min_peak if threshold is None else None,
            f1=None, pixel_f1=None, source="user", regions=None,
        )  # fmt: skip

    def min_area_of(self, label: str) -> float:
        """The minimum area of regions of class ``label``."""
        return self.class_min_area.get(label, self.min_area)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["class_min_area"] = dict(self.class_min_area)
        out["vote_weights"] = dict(self.vote_weights)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> OperatingPoint:
        """Validated inverse of :meth:`to_dict` (``None`` gives the default point)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise BioAnomalyError("operating point must be a mapping")
        areas = data.get("class_min_area") or {}
        if not isinstance(areas, dict):
            raise BioAnomalyError("operating class_min_area must map classes to areas")
        votes = data.get("vote_weights") or {}
        if not isinstance(votes, dict):
            raise BioAnomalyError("operating vote_weights must map classes to weights")
        try:
            return cls(
                float(data["threshold"]),
                float(data["min_area"]),
                None if data.get("f1") is None else float(data["f1"]),
                None if data.get("pixel_f1") is None else float(data["pixel_f1"]),
                str(data.get("source", "validation")),
                {k: float(v) for k, v in areas.items()},
                str(data.get("criterion", "mean")),
                None if data.get("min_peak") is None else float(data["min_peak"]),
                dict(votes),  # checked by __post_init__, which names a bad weight
                _count(data.get("regions")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BioAnomalyError(f"operating point is malformed ({exc})") from None

    def describe(self, scores: bool = True) -> str:
        """Threshold and minimum areas, and (with ``scores``) the validation F1s."""
        text = f"threshold {self.threshold:g}"
        if self.min_peak is not None:
            text += f", min peak {self.min_peak:g}"
        text += f", min area {self.min_area:g} px"
        if self.class_min_area:
            text += " (" + ", ".join(f"{k} {v:g} px" for k, v in
                                     sorted(self.class_min_area.items())) + ")"  # fmt: skip
        if self.vote_weights:
            text += ", votes " + ", ".join(f"{k} x{v:.2g}" for k, v in
                                           sorted(self.vote_weights.items()))  # fmt: skip
        if scores and self.f1 is not None:
            text += f" (validation instance F1 {self.f1:.3f}, pixel F1 {self.pixel_f1 or 0:.3f}"
            text += "; chosen by pixel F1: thin structures)" if self.criterion == "pixel" else ")"
        return text


def vote(votes: np.ndarray, classes: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """The classes (indices into ``classes``) that summed class probabilities ``votes``
    (``(len(classes), ...)``) elect, each class's votes counted ``weights[name]`` times
    (1 when not named)."""
    w = np.array([weights.get(name, 1.0) for name in classes], dtype=np.float64)
    return np.argmax(np.asarray(votes, dtype=np.float64) * w.reshape(-1, *[1] * (votes.ndim - 1)),
                     axis=0)  # fmt: skip


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
    # without truth every kept component is a false positive: the same counts without
    # matching (most validation tiles of mostly normal images hold no truth)
    normal = not inside.any()
    for i, t in enumerate(thresholds):
        labels, sizes = _components(heat > t)
        for j, area in enumerate(min_areas):
            if normal:
                big = sizes[1:][sizes[1:] >= area]  # the kept components' sizes
                out[i, j] = (0, len(big), 0, 0, big.sum())
                continue
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
    criterion: str = "mean",
) -> OperatingPoint:
    """The point of summed :func:`point_counts` with the best :func:`f1_score` under
    ``criterion``. Ties (to three decimals) go to the better instance F1, then to the
    threshold nearest 0.5.
    """
    best: tuple[float, float, float] | None = None
    point = OperatingPoint()
    for i, t in enumerate(thresholds):
        for j, area in enumerate(min_areas):
            tp, fp, fn, hit, pred = counts[i, j]
            f1 = MatchCounts(int(tp), int(fp), int(fn)).f1
            denom = pred + truth_pixels
            pixel_f1 = 2 * hit / denom if denom else 1.0
            key = (round(f1_score(f1, pixel_f1, criterion), 3), round(f1, 3), -abs(t - 0.5))
            if best is None or key > best:
                best = key
                point = OperatingPoint(float(t), float(area), float(f1), float(pixel_f1),
                                       "validation", criterion=criterion)  # fmt: skip
    return point


def _count(value: Any) -> Any:
    """A stored count as an int where it is a whole number (JSON or a checkpoint may
    hold it as a float); anything else as it is, for :class:`OperatingPoint` to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def f1_score(instance_f1: float, pixel_f1: float, criterion: str = "mean") -> float:
    """What operating points and model selection maximise: the mean of the two F1s, or
    (criterion ``pixel``, for thin structures) pixel F1 alone.

    Instance F1 alone is ill-posed for thin structures and pixel F1 alone ignores specks
    and merged regions; their mean rewards both where instances are well defined.
    """
    if criterion == "pixel":
        return pixel_f1
    return (instance_f1 + pixel_f1) / 2


def thin_counts(truth: np.ndarray) -> tuple[int, int]:
    """Annotated pixels of one instance label image that lie in elongated regions
    (skeleton length at least :data:`ELONGATION` times the mean width, area / skeleton
    length), and all its annotated pixels."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    thin = total = 0
    for label, box in enumerate(ndimage.find_objects(truth), start=1):
        if box is None:
            continue
        region = truth[box] == label
        area = int(np.count_nonzero(region))
        length = max(int(np.count_nonzero(skeletonize(region))), 1)
        total += area
        if length * length >= ELONGATION * area:  # length / (area / length) >= 10
            thin += area
    return thin, total


def thin_share(truths: Sequence[np.ndarray]) -> float:
    """The share of the annotated pixels of ``truths`` (instance label images) that lie in
    elongated regions (:func:`thin_counts`); 0 without annotations."""
    counts = [thin_counts(t) for t in truths]
    total = sum(c[1] for c in counts)
    return sum(c[0] for c in counts) / total if total else 0.0


def criterion_for(truths: Sequence[np.ndarray]) -> str:
    """``pixel`` when the annotations are mostly thin structures (:func:`thin_share` at
    least :data:`THIN_SHARE`), else ``mean``. Measured on CrackForest (3 models): the
    points chosen by pixel F1 gave test pixel F1 0.609-0.633 against 0.561-0.610 by the
    mean, which chose 512 px minimum areas that dropped crack fragments."""
    return criterion_of_share(thin_share(truths))


def criterion_of_share(share: float) -> str:
    """:func:`criterion_for` annotations whose :func:`thin_share` is ``share``."""
    return "pixel" if share >= THIN_SHARE else "mean"
