"""Segmentation metrics on label images: IoU matrices, one-to-one matching, scores.

Small vectorised functions, each testable alone (after cellpose's metrics module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth instance (rows) with every predicted one (columns).

    How it works: one joint histogram of ``(gt, pred)`` label pairs gives all
    intersections at once; unions follow from the per-label pixel counts.
    Label 0 is background in both images.
    """
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    n_gt, n_pred = int(gt.max(initial=0)) + 1, int(pred.max(initial=0)) + 1
    joint = np.bincount(gt.astype(np.int64) * n_pred + pred, minlength=n_gt * n_pred)
    inter = joint.reshape(n_gt, n_pred)[1:, 1:].astype(np.float64)
    area_gt = np.bincount(gt, minlength=n_gt)[1:, None]
    area_pred = np.bincount(pred, minlength=n_pred)[None, 1:]
    union = area_gt + area_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match(iou: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching (Hungarian) of instances with IoU >= ``threshold``.

    Returns the matched ``(gt_index, pred_index)`` arrays.
    """
    if iou.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] >= threshold
    return rows[keep], cols[keep]


def precision(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + FP). With nothing predicted: 1.0 when there was nothing to find either
    (no false claim, nothing missed), else 0.0. The one convention of the project."""
    return tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0)


def recall(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + FN); 1.0 when there was nothing to find (nothing was missed)."""
    return tp / (tp + fn) if tp + fn else 1.0


def f1(tp: int, fp: int, fn: int) -> float:
    """2 TP / (2 TP + FP + FN); 1.0 when there is nothing to find and nothing found."""
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 1.0


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives and false negatives, and the matched IoUs' sum."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum
        )

    @property
    def precision(self) -> float:
        """See :func:`precision` (the conventions for empty counts)."""
        return precision(self.tp, self.fp, self.fn)

    @property
    def recall(self) -> float:
        return recall(self.tp, self.fp, self.fn)

    @property
    def f1(self) -> float:
        """F1 of matched instances; 1.0 when there is nothing to find and nothing found."""
        return f1(self.tp, self.fp, self.fn)


def instance_counts(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> MatchCounts:
    """Match the instances of two label images and count TP, FP and FN.

    Only labels present in an image are instances: label numbers may have gaps
    (instances of a tile cut from a larger image, specks removed from a
    labelling), and a missing number is neither a missed nor a false instance.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    iou = iou_matrix(gt, pred)
    present_gt = np.bincount(gt.ravel(), minlength=iou.shape[0] + 1)[1:] > 0
    present_pred = np.bincount(pred.ravel(), minlength=iou.shape[1] + 1)[1:] > 0
    iou = iou[present_gt][:, present_pred]
    rows, cols = match(iou, threshold)
    n_gt, n_pred = iou.shape
    return MatchCounts(
        len(rows), n_pred - len(cols), n_gt - len(rows), float(iou[rows, cols].sum())
    )


def pixel_iou(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Intersection and union of the foregrounds (any label > 0), as pixel counts."""
    g, p = np.asarray(gt) > 0, np.asarray(pred) > 0
    return int(np.count_nonzero(g & p)), int(np.count_nonzero(g | p))
