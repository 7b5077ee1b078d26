"""The Train widget's plot of training loss, validation loss and validation score."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QFontMetricsF, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QWidget,
)

from ..ml.events import SCORE_LABELS, VAL_F1, VAL_PIXEL_F1

#: The scores' names in the legend, short enough to share its line with the losses.
SHORT_LABELS = {
    VAL_F1: "val F1 (instance+pixel)/2",
    VAL_PIXEL_F1: "val pixel F1",
    SCORE_LABELS["memory"]: "val image ROC-AUC",
}


class LossPlot(QWidget):
    """Training loss (per step), validation loss and the validation score the best model
    is chosen by (per epoch, named as the run names it: the mean of instance and pixel F1,
    pixel F1 for thin structures, image ROC-AUC for the unsupervised models), drawn with
    QPainter.

    Redraws at most five times a second, however fast events come. The legend is drawn
    below the axes, never over a curve; the score's full name is in the tooltip.
    """

    COLORS: ClassVar[dict[str, str]] = {
        "loss": "#56b4e9",
        "val_loss": "#e69f00",
        "val_f1": "#009e73",
    }

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(190)
        self.loss: list[tuple[float, float]] = []  # (epoch position, value)
        self.val_loss: list[tuple[float, float]] = []
        self.val_f1: list[tuple[float, float]] = []
        self.score_label = "validation score (right)"  # until a run names its score
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.update)
        self._set_tooltip()

    @property
    def score_name(self) -> str:
        """The score's name as the run names it (without the axis)."""
        return self.score_label.removesuffix(" (right)")

    def _set_tooltip(self) -> None:
        self.setToolTip(
            "loss: training loss (smoothed), left axis\nval loss: validation loss, left axis\n"
            f"{SHORT_LABELS.get(self.score_name, self.score_name)}: {self.score_name}, "
            "right axis (0 to 1)"
        )

    def legend(self) -> list[tuple[str, str]]:
        """The legend's entries: (series, text)."""
        score = SHORT_LABELS.get(self.score_name, self.score_name)
        return [("loss", "loss"), ("val_loss", "val loss"), ("val_f1", f"{score} (right axis)")]

    def layout_rects(self) -> tuple[QRectF, list[tuple[str, str, QRectF]]]:
        """Where the axes go and, below them and the axis labels, each legend entry
        (series, text as drawn, rectangle of its swatch and text): entries flow onto as
        many lines as the width needs; one wider than the plot is elided."""
        metrics = QFontMetricsF(self.font())
        line = metrics.height() + 2
        swatch, gap, left = 16.0, 14.0, 34.0
        width = max(self.width() - 2 * left, 40.0)
        entries: list[tuple[str, str, QRectF]] = []
        x, row = 0.0, 0
        for name, text in self.legend():
            text = metrics.elidedText(text, Qt.TextElideMode.ElideRight, width - swatch - 4)
            w = swatch + 4 + metrics.horizontalAdvance(text)
            if x > 0 and x + w > width:
                x, row = 0.0, row + 1
            entries.append((name, text, QRectF(left + x, row * line, w, line)))
            x += w + gap
        legend_h = (row + 1) * line
        axes = QRectF(self.rect()).adjusted(left, 8, -left, -(22 + legend_h + 4))
        top = axes.bottom() + 22 + 4
        entries = [(n, t, r.translated(0, top)) for n, t, r in entries]
        return axes, entries

    def clear(self) -> None:
        """A new run: nothing drawn, and its score named as no run has named it yet (the
        run before's "val pixel F1" stayed until the first epoch)."""
        self.loss, self.val_loss, self.val_f1 = [], [], []
        self.score_label = "validation score (right)"
        self._set_tooltip()
        self.update()

    def add_history(self, records: Any, score_label: Any = None) -> None:
        """Draw the epochs of a run before it was resumed (its checkpoint's ``history``:
        per epoch its mean loss, validation loss and score, named ``score_label``: its
        ``best_label``); what is not a finite number is left out."""
        if isinstance(score_label, str) and 0 < len(score_label) <= 200:
            self.score_label = f"{score_label} (right)"
            self._set_tooltip()

        def number(record: Any, key: str) -> float | None:
            value = record.get(key) if isinstance(record, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            return float(value) if math.isfinite(value) else None

        for record in records if isinstance(records, list) else []:
            epoch = number(record, "epoch")
            if epoch is None:
                continue
            for key, series in (("loss", self.loss), ("val_loss", self.val_loss),
                                ("val_score", self.val_f1)):  # fmt: skip
                value = number(record, key)
                if value is not None:
                    series.append((epoch + 1, value))
        self.update()

    def add(self, event: Any) -> None:
        x = event.epoch + event.step / max(event.steps, 1)
        if event.kind == "step" and event.loss is not None:
            self.loss.append((x, event.loss))
        elif event.kind == "epoch":
            if event.val_loss is not None:
                self.val_loss.append((event.epoch + 1, event.val_loss))
            if event.val_score is not None:
                self.val_f1.append((event.epoch + 1, event.val_score))
                self.score_label = f"{event.score_label or VAL_F1} (right)"
            elif event.val_auc is not None:
                self.val_f1.append((event.epoch + 1, event.val_auc))
                self.score_label = f"{SCORE_LABELS['memory']} (right)"
            self._set_tooltip()
        if not self._timer.isActive():
            self._timer.start()

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect, legend = self.layout_rects()
        p.setPen(QColor("#888888"))
        p.drawRect(rect)
        points = self.loss + self.val_loss + self.val_f1
        if not points:
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss and validation score appear here")
            return
        x_max = max(x for x, _ in points) or 1.0
        losses = [v for _, v in self.loss + self.val_loss]
        y_max = max(losses) * 1.05 if losses else 1.0

        def series(values: list[tuple[float, float]], top: float, color: str) -> None:
            if not values:
                return
            poly = QPolygonF(
                [
                    QPointF(
                        rect.left() + rect.width() * x / x_max,
                        rect.bottom() - rect.height() * min(v / top, 1.0),
                    )
                    for x, v in values
                ]
            )
            p.setPen(QPen(QColor(color), 2))
            p.drawPolyline(poly)
            for pt in poly if len(values) < 50 else []:
                p.drawEllipse(pt, 2, 2)

        series(self._smooth(self.loss), y_max, self.COLORS["loss"])
        series(self.val_loss, y_max, self.COLORS["val_loss"])
        series(self.val_f1, 1.0, self.COLORS["val_f1"])
        p.setPen(QColor("#aaaaaa"))
        p.drawText(QPointF(2, rect.top() + 10), f"{y_max:.2g}")
        p.drawText(QPointF(rect.right() + 4, rect.top() + 10), "1.0")
        p.drawText(QPointF(rect.left(), rect.bottom() + 16), "0")
        p.drawText(QPointF(rect.right() - 40, rect.bottom() + 16), f"epoch {x_max:.0f}")
        for name, text, box in legend:  # below the axes: it hides no curve
            p.setPen(QPen(QColor(self.COLORS[name]), 2))
            mid = box.center().y()
            p.drawLine(QPointF(box.left(), mid), QPointF(box.left() + 16, mid))
            align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
            p.drawText(box.adjusted(20, 0, 0, 0), align, text)

    @staticmethod
    def _smooth(values: list[tuple[float, float]], n: int = 10) -> list[tuple[float, float]]:
        if len(values) < n:
            return values
        out, acc = [], 0.0
        for i, (x, v) in enumerate(values):
            acc = v if i == 0 else 0.8 * acc + 0.2 * v
            out.append((x, acc))
        return out
