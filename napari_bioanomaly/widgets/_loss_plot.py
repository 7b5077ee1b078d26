"""The Train widget's plot of training loss, validation loss and validation score."""

from __future__ import annotations

from typing import Any, ClassVar

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QWidget,
)

from ..ml.events import SCORE_LABELS, VAL_F1


class LossPlot(QWidget):
    """Training loss (per step), validation loss and the validation score the best model
    is chosen by (per epoch, named as the run names it: the mean of instance and pixel F1,
    pixel F1 for thin structures, image ROC-AUC for the unsupervised models), drawn with
    QPainter.

    Redraws at most five times a second, however fast events come.
    """

    COLORS: ClassVar[dict[str, str]] = {
        "loss": "#56b4e9",
        "val_loss": "#e69f00",
        "val_f1": "#009e73",
    }

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(170)
        self.loss: list[tuple[float, float]] = []  # (epoch position, value)
        self.val_loss: list[tuple[float, float]] = []
        self.val_f1: list[tuple[float, float]] = []
        self.score_label = "validation score (right)"
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.update)

    def clear(self) -> None:
        self.loss, self.val_loss, self.val_f1 = [], [], []
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
        if not self._timer.isActive():
            self._timer.start()

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(34, 8, -34, -22)
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
        x = rect.left() + 30
        for name, label in (("loss", "loss"), ("val_loss", "val loss")):
            p.setPen(QColor(self.COLORS[name]))
            p.drawText(QPointF(x, rect.top() + 14), label)
            x += 12 + 7 * len(label)
        # the score's name is long (as the run's result names it): a line of its own
        p.setPen(QColor(self.COLORS["val_f1"]))
        p.drawText(QPointF(rect.left() + 30, rect.top() + 28), self.score_label)

    @staticmethod
    def _smooth(values: list[tuple[float, float]], n: int = 10) -> list[tuple[float, float]]:
        if len(values) < n:
            return values
        out, acc = [], 0.0
        for i, (x, v) in enumerate(values):
            acc = v if i == 0 else 0.8 * acc + 0.2 * v
            out.append((x, acc))
        return out
