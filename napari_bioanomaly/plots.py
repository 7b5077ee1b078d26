"""ROC and precision-recall curves of image scores, drawn with matplotlib's Agg backend.

No pyplot and no GUI backend: a :class:`~matplotlib.figure.Figure` is drawn into
an array, so the same picture serves the CLI (a PNG file) and the Review widget
(a Qt image), from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .core.imagemetrics import (
    Confusion,
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

_BLUE, _ORANGE, _GREY = "#0072b2", "#d55e00", "#999999"


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


def curves_image(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float = 0.5,
    title: str = "",
    size: tuple[float, float] = (8.0, 3.8),
    dpi: int = 100,
) -> np.ndarray:
    """An RGBA image ``(rows, cols, 4)`` of the ROC (left) and precision-recall (right)
    curves of image scores, with the operating point at ``threshold`` marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    roc_ax, pr_ax = fig.subplots(1, 2)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    both = n_pos > 0 and n_neg > 0
    point = Confusion.at(y, s, threshold) if len(y) else None
    if both:
        fpr, tpr, _ = roc_curve(y, s)
        roc_ax.plot(fpr, tpr, color=_BLUE, lw=2, drawstyle="steps-post")
        precision, recall, _ = precision_recall_curve(y, s)
        pr_ax.plot(recall, precision, color=_BLUE, lw=2, drawstyle="steps-post")
        if point is not None:
            roc_ax.plot(1 - point.tnr, point.tpr, "o", color=_ORANGE, label=f"at {threshold:g}")
            if point.tp + point.fp:
                pr_ax.plot(point.tpr, point.ppv, "o", color=_ORANGE, label=f"at {threshold:g}")
            roc_ax.legend(loc="lower right", fontsize=8)
    else:
        for ax in (roc_ax, pr_ax):
            ax.text(0.5, 0.5, "needs normal and\nanomalous images", ha="center", va="center",
                    color=_GREY)  # fmt: skip
    roc_ax.plot([0, 1], [0, 1], ls="--", color=_GREY, lw=1)
    if both:
        pr_ax.axhline(n_pos / len(y), ls="--", color=_GREY, lw=1)
    auc = roc_auc(y, s) if both else float("nan")
    ap = average_precision(y, s) if both else float("nan")
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (1 - TNR)",
               ylabel="true positive rate", title=f"ROC  (AUC {_fmt(auc)})")  # fmt: skip
    pr_ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (TPR)", ylabel="precision (PPV)",
              title=f"precision-recall  (AP {_fmt(ap)})")  # fmt: skip
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(10)
    if title:
        fig.suptitle(title, fontsize=10)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def save_curves(
    path: str | Path,
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float = 0.5,
    title: str = "",
) -> Path:
    """Write :func:`curves_image` as a PNG, atomically."""
    import io

    import imageio.v3 as iio

    from .core.fileio import atomic_write

    buf = io.BytesIO()
    iio.imwrite(buf, curves_image(labels, scores, threshold, title), extension=".png")
    return atomic_write(path, buf.getvalue())
