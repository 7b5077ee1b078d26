"""Evaluation of predicted regions against ground truth: per image, per group, per dataset.

How it works: every region is rasterised once inside its own bounding box (pixel
centres inside the polygon, as everywhere in the package). IoUs are exact pixel
counts: only pairs whose boxes overlap are compared, on the overlap window. This
handles overlapping instances (a label image cannot) and is faster than going
through run-length encodings.

Two scorings are reported:

- **matched**: predictions and ground truth matched one to one by IoU (optimal
  assignment) at a threshold; TP, FP, FN, precision, recall, F1, mean matched IoU.
- **study** (the brightfield anomaly study this tool grew from, for comparability):
  overlapping predictions are merged (union) first; a merged prediction with
  IoU >= threshold to some ground truth is a TP, otherwise an FP (split into "no
  overlap" and "overlap below threshold"); ground truth that no TP matches is an
  FN; accuracy = TP / (TP + FP + FN).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .geometry import rasterise_many, rasterise_window
from .metrics import match
from .model import Dataset, ImageRecord, Region


@dataclass(frozen=True)
class Mask:
    """A region rasterised inside its bounding box: rows ``r0:r0+h``, columns ``c0:c0+w``."""

    r0: int
    c0: int
    pixels: np.ndarray  # bool (h, w)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.pixels))


def rasterise(region: Region, shape: Sequence[int] | None = None) -> Mask:
    """The pixels of a region (centres inside the polygon), clipped to ``shape`` if given."""
    r0, c0, pixels = rasterise_window(region.polygon, shape)
    return Mask(r0, c0, pixels)


def _intersection(a: Mask, b: Mask) -> int:
    r0, c0 = max(a.r0, b.r0), max(a.c0, b.c0)
    r1 = min(a.r0 + a.pixels.shape[0], b.r0 + b.pixels.shape[0])
    c1 = min(a.c0 + a.pixels.shape[1], b.c0 + b.pixels.shape[1])
    if r1 <= r0 or c1 <= c0:
        return 0
    wa = a.pixels[r0 - a.r0 : r1 - a.r0, c0 - a.c0 : c1 - a.c0]
    wb = b.pixels[r0 - b.r0 : r1 - b.r0, c0 - b.c0 : c1 - b.c0]
    return int(np.count_nonzero(wa & wb))


def _boxes(masks: Sequence[Mask]) -> np.ndarray:
    return np.array(
        [(m.r0, m.c0, m.r0 + m.pixels.shape[0], m.c0 + m.pixels.shape[1]) for m in masks],
        dtype=np.int64,
    ).reshape(-1, 4)


def intersections(a: Sequence[Mask], b: Sequence[Mask]) -> np.ndarray:
    """Pixel counts of every pairwise intersection (only overlapping boxes are compared)."""
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    if not len(a) or not len(b):
        return out
    ba, bb = _boxes(a), _boxes(b)
    overlap = (
        (ba[:, None, 0] < bb[None, :, 2])
        & (bb[None, :, 0] < ba[:, None, 2])
        & (ba[:, None, 1] < bb[None, :, 3])
        & (bb[None, :, 1] < ba[:, None, 3])
    )
    for i, j in zip(*np.nonzero(overlap), strict=True):
        out[i, j] = _intersection(a[i], b[j])
    return out


def iou_matrix(gt: Sequence[Mask], pred: Sequence[Mask]) -> np.ndarray:
    """Exact pixel IoU of every ground-truth mask (rows) with every predicted mask."""
    inter = intersections(gt, pred).astype(np.float64)
    area_gt = np.array([m.area for m in gt], dtype=np.float64)[:, None]
    area_pred = np.array([m.area for m in pred], dtype=np.float64)[None, :]
    union = area_gt + area_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _union_area(masks: Sequence[Mask]) -> tuple[int, Mask | None]:
    """Area of the union of masks, and the union itself as one mask."""
    if not masks:
        return 0, None
    boxes = _boxes(masks)
    r0, c0 = boxes[:, :2].min(axis=0)
    r1, c1 = boxes[:, 2:].max(axis=0)
    canvas = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for m in masks:
        h, w = m.pixels.shape
        canvas[m.r0 - r0 : m.r0 - r0 + h, m.c0 - c0 : m.c0 - c0 + w] |= m.pixels
    return int(np.count_nonzero(canvas)), Mask(int(r0), int(c0), canvas)


def merge_overlapping(masks: Sequence[Mask]) -> list[Mask]:
    """Union of predictions that overlap (transitively), as the study did before scoring."""
    n = len(masks)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    inter = intersections(masks, masks)
    for i, j in zip(*np.nonzero(np.triu(inter, 1)), strict=True):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[Mask]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(masks[i])
    return [_union_area(g)[1] for g in groups.values()]  # type: ignore[misc]


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

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else (1.0 if not self.fn else 0.0)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    @property
    def mean_iou(self) -> float | None:
        return self.iou_sum / self.tp if self.tp else None

    @property
    def pixel_iou(self) -> float:
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
    shape = gt.shape or (pred.shape if pred is not None else None)
    preds = [
        r
        for r in (pred.regions if pred is not None else [])
        if r.score is None or r.score >= score_threshold
    ]
    masks = [Mask(*w) for w in rasterise_many([r.polygon for r in [*gt.regions, *preds]], shape)]
    gm, pm = masks[: len(gt.regions)], masks[len(gt.regions) :]
    out = ImageScore(
        image=gt.filename,
        group={k: str(gt.file_attributes.get(k, "")) for k in group_by},
        n_gt=len(gm),
        n_pred=len(pm),
        score=max((r.score or 0.0 for r in preds), default=0.0),
    )
    iou = iou_matrix(gm, pm)
    rows, cols = match(iou, iou_threshold)
    out.tp, out.fp, out.fn = len(rows), len(pm) - len(cols), len(gm) - len(rows)
    out.iou_sum = float(iou[rows, cols].sum())
    area_g, union_g = _union_area(gm)
    area_p, union_p = _union_area(pm)
    inter = _intersection(union_g, union_p) if union_g is not None and union_p is not None else 0
    out.inter_px, out.union_px = inter, area_g + area_p - inter
    merged = merge_overlapping(pm)
    study = iou_matrix(gm, merged)
    best = study.max(axis=0) if len(gm) else np.zeros(len(merged))
    out.study_pred = len(merged)
    out.study_tp = int(np.count_nonzero(best >= iou_threshold))
    out.study_no_overlap = int(np.count_nonzero(best == 0))
    out.study_below = len(merged) - out.study_tp - out.study_no_overlap
    hit = (study >= iou_threshold).any(axis=1) if len(merged) else np.zeros(len(gm), bool)
    out.study_fn = int(np.count_nonzero(~hit))
    return out


def summarise(rows: Sequence[ImageScore]) -> dict[str, Any]:
    """Dataset summary: sums over images, then the ratios."""
    total = ImageScore(image="all")
    for r in rows:
        for name in (
            "n_gt", "n_pred", "tp", "fp", "fn", "iou_sum", "inter_px", "union_px",
            "study_pred", "study_tp", "study_no_overlap", "study_below", "study_fn",
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
        "study": {
            "predicted": total.study_pred,
            "matched": s_tp,
            "no_overlap": total.study_no_overlap,
            "overlap_below_threshold": total.study_below,
            "false_negatives": s_fn,
            "accuracy": s_tp / denom if denom else 1.0,
            "precision": s_tp / (s_tp + s_fp) if s_tp + s_fp else 1.0,
            "recall": s_tp / (s_tp + s_fn) if s_tp + s_fn else 1.0,
            "f1": 2 * s_tp / (2 * s_tp + s_fp + s_fn) if denom else 1.0,
        },
    }


def evaluate(
    gt: Dataset,
    pred: Dataset,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    group_by: str | None = None,
    exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """Score every ground-truth image against the predictions for the same file name.

    Images of excluded groups (values of ``group_by``) are left out of the summary
    and the groups, and reported as ``excluded``.
    """
    by_name = {im.filename: im for im in pred.images}
    keys = [group_by] if group_by else []
    excluded = set(exclude)
    rows = [
        score_image(im, by_name.get(im.filename), iou_threshold, score_threshold, keys)
        for im in gt.images
    ]
    kept = [r for r in rows if not (group_by and r.group[group_by] in excluded)]
    groups: dict[str, list[ImageScore]] = defaultdict(list)
    if group_by:
        for r in kept:
            groups[r.group[group_by]].append(r)
    return {
        **summarise(kept),
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "group_by": group_by,
        "excluded": sorted(excluded),
        "groups": {k: summarise(v) for k, v in sorted(groups.items())},
        "unmatched_predictions": sorted(set(by_name) - {im.filename for im in gt.images}),
        "rows": rows,
    }


class ImageCache:
    """What scoring one image needs, computed once; rescoring at other thresholds is cheap.

    How it works: the IoU matrix of ground truth and predictions does not depend on the
    thresholds, so it is kept. For the pixel IoU, every pixel covered by a prediction
    keeps the highest score covering it and whether ground truth covers it too: the
    union of the predictions scoring at least ``t`` is then the pixels whose kept
    score is at least ``t``.
    """

    def __init__(self, gt: ImageRecord, pred: ImageRecord | None, group_by: Iterable[str] = ()):
        shape = gt.shape or (pred.shape if pred is not None else None)
        self.image = gt.filename
        self.group = {k: str(gt.file_attributes.get(k, "")) for k in group_by}
        preds = list(pred.regions) if pred is not None else []
        self.scores = np.array([1.0 if r.score is None else r.score for r in preds], dtype=float)
        windows = rasterise_many([r.polygon for r in [*gt.regions, *preds]], shape)
        masks = [Mask(*w) for w in windows]
        self.gt_masks, self.pred_masks = masks[: len(gt.regions)], masks[len(gt.regions) :]
        self.iou = iou_matrix(self.gt_masks, self.pred_masks)
        self.gt_area, union_gt = _union_area(self.gt_masks)
        if self.pred_masks:
            boxes = _boxes(self.pred_masks)
            r0, c0 = boxes[:, :2].min(axis=0)
            r1, c1 = boxes[:, 2:].max(axis=0)
            best = np.full((r1 - r0, c1 - c0), -np.inf)
            for m, s in zip(self.pred_masks, self.scores, strict=True):
                h, w = m.pixels.shape
                win = best[m.r0 - r0 : m.r0 - r0 + h, m.c0 - c0 : m.c0 - c0 + w]
                np.maximum(win, np.where(m.pixels, s, -np.inf), out=win)
            covered = best > -np.inf
            in_gt = np.zeros_like(covered)
            if union_gt is not None:
                g = union_gt
                rs, cs = max(g.r0, r0), max(g.c0, c0)
                re = min(g.r0 + g.pixels.shape[0], r1)
                ce = min(g.c0 + g.pixels.shape[1], c1)
                if re > rs and ce > cs:
                    in_gt[rs - r0 : re - r0, cs - c0 : ce - c0] = g.pixels[
                        rs - g.r0 : re - g.r0, cs - g.c0 : ce - g.c0
                    ]
            self.pixel_scores = np.sort(best[covered])
            self.pixel_scores_in_gt = np.sort(best[covered & in_gt])
        else:
            self.pixel_scores = self.pixel_scores_in_gt = np.zeros(0)

    def score(self, iou_threshold: float = 0.5, score_threshold: float = 0.0) -> ImageScore:
        """The image's row at these thresholds (the study scoring is left at zero)."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        iou = self.iou[:, keep]
        rows, cols = match(iou, iou_threshold)
        n_gt = len(self.gt_masks)
        union_pred = len(self.pixel_scores) - np.searchsorted(self.pixel_scores, score_threshold)
        inter = len(self.pixel_scores_in_gt) - np.searchsorted(
            self.pixel_scores_in_gt, score_threshold
        )
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
            union_px=int(self.gt_area + union_pred - inter),
            score=float(self.scores[keep].max()) if len(keep) else 0.0,
        )

    def unmatched(
        self, iou_threshold: float = 0.5, score_threshold: float = 0.0
    ) -> tuple[list[int], list[int]]:
        """Indices of the false-negative ground truth and false-positive predictions."""
        keep = np.flatnonzero(self.scores >= score_threshold)
        rows, cols = match(self.iou[:, keep], iou_threshold)
        fn = sorted(set(range(len(self.gt_masks))) - set(rows.tolist()))
        fp = sorted(set(keep.tolist()) - set(keep[cols].tolist()))
        return fn, fp
