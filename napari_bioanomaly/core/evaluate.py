"""Evaluation of predicted regions against ground truth: per image, per group, per dataset.

How it works: every region is rasterised once into row runs (pixel centres inside
the polygon, as everywhere in the package; no image is allocated). IoUs are exact
pixel counts from runs joined on their rows, which handles overlapping instances
(a label image cannot).

Two scorings are reported:

- **matched**: predictions and ground truth matched one to one by IoU (optimal
  assignment) at a threshold; TP, FP, FN, precision, recall, F1, mean matched IoU.
- **study** (the brightfield anomaly study this tool grew from, for comparability):
  overlapping predictions are merged (union) first; a merged prediction with
  IoU >= threshold to some ground truth is a TP, otherwise an FP (split into "no
  overlap" and "overlap below threshold"); ground truth that no TP matches is an
  FN; accuracy = TP / (TP + FP + FN).

Also reported: per-class scores (ground truth and predictions of one class only),
agreement of the classes of matched regions (confusion matrix and Cohen's kappa),
and image-level scores (an image is anomalous when it has ground truth; its score
is the ``anomaly_score`` file attribute of its prediction, from the unsupervised
models, or else its best region score).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .geometry import rasterise_spans
from .images import unknown_size_text
from .metrics import match
from .model import Dataset, ImageRecord
from .runs import Spans, _merged_ious, iou_matrix, prefix_union_counts, union_area
from .text import counted


@dataclass
class ImageScore:
    """One image's row of the evaluation table."""

    image: str
    group: dict[str, str] = field(default_factory=dict)
    n_gt: int = 0
    n_pred: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0
    inter_px: int = 0
    union_px: int = 0
    score: float = 0.0
    # study scoring
    study_pred: int = 0
    study_tp: int = 0
    study_no_overlap: int = 0
    study_below: int = 0
    study_fn: int = 0
    #: predictions at the score threshold whose outline covers no pixel centre (a sliver,
    #: or outside the image): left out of the scores, in no count above
    empty_pred: int = 0
    #: ground-truth regions whose outline covers no pixel centre (cut to a 1-pixel image,
    #: a sliver): left out of the scores as empty predictions are, in no count above
    empty_gt: int = 0

    @property
    def precision(self) -> float:
        return metrics.precision(self.tp, self.fp, self.fn)

    @property
    def recall(self) -> float:
        return metrics.recall(self.tp, self.fp, self.fn)

    @property
    def f1(self) -> float:
        return metrics.f1(self.tp, self.fp, self.fn)

    @property
    def mean_iou(self) -> float | None:
        return self.iou_sum / self.tp if self.tp else None

    @property
    def pixel_iou(self) -> float:
        """Pixels of both unions over pixels of either; 1.0 when neither covers a pixel
        (nothing to find, nothing found: regions of no pixel are in neither union, and in
        no count either, see :attr:`empty_gt` and :attr:`empty_pred`)."""
        return self.inter_px / self.union_px if self.union_px else 1.0

    def row(self) -> dict[str, Any]:
        """A flat, JSON-ready row (what ``evaluate --json`` and the CSV hold)."""
        out = asdict(self)
        out.update(
            precision=self.precision,
            recall=self.recall,
            f1=self.f1,
            mean_iou=self.mean_iou,
            pixel_iou=self.pixel_iou,
        )
        return out


def score_image(
    gt: ImageRecord,
    pred: ImageRecord | None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    group_by: Iterable[str] = (),
) -> ImageScore:
    """Compare an image's predictions (scoring >= ``score_threshold``) with its ground truth."""
    return _study_score(ImageCache(gt, pred, group_by), iou_threshold, score_threshold)


def _study_score(cache: ImageCache, iou_threshold: float, score_threshold: float) -> ImageScore:
    """The image's row with the study scoring filled in."""
    out = cache.score(iou_threshold, score_threshold)
    keep = cache.scores >= score_threshold
    pm = cache.pred.subset(keep)
    kept = np.flatnonzero(keep)
    pm = Spans(np.searchsorted(kept, pm.region), pm.row, pm.start, pm.end, len(kept))
    study = _merged_ious(cache.gt, pm)
    n_merged = study.shape[1]
    best = study.max(axis=0) if cache.gt.n else np.zeros(n_merged)
    out.study_pred = n_merged
    out.study_tp = int(np.count_nonzero(best >= iou_threshold))
    out.study_no_overlap = int(np.count_nonzero(best == 0))
    out.study_below = n_merged - out.study_tp - out.study_no_overlap
    hit = (study >= iou_threshold).any(axis=1) if n_merged else np.zeros(cache.gt.n, bool)
    out.study_fn = int(np.count_nonzero(~hit))
    return out


def summarise(rows: Sequence[ImageScore]) -> dict[str, Any]:
    """Dataset summary: sums over images, then the ratios."""
    total = ImageScore(image="all")
    for r in rows:
        for name in (
            "n_gt", "n_pred", "tp", "fp", "fn", "iou_sum", "inter_px", "union_px",
            "study_pred", "study_tp", "study_no_overlap", "study_below", "study_fn",
            "empty_pred", "empty_gt",
        ):  # fmt: skip
            setattr(total, name, getattr(total, name) + getattr(r, name))
    s_tp, s_fp, s_fn = total.study_tp, total.study_no_overlap + total.study_below, total.study_fn
    denom = s_tp + s_fp + s_fn
    return {
        "n_images": len(rows),
        "gt": total.n_gt,
        "pred": total.n_pred,
        "tp": total.tp,
        "fp": total.fp,
        "fn": total.fn,
        "precision": total.precision,
        "recall": total.recall,
        "f1": total.f1,
        "mean_iou": total.mean_iou,
        "pixel_iou": total.pixel_iou,
        "empty_predictions": total.empty_pred,
        "empty_truth": total.empty_gt,
        "study": {
            "predicted": total.study_pred,
            "matched": s_tp,
            "no_overlap": total.study_no_overlap,
            "overlap_below_threshold": total.study_below,
            "false_negatives": s_fn,
            "accuracy": s_tp / denom if denom else 1.0,
            "precision": metrics.precision(s_tp, s_fp, s_fn),
            "recall": metrics.recall(s_tp, s_fp, s_fn),
            "f1": metrics.f1(s_tp, s_fp, s_fn),
        },
    }


#: File attribute of a prediction with its image anomaly score (unsupervised models).
ANOMALY_SCORE = "anomaly_score"


def _image_score(pred: ImageRecord | None) -> float | None:
    if pred is None or ANOMALY_SCORE not in pred.file_attributes:
        return None
    try:
        return float(pred.file_attributes[ANOMALY_SCORE])
    except (TypeError, ValueError):
        return None


def per_class(
    caches: Sequence[ImageCache],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Scores of each class alone: its ground truth against predictions of that class.

    Taken from the cached IoU matrices (sub-matrices of one class; nothing is
    rasterised again). ``found`` is the share of the class's ground truth matched
    by a prediction of any class (the class-agnostic matching): what a
    class-agnostic model, such as the unsupervised ones, finds of each class.
    """
    totals: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(5))  # gt pred tp iou found
    for cache in caches:
        for label, counts in cache.class_counts(iou_threshold, score_threshold).items():
            totals[label] += counts
    out = {}
    for label in sorted(totals):
        n_gt, n_pred, tp, iou_sum, found = totals[label]
        fp, fn = n_pred - tp, n_gt - tp
        out[label] = {
            "gt": int(n_gt),
            "pred": int(n_pred),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "precision": metrics.precision(tp, fp, fn),
            "recall": metrics.recall(tp, fp, fn),
            "f1": metrics.f1(tp, fp, fn),
            "mean_iou": iou_sum / tp if tp else None,
            "found": found / n_gt if n_gt else None,
        }
    return out


def class_agnostic(classes: dict[str, dict[str, Any]]) -> bool:
    """Whether the predictions scored by :func:`per_class` name none of the ground truth's
    classes (a class-agnostic model: the unsupervised ones call every region "anomaly").
    Class-wise matching then has nothing to count; ``found``, the share of each class
    matched by any prediction, is what tells how the model did on that class."""
    predicted = [c for c in classes.values() if c["pred"]]
    return (
        bool(predicted)
        and all(c["gt"] == 0 for c in predicted)
        and any(c["gt"] for c in classes.values())
    )


def found_count(c: dict[str, Any]) -> int:
    """How many regions of a class of :func:`per_class` a prediction of any class matched."""
    return round(c["found"] * c["gt"]) if c["gt"] else 0


def class_agreement_summary(matched: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Confusion matrix and Cohen's kappa of the classes of matched regions.

    Left empty for single-class predictions (nothing to agree on).
    """
    from .imagemetrics import class_agreement

    if len({p for _, p in matched}) < 2:
        return {"matched": 0, "classes": [], "matrix": [], "kappa": None, "agreement": None}
    classes, matrix, kappa = class_agreement([t for t, _ in matched], [p for _, p in matched])
    return {
        "matched": len(matched),
        "classes": classes,
        "matrix": matrix.tolist(),
        "kappa": _finite(kappa),
        "agreement": float(np.trace(matrix) / matrix.sum()),
    }


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN (undefined) becomes null in JSON


def image_level(rows: Sequence[ImageScore], threshold: float = 0.5) -> dict[str, Any]:
    """Image-level scores: an image is anomalous if it has ground truth, its score is its
    best prediction's; ROC-AUC, average precision, and the confusion at ``threshold``."""
    from .imagemetrics import Confusion, average_precision, roc_auc

    labels = [1 if r.n_gt else 0 for r in rows]
    scores = [r.score for r in rows]
    c = Confusion.at(labels, scores, threshold)
    return {
        "images": len(rows),
        "anomalous": int(sum(labels)),
        "roc_auc": _finite(roc_auc(labels, scores)),
        "average_precision": _finite(average_precision(labels, scores)),
        "threshold": threshold,
        "tp": c.tp,
        "fp": c.fp,
        "tn": c.tn,
        "fn": c.fn,
        **{k: _finite(getattr(c, k)) for k in ("tpr", "tnr", "ppv", "npv", "f1", "kappa")},
    }


@dataclass(frozen=True)
class Report:
    """Scores of predictions against ground truth at one set of thresholds.

    ``summary``: the dataset's figures (:func:`summarise`: counts, precision, recall,
    F1, mean and pixel IoU, the study scoring); ``rows``: one :class:`ImageScore` per
    image scored (not those of excluded groups: ``excluded_images`` names them);
    ``groups``: a summary per value of ``group_by``; ``classes``: per class
    (:func:`per_class`); ``class_agreement``: of matched regions
    (:func:`class_agreement_summary`); ``image_level``: at the image threshold
    (:func:`image_level`).
    """

    summary: dict[str, Any]
    rows: list[ImageScore]
    groups: dict[str, dict[str, Any]]
    classes: dict[str, dict[str, Any]]
    class_agreement: dict[str, Any]
    image_level: dict[str, Any]
    iou_threshold: float
    score_threshold: float
    group_by: str | None = None
    excluded: list[str] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    excluded_images: list[str] = field(default_factory=list)

    @property
    def f1(self) -> float:
        return self.summary["f1"]

    @property
    def precision(self) -> float:
        return self.summary["precision"]

    @property
    def recall(self) -> float:
        return self.summary["recall"]

    @property
    def pixel_iou(self) -> float:
        return self.summary["pixel_iou"]

    def to_dict(self, images: bool = True) -> dict[str, Any]:
        """JSON-ready: the summary's keys at the top, then the rest (``images``: rows)."""
        out = {
            **self.summary,
            "image_level": self.image_level,
            "classes": self.classes,
            "class_agreement": self.class_agreement,
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "group_by": self.group_by,
            "excluded": list(self.excluded),
            "excluded_images": list(self.excluded_images),
            "groups": self.groups,
            "unmatched_predictions": list(self.unmatched_predictions),
        }
        if images:
            out["images"] = [r.row() for r in self.rows]
        return out


def group_summaries(rows: Sequence[ImageScore], group_by: str | None) -> dict[str, Any]:
    """:func:`summarise` of the rows of each value of ``group_by`` (sorted by value)."""
    groups: dict[str, list[ImageScore]] = defaultdict(list)
    if group_by:
        for r in rows:
            groups[r.group[group_by]].append(r)
    return {k: summarise(v) for k, v in sorted(groups.items())}


def report(
    caches: Sequence[ImageCache],
    rows: Sequence[ImageScore],
    iou_threshold: float,
    score_threshold: float,
    group_by: str | None = None,
    exclude: Iterable[str] = (),
    image_threshold: float = 0.5,
    unmatched_predictions: Iterable[str] = (),
) -> Report:
    """The :class:`Report` of images already scored (``rows[i]`` is ``caches[i]``'s row at
    these thresholds): what ``bioanomaly evaluate`` prints and the Review widget shows.

    Images of excluded groups (values of ``group_by``, listed as ``excluded``) are left
    out of everything scored: the summary, the groups, the classes, the image level and
    the rows; ``excluded_images`` names them.
    """
    excluded = set(exclude)
    keep = [not (group_by and r.group[group_by] in excluded) for r in rows]
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    kept_caches = [c for c, k in zip(caches, keep, strict=True) if k]
    matched = [
        pair for c in kept_caches for pair in c.matched_labels(iou_threshold, score_threshold)
    ]
    return Report(
        summary=summarise(kept),
        rows=kept,
        groups=group_summaries(kept, group_by),
        classes=per_class(kept_caches, iou_threshold, score_threshold),
        class_agreement=class_agreement_summary(matched),
        image_level=image_level(kept, image_threshold),
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        group_by=group_by,
        excluded=sorted(excluded),
        unmatched_predictions=sorted(unmatched_predictions),
        excluded_images=[r.image for r, k in zip(rows, keep, strict=True) if not k],
    )


def evaluate(
    gt: Dataset,
    pred: Dataset,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    group_by: str | None = None,
    exclude: Iterable[str] = (),
    image_threshold: float = 0.5,
    pairs: Mapping[str, ImageRecord] | None = None,
) -> Report:
    """Score every ground-truth image against the predictions for the same image (see
    :func:`paired`; with the study scoring, see the module docstring).

    ``pairs``: :func:`paired` of the two datasets where the caller has it already (the
    CLI checks it before scoring), so the images are paired once.
    """
    if pairs is None:
        pairs = paired(gt, pred)
    keys = [group_by] if group_by else []
    caches = [ImageCache(im, pairs.get(im.filename), keys) for im in gt.images]
    rows = [_study_score(c, iou_threshold, score_threshold) for c in caches]
    used = {im.filename for im in pairs.values()}
    unmatched = {im.filename for im in pred.images} - used
    return report(caches, rows, iou_threshold, score_threshold, group_by, exclude,
                  image_threshold, unmatched)  # fmt: skip


def _no_pixel_note(
    counts: Sequence[tuple[str, int]], what: str, why: str, limit: int, left: str
) -> str:
    """``N <what> region(s) cover(s) no pixel (<why>), <left>: <images>``, naming the first
    ``limit`` images of ``counts`` (image, regions) that have any; empty when none has."""
    images = [(image, n) for image, n in counts if n]
    if not images:
        return ""
    named = ", ".join(f"{image} ({n})" for image, n in images[:limit])
    more = f" and {len(images) - limit} more" if len(images) > limit else ""
    total = sum(n for _, n in images)
    verb = "region covers" if total == 1 else "regions cover"
    return f"{total} {what} {verb} no pixel ({why}), {left}: {named}{more}"


def empty_note(rows: Sequence[ImageScore], limit: int = 3) -> str:
    """Says the predictions left out for covering no pixel (see :class:`ImageCache`),
    with the images that have them; empty when there are none."""
    counts = [(r.image, r.empty_pred) for r in rows]
    why = "a sliver, or outside the image"
    return _no_pixel_note(counts, "predicted", why, limit, "left out of the scores")


def empty_truth_note(rows: Sequence[ImageScore], limit: int = 3) -> str:
    """Says the ground-truth regions left out for covering no pixel (see
    :class:`ImageCache`), with the images that have them; empty when there are none.

    Parameters
    ----------
    rows
        The images' rows (:attr:`ImageScore.empty_gt` counts them).
    limit
        How many images are named; the others are counted.

    Returns
    -------
    str
        One line, e.g. ``1 ground-truth region covers no pixel (...): one_px.tif (1)``.
    """
    counts = [(r.image, r.empty_gt) for r in rows]
    why = "cut to a tiny image, a sliver, or outside the image"
    left = "left out of the scores (neither found nor missed)"
    return _no_pixel_note(counts, "ground-truth", why, limit, left)


def unread_notes(dataset: Dataset, limit: int = 3) -> list[str]:
    """Says the images of ``dataset`` whose size is unknown (their regions are scored as
    they are, not clipped to the image): those not found, and, apart, those that are there
    but cannot be read, with why (a PNG named ``.tif``, a file cut short).

    Parameters
    ----------
    dataset
        Ground truth loaded with its images' headers read: an image without a shape is
        one whose header could not be read.
    limit
        How many images of each kind are named; the others are counted.

    Returns
    -------
    list[str]
        No line, or one for the images not found and one for those that cannot be read.
    """
    missing: list[str] = []
    unreadable: list[str] = []
    for im in dataset.images:
        if im.shape is not None:
            continue
        why = unknown_size_text(dataset.root, im.filename)
        if why == "image not found":
            missing.append(im.filename)
        else:
            unreadable.append(f"{im.filename} ({why.removeprefix('image could not be read: ')})")
    lines = []
    for names, what in ((missing, "not found"), (unreadable, "cannot be read")):
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            its = "its" if len(names) == 1 else "their"
            lines.append(f"{counted(len(names), 'image')} {what} ({its} regions scored as "
                         f"they are, not clipped to the image): {', '.join(names[:limit])}"
                         f"{more}")  # fmt: skip
    return lines


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def paired(gt: Dataset, pred: Dataset) -> dict[str, ImageRecord]:
    """Each ground-truth image's predictions, by file name: the same name, else the same
    name without its folder where that is one image's on both sides (``images/003.png``
    and ``003.png``: a model run on the image folder of an annotation file)."""
    by_name = {im.filename: im for im in pred.images}
    pairs = {im.filename: by_name[im.filename] for im in gt.images if im.filename in by_name}
    used = {im.filename for im in pairs.values()}
    rest_gt = [im.filename for im in gt.images if im.filename not in pairs]
    rest_pred = [im for im in pred.images if im.filename not in used]
    gt_bases = Counter(_base(n) for n in rest_gt)
    pred_bases = Counter(_base(im.filename) for im in rest_pred)
    by_base = {_base(im.filename): im for im in rest_pred}
    for name in rest_gt:
        base = _base(name)
        if gt_bases[base] == 1 and pred_bases[base] == 1:
            pairs[name] = by_base[base]
    return pairs


def pairing_notes(
    gt: Dataset,
    pred: Dataset,
    pairs: Mapping[str, ImageRecord],
    gt_name: str | Path,
    pred_name: str | Path,
    names: Sequence[str] | None = None,
    limit: int = 3,
) -> list[str]:
    """What ``evaluate`` and the Review widget say of how :func:`paired` paired the files.

    Parameters
    ----------
    gt, pred
        The ground truth and the predictions.
    pairs
        :func:`paired` of the two.
    gt_name, pred_name
        The two files, as they are named to the user.
    names
        The ground-truth images scored: every one (``evaluate``), or those under review.
    limit
        How many images a line names; the others are counted.

    Returns
    -------
    list[str]
        No line when every image scored has predictions and every prediction an image;
        else, where nothing pairs at all, one line (``evaluate`` refuses the files with
        it); or a line for the ground-truth images without predictions (scored as
        predicting nothing), one for the predicted images that are not in the ground
        truth (left out), and one for those whose name without its folder is several
        images' (paired with none, as :func:`paired` leaves them).
    """
    if names is None:
        names = [im.filename for im in gt.images]
    if names and not pairs:
        if not pred.images:
            return [f"{pred_name}: holds no images"]
        return [
            f"{pred_name}: none of its {counted(len(pred.images), 'image')} is one of the "
            f"{len(names)} of {gt_name} (e.g. {pred.images[0].filename!r} and {names[0]!r}): "
            "predictions of other images?"
        ]
    lines = []
    missing = [n for n in names if n not in pairs]
    if missing:
        lines.append(f"{len(missing)} of {len(names)} ground-truth images are not in "
                     f"{pred_name}: scored as predicting nothing there")  # fmt: skip
    used = {im.filename for im in pairs.values()}
    predicted = {im.filename for im in pred.images}
    unpaired = sorted(predicted - used)
    # a name without its folder that an unpaired ground-truth image has too: several
    # images' on one side or the other, so paired with none
    unpaired_gt: dict[str, list[str]] = defaultdict(list)
    for im in gt.images:
        if im.filename not in pairs:
            unpaired_gt[_base(im.filename)].append(im.filename)
    several = [n for n in unpaired if _base(n) in unpaired_gt]
    others = [n for n in unpaired if _base(n) not in unpaired_gt]
    sides: dict[str, list[str]] = defaultdict(list)  # the predictions of each such name
    for name in several:
        sides[_base(name)].append(name)

    def named(items: Sequence[str]) -> str:
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    if others:
        lines.append(f"{len(others)} of {len(predicted)} images of {pred_name} are not in "
                     f"{gt_name}: left out of the scores ({named(others)})")  # fmt: skip
    if several:
        which = [f"{', '.join(unpaired_gt[base])} ~ {', '.join(of_base)}"
                 for base, of_base in sides.items()]  # fmt: skip
        lines.append(f"{counted(len(several), 'image')} of {pred_name} paired with none of "
                     f"{gt_name}: several images have the name without its folder "
                     f"({named(which)}); left out of the scores")  # fmt: skip
    return lines


class ImageCache:
    """What scoring one image needs, computed once; rescoring at other thresholds is cheap.

    The IoU matrix of ground truth and predictions does not depend on the thresholds,
    so it is kept, with the regions' runs for the pixel IoU of the unions. Those pixel
    counts depend only on which predictions pass the score threshold, and those are the
    highest scored first: the counts of every score threshold are computed together,
    once (:func:`~.runs.prefix_union_counts`), so moving either threshold costs no union.
    """

    def __init__(self, gt: ImageRecord, pred: ImageRecord | None, group_by: Iterable[str] = ()):
        shape = gt.shape or (pred.shape if pred is not None else None)
        self.image = gt.filename
        self.group = {k: str(gt.file_attributes.get(k, "")) for k in group_by}
        preds = list(pred.regions) if pred is not None else []
        scores = np.array([1.0 if r.score is None else r.score for r in preds], dtype=float)
        self.image_score = _image_score(pred)
        region, row, start, end = rasterise_spans([r.polygon for r in [*gt.regions, *preds]], shape)
        n_gt = self.n_gt = len(gt.regions)
        g, p = region < n_gt, region >= n_gt
        truth = Spans(region[g], row[g], start[g], end[g], n_gt).areas() > 0
        #: positions in the image's ground truth of the regions scored: one that covers no
        #: pixel centre (cut to a 1-pixel image, a sliver) can be matched by nothing and is
        #: in no union, so it is left out as an empty prediction is, rather than counted a
        #: miss of an image whose pixel IoU is perfect (:attr:`empty_truth` counts them)
        self.gt_index = np.flatnonzero(truth)
        self.empty_truth = n_gt - len(self.gt_index)
        self.gt_labels = [gt.regions[i].label for i in self.gt_index]
        kept_gt = np.cumsum(truth) - 1  # an empty region has no run to renumber
        self.gt = Spans(kept_gt[region[g]], row[g], start[g], end[g], len(self.gt_index))
        drawn = Spans(region[p] - n_gt, row[p], start[p], end[p], len(preds)).areas() > 0
        #: positions in the image's predictions of those scored: a prediction that covers
        #: no pixel centre (a sliver, or outside the image) can match nothing, and is left
        #: out rather than counted a false positive (:attr:`empty_scores` counts them)
        self.pred_index = np.flatnonzero(drawn)
        self.empty_scores = scores[~drawn]
        self.scores = scores[drawn]
        self.pred_labels = [preds[i].label for i in self.pred_index]
        renumber = np.cumsum(drawn) - 1  # an empty prediction has no run to renumber
        self.pred = Spans(renumber[region[p] - n_gt], row[p], start[p], end[p], len(self.scores))
        self.iou = iou_matrix(self.gt, self.pred)
        self.gt_area = union_area(self.gt)
        #: each prediction's place when shown highest score first (equal scores together)
        self._rank = np.searchsorted(-np.unique(self.scores)[::-1], -self.scores)
        #: (predicted pixels, pixels also true) of ranks below k, per k (computed once)
        self._prefix: tuple[np.ndarray, np.ndarray] | None = None

    def _pixel_counts(self, keep_mask: np.ndarray) -> tuple[int, int]:
        """Pixels of the union of the predictions kept, and of its intersection with the
        union of the ground truth."""
        kept = int(self._rank[keep_mask].max()) + 1 if keep_mask.any() else 0
        if not np.array_equal(keep_mask, self._rank < kept):  # not the best scored first
            shown = self.pred.subset(keep_mask)
            area_pred = union_area(shown)
            return area_pred, self.gt_area + area_pred - union_area(self.gt, shown)
        if self._prefix is None:
            self._prefix = prefix_union_counts(self.pred, self._rank, self.gt)
        area, inter = self._prefix
        return int(area[kept]), int(inter[kept])

    def score(self, iou_threshold: float = 0.5, score_threshold: float = 0.0) -> ImageScore:
        """The image's row at these thresholds (the study scoring is left at zero)."""
        keep_mask = self.scores >= score_threshold
        keep = np.flatnonzero(keep_mask)
        iou = self.iou[:, keep]
        rows, cols = match(iou, iou_threshold)
        n_gt = self.gt.n
        area_pred, inter = self._pixel_counts(keep_mask)
        return ImageScore(
            image=self.image,
            group=dict(self.group),
            n_gt=n_gt,
            n_pred=len(keep),
            tp=len(rows),
            fp=len(keep) - len(cols),
            fn=n_gt - len(rows),
            iou_sum=float(iou[rows, cols].sum()),
            inter_px=int(inter),
            union_px=int(self.gt_area + area_pred - inter),
            score=self.image_score
            if self.image_score is not None
            else (float(self.scores[keep].max()) if len(keep) else 0.0),
            empty_pred=int(np.count_nonzero(self.empty_scores >= score_threshold)),
            empty_gt=self.empty_truth,
        )

    def class_counts(
        self, iou_threshold: float = 0.5, score_threshold: float = 0.0
    ) -> dict[str, np.ndarray]:
        """Per class: ground truth, predictions, class-wise TP, their IoU sum, and the
        ground truth matched by a prediction of any class (see :func:`per_class`)."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        gt_labels = np.array(self.gt_labels, dtype=object)
        pred_labels = np.array(self.pred_labels, dtype=object)[keep]
        any_rows, _ = match(self.iou[:, keep], iou_threshold)
        found = np.zeros(len(gt_labels), bool)
        found[any_rows] = True
        out = {}
        for label in {*self.gt_labels, *pred_labels.tolist()}:
            g = np.flatnonzero(gt_labels == label)
            pr = keep[pred_labels == label]
            rows, cols = match(self.iou[np.ix_(g, pr)], iou_threshold)
            ious = self.iou[g[rows], pr[cols]] if len(rows) else np.zeros(0)
            out[label] = np.array([len(g), len(pr), len(rows), ious.sum(), found[g].sum()])
        return out

    def matched_labels(
        self, iou_threshold: float = 0.5, score_threshold: float = 0.0
    ) -> list[tuple[str, str]]:
        """(ground-truth class, predicted class) of each matched pair."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        rows, cols = match(self.iou[:, keep], iou_threshold)
        return [
            (self.gt_labels[r], self.pred_labels[keep[c]])
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
        ]

    def matched(
        self, iou_threshold: float = 0.5, score_threshold: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The one-to-one matches at these thresholds: the positions of the ground-truth
        regions in the image's ground truth, and of their predictions in its predictions."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        rows, cols = match(self.iou[:, keep], iou_threshold)
        return self.gt_index[rows], self.pred_index[keep[cols]]

    def unmatched(
        self, iou_threshold: float = 0.5, score_threshold: float = 0.0
    ) -> tuple[list[int], list[int]]:
        """Indices of the false-negative ground truth and of the false-positive
        predictions (positions in the image's regions; a region of no pixel, on either
        side, is neither)."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        rows, cols = match(self.iou[:, keep], iou_threshold)
        fn = sorted(set(range(self.gt.n)) - set(rows.tolist()))
        fp = sorted(set(keep.tolist()) - set(keep[cols].tolist()))
        return [int(self.gt_index[i]) for i in fn], [int(self.pred_index[i]) for i in fp]
