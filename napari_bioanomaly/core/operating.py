"""The operating point of a model: the probability threshold and minimum region area
that turn its anomaly map into regions, chosen where validation F1 is best.

A network's probabilities are rarely calibrated at 0.5 for rare, small
anomalies, and specks of a few pixels cost precision: both settings are
chosen on the validation images after training (best mean of instance and
pixel F1, see :func:`choose`), kept in the checkpoint, and used by
``predict``, the Review widget and cross-validation unless the user overrides
them.

What "best" means depends on the anomalies (:func:`criterion_for`): for thin
structures (cracks, scratches, hairs: most annotated pixels in regions at least ten
times longer than wide) an instance IoU of 0.5 is ill-posed, since a crack found in
three pieces matches nothing and a one-pixel shift halves a thin region's IoU; their
point maximises pixel F1. Otherwise it maximises the mean of instance and pixel F1.

*Minimum peak* (hysteresis, as Canny keeps edges and ilastik's threshold applet
offers): a component of ``map > threshold`` may be kept only where the map exceeds
``min_peak``, a higher value. Faint false specks go, and a true region keeps its faint
rim, which a single higher threshold would cut. The chooser tries every higher
threshold of its grid as the minimum peak and keeps the plain point unless one scores
better on validation by :data:`PEAK_MARGIN`.

Classes of very different sizes need different minimum areas (on steel, a
256 px floor that removes false specks among large patches also removes half of
the true inclusions): with several classes each class gets its own minimum
area where that improves validation F1 (:func:`choose_operating_point`); a
region's class is the one its pixels vote for.

*Vote weights* (prior correction, as logit adjustment does for imbalanced classes): a
network may learn where anomalies are and still vote nearly every region of a small
class into a larger, similar one (on NEU-Seg one U-Net of three labelled 145 of 226
test inclusions "patches"; its inclusion probabilities still ranked them). The chooser
then weights each class's votes where that raises the balanced accuracy of the
validation regions' classes by :data:`VOTE_MARGIN`; other models keep equal votes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
#: A minimum peak (hysteresis) is kept only when it raises the validation score by this much
#: over the best point without one: one more setting chosen on few images must earn it.
PEAK_MARGIN = 0.005
#: Vote weights tried per class (:class:`PointChooser`): powers of two from 1/8 to 8.
VOTE_WEIGHTS = tuple(float(2.0**k) for k in np.arange(-3.0, 3.5, 0.5))
#: Vote weights are kept only when they raise the validation regions' balanced class
#: accuracy by this much: a collapsed class, not a region or two, must call for them.
VOTE_MARGIN = 0.02
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
    pixel F1 at this point; ``source`` is ``"validation"`` or ``"default"``.
    ``class_min_area`` holds the classes whose minimum area differs from
    ``min_area`` (see :meth:`min_area_of`). ``criterion`` is what the point
    maximised: ``mean`` (of instance and pixel F1) or ``pixel`` (pixel F1, for
    thin structures; see :func:`criterion_for`). ``min_peak``: regions are kept only where
    the map reaches it (hysteresis; ``None``: every region above ``threshold``).
    ``vote_weights``: what each named class's probabilities count for when a region's
    class is voted (classes not named count 1; see :func:`vote`).
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
            text += f" (validation F1 {self.f1:.3f}, pixel F1 {self.pixel_f1 or 0:.3f}"
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
    return "pixel" if thin_share(truths) >= THIN_SHARE else "mean"


#: Columns of a :func:`component_table` row before its class votes.
_CLASS, _AREA, _MATCH, _INSIDE, _PEAK, _TRUE_CLASS, _VOTES = range(7)


def component_table(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    iou: float = 0.5,
    truth_classes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per threshold, one row per connected component of ``1 - probs[0] > t``: its class
    (index into ``probs[1:]``, the class its probabilities vote for), area, whether it
    matches a true instance at ``iou``, its pixels inside the truth, its peak (the
    highest value of the map in it, which must exceed a minimum peak), the true class
    most of its annotated pixels have (``1 + `` index into ``probs[1:]``; 0: none, or no
    ``truth_classes``), then its summed probability of each class (its votes).

    ``probs`` are class probabilities ``(n_classes + 1, rows, cols)`` (a 2-D map
    counts as one class); ``truth`` an instance label image (0 = background),
    ``truth_classes`` the class label image of the same annotations.
    A component's match does not depend on which other components are kept
    (at IoU >= 0.5 a prediction can match one true instance only), so counts
    at any minimum area, one per class, and any minimum peak are sums over rows.
    """
    from scipy import ndimage

    from .metrics import iou_matrix, match

    if probs.ndim == 2:
        probs = np.stack([1.0 - probs, probs])
    fg = 1.0 - probs[0]
    inside = truth > 0
    present = np.bincount(truth.ravel())[1:] > 0
    n_classes = len(probs) - 1
    out = []
    for t in thresholds:
        labels, n = ndimage.label(fg > t)
        rows = np.zeros((n, _VOTES + n_classes))
        if n:
            index = np.arange(1, n + 1)
            votes = np.stack([ndimage.sum(p, labels, index) for p in probs[1:]])
            rows[:, _CLASS] = np.argmax(votes, axis=0)
            rows[:, _AREA] = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            _, cols = match(iou_matrix(truth, labels)[present], iou)
            rows[cols, _MATCH] = 1
            rows[:, _INSIDE] = np.bincount(labels[inside], minlength=n + 1)[1:]
            rows[:, _PEAK] = ndimage.maximum(fg, labels, index)
            if truth_classes is not None and n_classes > 1:
                per_class = np.stack([np.bincount(labels[truth_classes == c], minlength=n + 1)[1:]
                                      for c in range(1, n_classes + 1)])  # fmt: skip
                rows[:, _TRUE_CLASS] = np.where(per_class.any(axis=0),
                                                np.argmax(per_class, axis=0) + 1, 0)  # fmt: skip
            rows[:, _VOTES:] = votes.T
        out.append(rows)
    return out


def choose_operating_point(
    maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas: Sequence[float] = MIN_AREAS,
    iou: float = 0.5,
    classes: Sequence[str] = (),
    criterion: str | None = None,
    truth_classes: Sequence[np.ndarray] | None = None,
) -> OperatingPoint:
    """The threshold and minimum area with the best :func:`f1_score` over these images,
    under ``criterion`` (default: :func:`criterion_for` these truths); see
    :class:`PointChooser` (vote weights need the class label images ``truth_classes``)."""
    chooser = PointChooser(thresholds, min_areas, iou, classes)
    for k, (m, t) in enumerate(zip(maps, truths, strict=True)):
        chooser.add(m, t, None if truth_classes is None else truth_classes[k])
    return chooser.choose(criterion)


class PointChooser:
    """Chooses an operating point from images added one at a time, keeping only their
    :func:`component_table` (so memory does not grow with the images' size).

    ``add(probs, truth, truth_classes)`` takes an anomaly map (``1 - p(background)``) or
    class probabilities ``(len(classes) + 1, rows, cols)``, its instance label image and
    (optional) its class label image; :meth:`choose` gives the threshold and minimum
    area with the best :func:`f1_score`.
    With several classes, each class's minimum area is then changed in turn (twice
    round) where that raises the score by at least 0.001: the classes that need another
    floor get one in ``class_min_area``. Each higher threshold of the grid is tried as
    the minimum peak (:class:`OperatingPoint`); the best such point is chosen only when
    it beats the best plain one by :data:`PEAK_MARGIN`. With several classes and class
    label images, the regions kept at that point that lie mostly in annotations then
    choose :meth:`vote weights <_vote_weights>`; where they are kept, the classes are
    voted again and the point chosen again (its class floors may change with them).
    """

    def __init__(
        self,
        thresholds: Sequence[float] = THRESHOLDS,
        min_areas: Sequence[float] = MIN_AREAS,
        iou: float = 0.5,
        classes: Sequence[str] = (),
    ) -> None:
        self.thresholds, self.iou, self.classes = tuple(thresholds), iou, tuple(classes)
        self.areas = np.asarray(min_areas, dtype=float)
        self.tables: list[list[np.ndarray]] = []
        self.n_truth = self.truth_pixels = self.thin_pixels = 0
        self._chosen: dict[str | None, OperatingPoint] = {}  # by criterion, until add()

    def add(
        self, probs: np.ndarray, truth: np.ndarray, truth_classes: np.ndarray | None = None
    ) -> None:
        self._chosen.clear()
        self.tables.append(component_table(probs, truth, self.thresholds, self.iou,
                                           truth_classes))  # fmt: skip
        self.n_truth += int(np.count_nonzero(np.bincount(truth.ravel())[1:]))
        thin, total = thin_counts(truth)
        self.thin_pixels += thin
        self.truth_pixels += total

    def criterion(self) -> str:
        """:func:`criterion_for` the truths added."""
        thin = self.thin_pixels / self.truth_pixels if self.truth_pixels else 0.0
        return "pixel" if thin >= THIN_SHARE else "mean"

    def choose(self, criterion: str | None = None) -> OperatingPoint:
        """The best point under ``criterion`` (default: :meth:`criterion`); the default
        point without images. Asked again before more images are added, the same point
        (not chosen again)."""
        if criterion not in self._chosen:
            self._chosen[criterion] = self._choose(criterion)
        return self._chosen[criterion]

    def _choose(self, criterion: str | None) -> OperatingPoint:
        if not self.tables:
            return OperatingPoint()
        criterion = criterion or self.criterion()
        point = self._point(self.tables, criterion)
        weights = self._vote_weights(point)
        if not weights:
            return point
        named = {c: w for c, w in zip(self.classes, weights, strict=True) if w != 1.0}
        revoted = []
        for table in self.tables:
            revoted.append([rows.copy() for rows in table])
            for rows in revoted[-1]:
                rows[:, _CLASS] = vote(rows[:, _VOTES:].T, self.classes, named)
        return replace(self._point(revoted, criterion), vote_weights=named)

    def _vote_weights(self, point: OperatingPoint) -> tuple[float, ...] | None:
        """Weights of the classes' votes (from :data:`VOTE_WEIGHTS`, one class changed at a
        time, twice round, the weight nearest 1 first) with the best balanced accuracy of
        the classes of the regions kept at ``point`` that lie mostly (half their pixels) in
        annotations: ``None`` when they do not beat equal votes by :data:`VOTE_MARGIN` (or
        there is nothing to vote)."""
        classes = self.classes
        if len(classes) < 2:
            return None
        i = self.thresholds.index(point.threshold)
        rows = np.concatenate([table[i] for table in self.tables])
        if rows.shape[1] != _VOTES + len(classes):
            return None
        floors = np.array([point.min_area_of(c) for c in classes])
        kept = rows[:, _AREA] >= floors[rows[:, _CLASS].astype(int)]
        if point.min_peak is not None:
            kept &= rows[:, _PEAK] > point.min_peak
        rows = rows[kept & (rows[:, _TRUE_CLASS] > 0) & (2 * rows[:, _INSIDE] >= rows[:, _AREA])]
        truth = rows[:, _TRUE_CLASS].astype(int) - 1
        present = np.unique(truth)
        if len(present) < 2:
            return None
        votes = rows[:, _VOTES:].T

        def balanced(w: np.ndarray) -> float:
            right = np.argmax(votes * w[:, None], axis=0) == truth
            return float(np.mean([right[truth == c].mean() for c in present]))

        weights = np.ones(len(classes))
        equal = best = balanced(weights)
        nearest_first = sorted(VOTE_WEIGHTS, key=lambda w: (abs(np.log(w)), w))
        for _ in range(2):
            for c in range(len(classes)):
                for w in nearest_first:
                    trial = weights.copy()
                    trial[c] = w
                    value = balanced(trial)
                    if value > best + 1e-9:
                        weights, best = trial, value
        if best < equal + VOTE_MARGIN:
            return None
        return tuple(float(w) for w in weights)

    def _point(self, tables: list[list[np.ndarray]], criterion: str) -> OperatingPoint:
        """The best point of ``tables`` (rows of :func:`component_table`), classes as voted."""
        classes = self.classes
        n_truth, truth_pixels = self.n_truth, self.truth_pixels
        n_classes = max([len(classes), 1] + [int(r[:, _CLASS].max()) + 1 for tb in tables
                                             for r in tb if len(r)])  # fmt: skip

        def evaluate(rows: np.ndarray, floor: np.ndarray) -> tuple[float, float, float]:
            kept = rows[:, _AREA] >= floor[rows[:, _CLASS].astype(int)]
            tp = int(rows[kept, _MATCH].sum())
            f1 = MatchCounts(tp, int(kept.sum()) - tp, n_truth - tp).f1
            denom = rows[kept, _AREA].sum() + truth_pixels
            pixel_f1 = 2 * rows[kept, _INSIDE].sum() / denom if denom else 1.0
            return f1_score(f1, pixel_f1, criterion), f1, float(pixel_f1)

        best: dict[bool, tuple[tuple[float, float, float], OperatingPoint]] = {}
        for i, t in enumerate(self.thresholds):
            at_t = np.concatenate([table[i] for table in tables])
            for min_peak in [None, *(h for h in self.thresholds if h > t)]:
                rows = at_t if min_peak is None else at_t[at_t[:, _PEAK] > min_peak]
                common, floor = self._floors(rows, n_classes, evaluate)
                score, f1, pixel_f1 = evaluate(rows, floor)
                key = (round(score, 3), round(f1, 3), -abs(t - 0.5))
                peaked = min_peak is not None
                if peaked not in best or key > best[peaked][0]:
                    own = {classes[c]: float(floor[c]) for c in range(len(classes))
                           if floor[c] != common}  # fmt: skip
                    best[peaked] = key, OperatingPoint(
                        float(t), float(common), float(f1), float(pixel_f1), "validation", own,
                        criterion, None if min_peak is None else float(min_peak),
                    )  # fmt: skip
        if True in best and best[True][0][0] >= best[False][0][0] + PEAK_MARGIN:
            return best[True][1]
        return best[False][1]

    def _floors(
        self,
        rows: np.ndarray,
        n_classes: int,
        evaluate: Callable[[np.ndarray, np.ndarray], tuple[float, float, float]],
    ) -> tuple[float, np.ndarray]:
        """The minimum area of the grid best for all classes of ``rows`` at once, and the
        floor of each class: that one, or the class's own where it raises the score."""
        areas = self.areas
        scored = [(*(round(v, 3) for v in evaluate(rows, np.full(n_classes, a))[:2]), -k)
                  for k, a in enumerate(areas)]  # fmt: skip
        common = float(areas[-max(scored)[2]])
        floor = np.full(n_classes, common)
        current = round(evaluate(rows, floor)[0], 3)
        for _ in range(2 if len(self.classes) > 1 else 0):
            for c in range(len(self.classes)):
                for a in areas:
                    trial = floor.copy()
                    trial[c] = a
                    value = round(evaluate(rows, trial)[0], 3)
                    if value > current:
                        floor, current = trial, value
        return common, floor
