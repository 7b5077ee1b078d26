"""Image-level evaluation for unbalanced data: ROC/PR curves, AUCs, confusion matrices, kappa.

Images are labelled anomalous (1) or normal (0); a model gives each a score. With
anomalous images at 10-20% of a dataset, accuracy alone misleads: these functions
give threshold-free summaries (ROC-AUC, average precision) and, at a threshold,
TPR, TNR, PPV, NPV, F1 and Cohen's kappa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: 0/1 labels and scores, as lists or arrays
Labels = Sequence[int] | np.ndarray
Scores = Sequence[float] | np.ndarray


def _check(labels: Labels, scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(
            f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    return y, s


def roc_curve(labels: Labels, scores: Scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score (descending), and the thresholds.

    How it works: sort by score, take cumulative counts of positives and negatives
    at the last index of every run of equal scores (ties move together).
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    p, n = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p], np.r_[np.inf, s[last]]


def roc_auc(labels: Labels, scores: Scores) -> float:
    """Area under the ROC curve (trapezoids; 0.5 for a useless score). NaN without both classes."""
    y, _ = _check(labels, scores)
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(
    labels: Labels, scores: Scores
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score (descending), and the thresholds."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.cumsum(y)[last].astype(float)
    predicted = last + 1.0
    return tp / predicted, tp / max(int(y.sum()), 1), s[last]


def average_precision(labels: Labels, scores: Scores) -> float:
    """Average precision: sum over thresholds of precision x the recall gained there. NaN
    without both classes (with no normal image every precision is 1, whatever the scores)."""
    y, _ = _check(labels, scores)
    if not y.any() or y.all():
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class Confusion:
    """A 2x2 confusion matrix and the rates that matter for unbalanced data."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def at(cls, labels: Labels, scores: Scores, threshold: float) -> Confusion:
        """Images scoring at least ``threshold`` are called anomalous."""
        y, s = _check(labels, scores)
        called = s >= threshold
        return cls(
            int(np.sum(called & (y == 1))),
            int(np.sum(called & (y == 0))),
            int(np.sum(~called & (y == 0))),
            int(np.sum(~called & (y == 1))),
        )

    @staticmethod
    def _ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    @property
    def tpr(self) -> float:
        """Sensitivity, recall."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def tnr(self) -> float:
        """Specificity."""
        return self._ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        """Precision."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return self._ratio(self.tn, self.tn + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def kappa(self) -> float:
        """Cohen's kappa: agreement beyond what the two marginals give by chance."""
        return cohen_kappa([[self.tn, self.fp], [self.fn, self.tp]])


def cohen_kappa(matrix: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Cohen's kappa of a square confusion matrix (rows: truth, columns: prediction).

    ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement (the diagonal)
    and ``p_e`` the agreement expected from the row and column totals.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"need a square matrix, got shape {m.shape}")
    total = m.sum()
    if total == 0:
        return float("nan")
    p_o = np.trace(m) / total
    p_e = float(m.sum(axis=0) @ m.sum(axis=1)) / total**2
    # both gave every item one and the same class: agreement by chance alone, kappa 0 / 0
    return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def class_agreement(
    truth: Sequence[str], predicted: Sequence[str]
) -> tuple[list[str], np.ndarray, float]:
    """Confusion matrix and kappa of the classes of matched regions (multi-class models)."""
    if len(truth) != len(predicted):
        raise ValueError("one predicted class per matched ground-truth region")
    classes = sorted(set(truth) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        m[index[t], index[p]] += 1
    return classes, m, cohen_kappa(m)
