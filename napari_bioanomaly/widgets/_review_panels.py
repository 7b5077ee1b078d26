"""The Review widget's panels: the per-image table with its errors, image-level scores
with their curves, per-class scores, and the layer controls. Each shows what a
:class:`~napari_bioanomaly.core.review.ReviewSession` computed; none holds review state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSlider,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.evaluate import ImageScore, Report, class_agnostic, found_count
from ..core.model import Region
from ..core.review import COLUMNS, cell
from ._common import headers
from ._status_label import StatusLabel

CLASS_COLUMNS = ["class", "GT", "pred", "TP", "FP", "FN", "precision", "recall", "F1", "found"]
#: the Per class table for a class-agnostic model's predictions
FOUND_COLUMNS = ["class", "GT", "found", "share found"]
CLASS_TIP = (
    "each class alone: its ground truth against predictions of that class; "
    "found: share of its ground truth matched by a prediction of any class"
)
FOUND_TIP = (
    "the predictions name none of the ground truth's classes (a class-agnostic model, "
    "such as the unsupervised ones): how many regions of each class they matched"
)
SORT_ROLE = Qt.ItemDataRole.UserRole + 3
#: columns of :data:`COLUMNS` that score against the ground truth (TP to mean IoU)
UNSCORED_COLUMNS = range(COLUMNS.index("TP"), COLUMNS.index("mean IoU") + 1)
#: the label over the errors list: scored, and with nothing annotated yet
ERRORS_LABEL = "False negatives and false positives here (click to zoom):"
PROPOSALS_LABEL = "Predictions here, to accept or reject (click to zoom):"
#: columns shown right after the image and its group, where a dock's width shows them
FIRST_COLUMNS = ["F1", "pixel IoU"]
#: the widest the image column starts (long paths lose their start, not the name)
IMAGE_WIDTH = 150


def labelled_slider(value: int, text: str) -> tuple[QSlider, QLabel]:
    """A 0-100 slider read as 0.00-1.00, and a label that shows its value."""
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(value)
    label = QLabel(f"{text} {value / 100:.2f}")
    slider.valueChanged.connect(lambda v: label.setText(f"{text} {v / 100:.2f}"))
    return slider, label


def slider_row(slider: QSlider, label: QLabel) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(label)
    row.addWidget(slider, 1)
    return row


def _text(value: Any) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


class ScoreTableModel(QAbstractTableModel):
    """Per-image scores as table rows (values: :func:`core.review.cell`)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ImageScore] = []
        self.group_name = "group"
        #: image -> its stored quality flags ("ok", "dim; out of focus", "" = not checked)
        self.qc: dict[str, str] = {}
        #: False while nothing is annotated: the scores' cells (TP to mean IoU) say "-"
        self.scored = True

    def set_rows(self, rows: list[ImageScore], qc: dict[str, str] | None = None) -> None:
        self.beginResetModel()
        self.rows = rows
        self.qc = qc if qc is not None else self.qc
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.group_name if section == 1 else COLUMNS[section]
        return None

    def value(self, row: ImageScore, col: int) -> Any:
        return cell(row, col, self.qc)

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        v = self.value(self.rows[index.row()], index.column())
        if role == SORT_ROLE:
            return -1.0 if v is None else v  # not defined sorts below every value
        if role == Qt.ItemDataRole.DisplayRole:
            if v is None or (not self.scored and index.column() in UNSCORED_COLUMNS):
                return "-"
            if isinstance(v, float):
                return f"{v:.3f}"
            return v
        return None


class ImageTablePanel(QWidget):
    """The per-image table (sortable, filterable) and the current image's false
    negatives and false positives (click one to zoom to it)."""

    #: the file name of a clicked row
    image_clicked = Signal(str)
    #: the (row0, col0, row1, col1) box of a clicked error
    error_clicked = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("filter rows: image, group or QC flag")
        col.addWidget(self.filter_edit)
        self.model = ScoreTableModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        horizontal, vertical = headers(self.table)
        horizontal.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        vertical.setVisible(False)
        # what tells an image's quality beside its name, before the counts behind it
        # (the model's and the exported CSV's order stay :data:`COLUMNS`)
        for k, name in enumerate(FIRST_COLUMNS):
            horizontal.moveSection(horizontal.visualIndex(COLUMNS.index(name)), 2 + k)
        horizontal.setResizeContentsPrecision(200)  # sized on the first 200 rows: cheap
        self._sized_for: tuple[int, str] | None = None
        # image paths share their start (``images/...``): cut the start, keep the name
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.table.setWordWrap(False)  # Qt ignores the elide mode of wrapped text
        self.table.setMinimumHeight(200)
        self.table.clicked.connect(self._on_row_clicked)
        col.addWidget(self.table)
        self.errors = QListWidget()
        self.errors.setMinimumHeight(70)
        self.errors.setMaximumHeight(110)
        self.errors.itemClicked.connect(
            lambda item: self.error_clicked.emit(item.data(Qt.ItemDataRole.UserRole))
        )
        label = self.errors_label = QLabel(ERRORS_LABEL)
        label.setWordWrap(True)
        col.addWidget(label)
        col.addWidget(self.errors)

    def show_rows(
        self, rows: list[ImageScore], qc: dict[str, str], group: str | None, scored: bool = True
    ) -> None:
        """The rows; ``scored`` False (nothing annotated): their scores are not shown."""
        self.model.group_name = group or "group"
        self.model.scored = scored
        self.model.set_rows(rows, qc)
        # columns as wide as their contents, once per set of rows (not at every slider
        # step, where they would jump)
        if self._sized_for != (len(rows), self.model.group_name):
            self._sized_for = (len(rows), self.model.group_name)
            self.table.resizeColumnsToContents()
            self.table.setColumnWidth(0, min(self.table.columnWidth(0), IMAGE_WIDTH))

    def select(self, filename: str) -> None:
        names = [r.image for r in self.model.rows]
        if filename in names:
            index = self.proxy.mapFromSource(self.model.index(names.index(filename), 0))
            if index.isValid():
                self.table.selectRow(index.row())

    def show_errors(
        self, false_negatives: list[Region], false_positives: list[Region], scored: bool = True
    ) -> None:
        """The image's misses and false alarms; ``scored`` False (nothing annotated yet):
        its predictions, listed as proposals."""
        self.errors.clear()
        self.errors_label.setText(ERRORS_LABEL if scored else PROPOSALS_LABEL)
        pred = "FP" if scored else "proposal"
        for kind, regions in (("FN", false_negatives), (pred, false_positives)):
            for r in regions:
                score = "" if r.score is None else f", score {r.score:.2f}"
                item = QListWidgetItem(f"{kind}: {r.label}, {r.area:.0f} px{score}")
                item.setData(Qt.ItemDataRole.UserRole, r.bbox)
                self.errors.addItem(item)

    def _on_row_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.image_clicked.emit(self.model.rows[self.proxy.mapToSource(index).row()].image)


class ImageLevelPanel(QWidget):
    """Image-level scores at the image threshold, with ROC and precision-recall curves."""

    def __init__(self) -> None:
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.slider, label = labelled_slider(50, "image threshold")
        col.addLayout(slider_row(self.slider, label))
        self.text = StatusLabel(
            "An image is anomalous when it has ground truth; its score is the model's image "
            "anomaly score, or its best region score."
        )
        col.addWidget(self.text)
        self.curves = QLabel()
        self.curves.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.curves.setMinimumHeight(160)
        # the pixmap follows the dock's width, never the other way round
        self.curves.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.curves, 1)

    @property
    def threshold(self) -> float:
        return self.slider.value() / 100

    def show_report(self, report: Report, width: int) -> None:
        """The report's image-level scores; curves ``width`` pixels wide (matplotlib, Agg)."""
        from ..plots import curves_image

        im = report.image_level
        self.text.setText(
            f"{im['anomalous']} of {im['images']} images anomalous: ROC-AUC "
            f"{_text(im['roc_auc'])}, AP {_text(im['average_precision'])}. At "
            f"{self.threshold:.2f}: TP {im['tp']} FP {im['fp']} TN {im['tn']} FN {im['fn']}; "
            f"TPR {_text(im['tpr'])}, TNR {_text(im['tnr'])}, PPV {_text(im['ppv'])}, NPV "
            f"{_text(im['npv'])}, F1 {_text(im['f1'])}, kappa {_text(im['kappa'])}"
        )
        rows = report.rows
        rgba = curves_image(
            [1 if r.n_gt else 0 for r in rows], [r.score for r in rows], self.threshold,
            size=(width / 80, max(width * 0.48, 150) / 80), dpi=80,
        )  # fmt: skip
        h, w = rgba.shape[:2]
        pixels = rgba.tobytes()  # alive until the copy: QImage only points at it
        image = QImage(pixels, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.curves.setPixmap(QPixmap.fromImage(image))
        self.curves.setMinimumHeight(h)  # whole: titles and the tops of the axes too


class ClassPanel(QWidget):
    """Per-class scores and the agreement of the classes of matched regions."""

    def __init__(self) -> None:
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(CLASS_COLUMNS))
        self.table.setHorizontalHeaderLabels(CLASS_COLUMNS)
        headers(self.table)[1].setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip(CLASS_TIP)
        col.addWidget(self.table, 1)
        self.agreement = StatusLabel()
        col.addWidget(self.agreement)

    def show_report(self, report: Report) -> None:
        agnostic = class_agnostic(report.classes)
        if agnostic:  # class-wise matches would all be zero: what each class had found
            rows = [[name, c["gt"], found_count(c), c["found"]]
                    for name, c in report.classes.items() if c["gt"]]  # fmt: skip
        else:
            rows = [[name, c["gt"], c["pred"], c["tp"], c["fp"], c["fn"], c["precision"],
                     c["recall"], c["f1"], c["found"]]
                    for name, c in report.classes.items()]  # fmt: skip
        columns = FOUND_COLUMNS if agnostic else CLASS_COLUMNS
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setToolTip(FOUND_TIP if agnostic else CLASS_TIP)
        self.table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for col, v in enumerate(values):
                self.table.setItem(r, col, QTableWidgetItem(_text(v)))
        self.table.resizeColumnsToContents()
        agree = report.class_agreement
        if agnostic:
            self.agreement.setText(
                "The predictions name none of the ground truth's classes (a class-agnostic "
                "model): the table counts the regions of each class they found."
            )
        elif agree["kappa"] is None:
            self.agreement.setText("Class agreement needs predictions of two or more classes.")
        else:
            self.agreement.setText(
                f"Classes of {agree['matched']} matched regions: agreement "
                f"{agree['agreement']:.3f}, Cohen's kappa {agree['kappa']:.3f}"
            )


PROPOSE_TIP = (
    "replace this image's predictions by the outlines of the map above the "
    "threshold; accept the good ones into the annotations"
)


class LayerControls(QWidget):
    """What the layers show: ground truth, predictions, fill and opacity; the anomaly map
    and the threshold at which its regions are proposed. The Review widget connects them."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.show_gt = QCheckBox("ground truth")
        self.show_pred = QCheckBox("predictions")
        self.fill = QCheckBox("fill")
        for box in (self.show_gt, self.show_pred):
            box.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(10, 100)
        self.opacity.setValue(100)
        for box in (self.show_gt, self.show_pred, self.fill):
            row.addWidget(box)
        row.addWidget(QLabel("opacity"))
        row.addWidget(self.opacity, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.show_heat = QCheckBox("anomaly map")
        self.show_heat.setChecked(True)
        self.show_heat.setToolTip(
            "the model's per-pixel anomaly map of this image (written by Predict & review, or "
            "by predict --heatmaps into PREDICTIONS.heatmaps)"
        )
        self.heat_slider, label = labelled_slider(50, "propose at")
        self.peak_box = QDoubleSpinBox()
        self.peak_box.setRange(0.0, 0.99)
        self.peak_box.setSingleStep(0.05)
        self.peak_box.setSpecialValueText("any")  # 0: every region above the threshold
        self.peak_box.setToolTip(
            "propose only regions whose map exceeds this somewhere (hysteresis: a faint "
            "region with a confident core is kept whole, faint specks go); the model's "
            "operating point sets it where validation chose one; ignored below the threshold"
        )
        self.propose_button = QPushButton("Propose regions")
        self.propose_button.setToolTip(PROPOSE_TIP)
        row.addWidget(self.show_heat)
        row.addWidget(label)
        row.addWidget(self.heat_slider, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("min peak"))
        row.addWidget(self.peak_box)
        row.addStretch(1)
        row.addWidget(self.propose_button)
        layout.addLayout(row)


class ReviewTabs(QTabWidget):
    """Per image, image level and per class. The per-image table is filled by the widget
    at once; the other two tabs ask ``report()`` (scores at the current thresholds) only
    when visible, and only once the sliders rest: their curves (matplotlib, ~0.1 s) and
    per-class matching would otherwise follow every slider step."""

    def __init__(self, report: Callable[[], Report | None]) -> None:
        super().__init__()
        self._report = report
        self.table_panel = ImageTablePanel()
        self.image_panel = ImageLevelPanel()
        self.class_panel = ClassPanel()
        self.addTab(self.table_panel, "Per image")
        self.addTab(self.image_panel, "Image level")
        self.addTab(self.class_panel, "Per class")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.refresh_visible)
        self.currentChanged.connect(lambda _i: self.refresh_visible())
        self.image_panel.slider.valueChanged.connect(lambda _v: self.changed())

    def changed(self) -> None:
        """Scores changed: refresh the visible tab once things rest."""
        self._timer.start()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self.currentIndex() == 1:
            self._timer.start()  # redraw the curves at the new width

    def refresh_visible(self) -> None:
        if self.currentIndex() == 1:
            self.refresh_image_level()
        elif self.currentIndex() == 2:
            self.fill_classes()

    def fill_classes(self) -> None:
        report = self._report()
        if report is not None:
            self.class_panel.show_report(report)

    def refresh_image_level(self) -> None:
        report = self._report()
        if report is not None:
            curves = self.image_panel.curves
            width = max(min(curves.width(), self.width() - 12), 320)  # fits the dock
            self.image_panel.show_report(report, width)
