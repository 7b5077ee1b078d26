"""Choosing an operating point (:class:`~.operating.OperatingPoint`) on validation
images: per-image tables of connected components, then the threshold, minimum areas,
minimum peak and vote weights with the best validation score.

Each validation image is kept as a :func:`component_table` (one row per component of
the map at each threshold of the grid), not as its map, so memory does not grow with the
images' size, and every point of the grid is a sum over rows.

*Minimum peak*: every higher threshold of the grid is tried as the peak a region must
reach; the plain point stays unless one scores better on validation by
:data:`PEAK_MARGIN`.

*Class floors*: with several classes each class gets its own minimum area where that
improves validation F1.

*Vote weights* (prior correction, as logit adjustment does for imbalanced classes): a
network may learn where anomalies are and still vote nearly every region of a small
class into a larger, similar one (on NEU-Seg one U-Net of three labelled 145 of 226
test inclusions "patches"; its inclusion probabilities still ranked them). The chooser
then weights each class's votes where that raises the balanced accuracy of the
validation regions' classes by :data:`VOTE_MARGIN`; other models keep equal votes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .metrics import MatchCounts
from .operating import (
    MIN_AREAS,
    THRESHOLDS,
    OperatingPoint,
    criterion_of_share,
    f1_score,
    thin_counts,
    vote,
)

#: A minimum peak (hysteresis) is kept only when it raises the validation score by this much
#: over the best point without one: one more setting chosen on few images must earn it.
PEAK_MARGIN = 0.005
#: A point chosen again on other maps of the same images (those averaged over test-time
#: augmentation's flips and rotations) replaces the first only when it scores this much
#: better than the first does on those maps (see :meth:`PointChooser.choose_against`).
AGAINST_MARGIN = PEAK_MARGIN
#: ... and only on at least this many annotated validation regions: KolektorSDD's 5
#: validation images hold 5 cracks, and the points chosen there for averaged maps (+0.03
#: and +0.07 validation pixel F1) lost 0.21 test instance F1 in both of two runs.
AGAINST_REGIONS = 20
#: Test-time augmentation is worth its 8x prediction time, and is used by default, where
#: a model's point for averaged maps scores this much above its plain point on plain maps
#: (the same validation images, at least :data:`AGAINST_REGIONS` regions; see
#: :func:`tta_pays`). NEU-Seg U-Nets of six seeds gained 0.004, 0.010, 0.012, 0.013, 0.017
#: and 0.036 on validation, and +0.024, +0.008, -0.001, +0.027, +0.047 and +0.048 test
#: instance F1; a CrackForest U-Net 0.010, and +0.044 test pixel F1.
TTA_GAIN = 0.01
#: Vote weights tried per class (:class:`PointChooser`): powers of two from 1/8 to 8.
VOTE_WEIGHTS = tuple(float(2.0**k) for k in np.arange(-3.0, 3.5, 0.5))
#: Vote weights are kept only when they raise the validation regions' balanced class
#: accuracy by this much: a collapsed class, not a region or two, must call for them.
VOTE_MARGIN = 0.02

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
        return criterion_of_share(self.thin_pixels / self.truth_pixels if self.truth_pixels
                                  else 0.0)  # fmt: skip

    def choose(self, criterion: str | None = None) -> OperatingPoint:
        """The best point under ``criterion`` (default: :meth:`criterion`); the default
        point without images. Asked again before more images are added, the same point
        (not chosen again)."""
        if criterion not in self._chosen:
            point = self._choose(criterion)
            self._chosen[criterion] = replace(point, regions=self.n_truth) if self.tables \
                else point  # fmt: skip
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
        return replace(self._point(self._revoted(named), criterion), vote_weights=named)

    def choose_against(self, first: OperatingPoint) -> OperatingPoint:
        """The best point under ``first``'s criterion where it beats ``first`` on the images
        added by :data:`AGAINST_MARGIN` and they hold :data:`AGAINST_REGIONS` annotated
        regions; else ``first``, with its F1s on these images. A second point chosen on
        validation images must earn its place, as a minimum peak does."""
        best = self.choose(first.criterion)
        scored = self.score(first)
        if scored is None:
            return best
        score, f1, pixel_f1 = scored
        gain = f1_score(best.f1 or 0.0, best.pixel_f1 or 0.0, first.criterion) - score
        if self.n_truth >= AGAINST_REGIONS and gain >= AGAINST_MARGIN:
            return best
        return replace(
            first, f1=float(f1), pixel_f1=float(pixel_f1), source="validation", regions=self.n_truth
        )

    def _revoted(self, named: dict[str, float]) -> list[list[np.ndarray]]:
        """The tables with each component's class voted again under ``named`` weights."""
        revoted = []
        for table in self.tables:
            revoted.append([rows.copy() for rows in table])
            for rows in revoted[-1]:
                rows[:, _CLASS] = vote(rows[:, _VOTES:].T, self.classes, named)
        return revoted

    def score(self, point: OperatingPoint) -> tuple[float, float, float] | None:
        """``(score, instance F1, pixel F1)`` of a given ``point`` on the images added,
        under the point's criterion; ``None`` when its threshold is not one of the grid's
        (a point typed in by a user) or no image was added."""
        if not self.tables or point.threshold not in self.thresholds:
            return None
        i = self.thresholds.index(point.threshold)
        named = dict(point.vote_weights)
        tables = self._revoted(named) if named and len(self.classes) > 1 else self.tables
        rows = np.concatenate([table[i] for table in tables])
        if point.min_peak is not None:
            rows = rows[rows[:, _PEAK] > point.min_peak]
        n_classes = self._n_classes(tables)
        floor = np.array([point.min_area_of(c) for c in self.classes] +
                         [point.min_area] * (n_classes - len(self.classes)))  # fmt: skip
        return self._evaluate(rows, floor, point.criterion)

    def _n_classes(self, tables: list[list[np.ndarray]]) -> int:
        return max([len(self.classes), 1] + [int(r[:, _CLASS].max()) + 1 for tb in tables
                                             for r in tb if len(r)])  # fmt: skip

    def _evaluate(
        self, rows: np.ndarray, floor: np.ndarray, criterion: str
    ) -> tuple[float, float, float]:
        """Score, instance F1 and pixel F1 of the component ``rows`` kept by the class
        ``floor`` areas."""
        kept = rows[:, _AREA] >= floor[rows[:, _CLASS].astype(int)]
        tp = int(rows[kept, _MATCH].sum())
        f1 = MatchCounts(tp, int(kept.sum()) - tp, self.n_truth - tp).f1
        denom = rows[kept, _AREA].sum() + self.truth_pixels
        pixel_f1 = 2 * rows[kept, _INSIDE].sum() / denom if denom else 1.0
        return f1_score(f1, pixel_f1, criterion), f1, float(pixel_f1)

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
        n_classes = self._n_classes(tables)

        def evaluate(rows: np.ndarray, floor: np.ndarray) -> tuple[float, float, float]:
            return self._evaluate(rows, floor, criterion)

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
        common = float(areas[-int(max(scored)[2])])
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


def tta_pays(plain: OperatingPoint, tta: OperatingPoint | None) -> bool:
    """Whether test-time augmentation earns its 8x prediction time for a model, so that
    predicting uses it unless told otherwise: its point for averaged maps (``tta``) scores
    at least :data:`TTA_GAIN` above its ``plain`` point, each on its own maps of the same
    validation images, under the same criterion, on at least :data:`AGAINST_REGIONS`
    annotated regions (the scores compared as shown, to 3 decimals). Points without
    validation scores or a count of regions (chosen before 2026-12-05, or typed in by a
    user) never do: choose-point --tta gives them one (and measures the plain point again
    on the same images)."""
    if tta is None or plain.source != "validation" or tta.source != "validation":
        return False
    if plain.score is None or tta.score is None or tta.regions is None:
        return False
    if plain.criterion != tta.criterion or plain.regions != tta.regions:
        return False
    # the scores as they are shown (3 decimals), so that what is said is what is decided
    gain = round(tta.score, 3) - round(plain.score, 3)
    return tta.regions >= AGAINST_REGIONS and gain >= TTA_GAIN - 1e-9


def tta_gain_text(plain: OperatingPoint, tta: OperatingPoint | None) -> str:
    """What test-time augmentation scored on validation against the plain point, in words."""
    if tta is None or tta.score is None or plain.score is None:
        return "no validation score with flips and rotations"
    return (f"validation score {tta.score:.3f} with flips and rotations against "
            f"{plain.score:.3f} without, on {tta.regions} regions")  # fmt: skip
