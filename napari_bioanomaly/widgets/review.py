"""The Review dock widget: predictions (red) over ground truth (green), a live table, corrections.

Ground truth is edited through an :class:`~napari_bioanomaly._annotator.Annotator`
(autosaved like annotations); predictions are a second Shapes layer. Accepting a
prediction moves it to the ground truth (source ``model-accepted``); rejecting
removes it; both are saved to the predictions file at once. Scores are computed
once per image (:class:`~napari_bioanomaly.core.evaluate.ImageCache`) so the
IoU and score sliders update the table live.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
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

from .._annotator import Annotator
from .._layers import TAG, from_napari, to_napari
from .._workspace import release_annotator, shared_annotator, workspace_for
from ..core import annotations
from ..core.evaluate import (
    ImageCache,
    ImageScore,
    class_agreement_summary,
    image_level,
    per_class,
    summarise,
)
from ..core.fileio import atomic_write
from ..core.model import BioAnomalyError, Dataset, ImageRecord, Region
from ..core.quality import QC_ATTRIBUTE
from ..ml.events import PredictEvent, TrainEvent
from ._common import EXPORTS, ask_conflict, button_row, with_browse
from ._jobs import epoch_text, leave_a_core_to_the_gui, prime_torch, training_job

GT_COLOR = "#00c000"
PRED_COLOR = "#ff2020"
COLUMNS = ["image", "group", "GT", "pred", "TP", "FP", "FN", "precision", "recall", "F1",
           "pixel IoU", "mean IoU", "score", "QC"]  # fmt: skip
CLASS_COLUMNS = ["class", "GT", "pred", "TP", "FP", "FN", "precision", "recall", "F1", "found"]
SORT_ROLE = Qt.ItemDataRole.UserRole + 3


class ScoreTableModel(QAbstractTableModel):
    """Per-image scores as table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ImageScore] = []
        self.group_name = "group"
        #: image -> its stored quality flags ("ok", "dim; out of focus", "" = not checked)
        self.qc: dict[str, str] = {}

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
        if col == len(COLUMNS) - 1:
            return self.qc.get(row.image, "")
        return [
            row.image,
            ", ".join(row.group.values()),
            row.n_gt,
            row.n_pred,
            row.tp,
            row.fp,
            row.fn,
            row.precision,
            row.recall,
            row.f1,
            row.pixel_iou,
            row.mean_iou if row.mean_iou is not None else -1.0,
            row.score,
        ][col]

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        v = self.value(self.rows[index.row()], index.column())
        if role == SORT_ROLE:
            return v
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(v, float):
                return "-" if v < 0 else f"{v:.3f}"
            return v
        return None


class ReviewWidget(QWidget):
    """Compare predictions with ground truth image by image, and correct them."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        self.annotator: Annotator | None = None
        self._pred_pending = False  # accepted predictions still in the predictions file
        self.predictions: Dataset | None = None
        self.pred_path: Path | None = None
        self.caches: dict[str, ImageCache] = {}
        self.names: list[str] = []  # the images under review, in dataset order
        self.group_by: str | None = None
        self.pred_layer: Any = None
        self.heat_layer: Any = None
        self.heat_dir: Path | None = None
        self._heat_cache: dict[str, np.ndarray] = {}
        self._pred_index: list[int] = []
        #: TrainConfig settings of "Train & review" (defaults: TrainConfig's)
        self.train_settings: dict[str, Any] = {}
        self.worker: Any = None
        self._build()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.gt_edit = QLineEdit()
        self.gt_edit.setPlaceholderText("ground-truth annotation file")
        self.pred_edit = QLineEdit()
        self.pred_edit.setPlaceholderText("predictions (VIA file from predict)")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("trained model (.pt), to predict from napari")
        form.addRow("ground truth", self._with_browse(self.gt_edit))
        form.addRow("predictions", self._with_browse(self.pred_edit))
        form.addRow("model", self._with_browse(self.model_edit, "Model (*.pt)"))
        layout.addLayout(form)
        row = QHBoxLayout()
        open_button = QPushButton("Open for review")
        open_button.clicked.connect(lambda: self.open(self.gt_edit.text(), self.pred_edit.text()))
        self.train_button = QPushButton("Train && review")
        self.train_button.setToolTip(
            "train on the training split of the ground truth, predict the validation images, "
            "and review them"
        )
        self.train_button.clicked.connect(self.train_and_review)
        self.predict_button = QPushButton("Predict && review")
        self.predict_button.setToolTip(
            "predict every ground-truth image with the model, then review"
        )
        self.predict_button.clicked.connect(self.predict_and_review)
        row.addWidget(open_button)
        row.addWidget(self.predict_button)
        row.addWidget(self.train_button)
        layout.addLayout(row)
        self.iou_slider, self.iou_label = self._slider(50, "IoU threshold")
        self.score_slider, self.score_label = self._slider(50, "score threshold")
        for slider, label in (
            (self.iou_slider, self.iou_label),
            (self.score_slider, self.score_label),
        ):
            row = QHBoxLayout()
            row.addWidget(label)
            row.addWidget(slider, 1)
            layout.addLayout(row)
        toggles = QHBoxLayout()
        self.show_gt = QCheckBox("ground truth")
        self.show_pred = QCheckBox("predictions")
        self.fill = QCheckBox("fill")
        for box in (self.show_gt, self.show_pred):
            box.setChecked(True)
        self.show_gt.toggled.connect(
            lambda on: self._set_visible(self.annotator and self.annotator.shapes_layer, on)
        )
        self.show_pred.toggled.connect(lambda on: self._set_visible(self.pred_layer, on))
        self.fill.toggled.connect(self._restyle)
        for box in (self.show_gt, self.show_pred, self.fill):
            toggles.addWidget(box)
        layout.addLayout(toggles)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(10, 100)
        self.opacity.setValue(100)
        self.opacity.valueChanged.connect(self._restyle)
        row = QHBoxLayout()
        row.addWidget(QLabel("opacity"))
        row.addWidget(self.opacity, 1)
        layout.addLayout(row)
        heat = QHBoxLayout()
        self.show_heat = QCheckBox("anomaly map")
        self.show_heat.setChecked(True)
        self.show_heat.setToolTip(
            "the model's per-pixel anomaly map of this image (written by Predict & review, or "
            "by predict --heatmaps into PREDICTIONS.heatmaps)"
        )
        self.show_heat.toggled.connect(lambda _on: self._show_heatmap())
        self.heat_slider, self.heat_label = self._slider(50, "propose at", rescore=False)
        #: regions smaller than this are not proposed (the model's operating point's)
        self.proposal_min_area = 16.0
        self.propose_button = QPushButton("Propose regions")
        self.propose_button.setToolTip(
            "replace this image's predictions by the outlines of the map above the threshold; "
            "accept the good ones into the annotations"
        )
        self.propose_button.clicked.connect(self.propose)
        heat.addWidget(self.show_heat)
        heat.addWidget(self.heat_label)
        heat.addWidget(self.heat_slider, 1)
        heat.addWidget(self.propose_button)
        layout.addLayout(heat)
        self.summary = QLabel("Open ground truth and predictions to review.")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.tabs = QTabWidget()
        per_image = QWidget()
        image_tab = QVBoxLayout(per_image)
        image_tab.setContentsMargins(0, 0, 0, 0)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("filter rows: image, group or QC flag")
        image_tab.addWidget(self.filter_edit)
        self.model = ScoreTableModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        # image paths share their start (``images/...``): cut the start, keep the name
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.table.setWordWrap(False)  # Qt ignores the elide mode of wrapped text
        self.table.setMinimumHeight(200)
        self.table.clicked.connect(self._on_row_clicked)
        image_tab.addWidget(self.table)
        self.errors = QListWidget()
        self.errors.setMaximumHeight(110)
        self.errors.itemClicked.connect(self._zoom_to)
        errors_label = QLabel("False negatives and false positives here (click to zoom):")
        errors_label.setWordWrap(True)
        image_tab.addWidget(errors_label)
        image_tab.addWidget(self.errors)
        self.tabs.addTab(per_image, "Per image")
        self.tabs.addTab(self._build_image_level(), "Image level")
        self.tabs.addTab(self._build_classes(), "Per class")
        self.tabs.currentChanged.connect(lambda _i: self._refresh_tab())
        layout.addWidget(self.tabs)
        layout.addLayout(
            button_row(
                [
                    ("Accept selected", self.accept_selected),
                    ("Reject selected", self.reject_selected),
                    ("Accept all", self.accept_all),
                ]
            )
        )
        more = QHBoxLayout()
        reviewed = QPushButton("Mark reviewed")
        reviewed.clicked.connect(self.mark_reviewed)
        export = QPushButton("Export table...")
        export.clicked.connect(self._ask_export_table)
        corrected = QPushButton("Export corrected...")
        corrected.setToolTip("the corrected ground truth as VIA, COCO or label masks")
        corrected.clicked.connect(self._ask_export_corrected)
        more.addWidget(reviewed)
        more.addWidget(export)
        more.addWidget(corrected)
        layout.addLayout(more)

    def _build_image_level(self) -> QWidget:
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        self.image_slider, self.image_label = self._slider(50, "image threshold", rescore=False)
        self.image_slider.valueChanged.connect(lambda _v: self._curves_timer.start())
        row = QHBoxLayout()
        row.addWidget(self.image_label)
        row.addWidget(self.image_slider, 1)
        col.addLayout(row)
        self.image_text = QLabel(
            "An image is anomalous when it has ground truth; its score is the model's image "
            "anomaly score, or its best region score."
        )
        self.image_text.setWordWrap(True)
        col.addWidget(self.image_text)
        self.curves = QLabel()
        self.curves.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.curves.setMinimumHeight(160)
        # the pixmap follows the dock's width, never the other way round
        self.curves.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.curves, 1)
        # the curves (matplotlib, ~0.1 s) and class scores are redrawn once the sliders rest,
        # and only for the visible tab
        self._curves_timer = QTimer(self)
        self._curves_timer.setSingleShot(True)
        self._curves_timer.setInterval(250)
        self._curves_timer.timeout.connect(self._refresh_tab)
        return box

    def _build_classes(self) -> QWidget:
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        self.class_table = QTableWidget(0, len(CLASS_COLUMNS))
        self.class_table.setHorizontalHeaderLabels(CLASS_COLUMNS)
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setToolTip(
            "each class alone: its ground truth against predictions of that class; "
            "found: share of its ground truth matched by a prediction of any class"
        )
        col.addWidget(self.class_table, 1)
        self.agreement_text = QLabel()
        self.agreement_text.setWordWrap(True)
        col.addWidget(self.agreement_text)
        return box

    def _with_browse(self, edit: QLineEdit, pattern: str = "JSON (*.json)") -> QHBoxLayout:
        def browse() -> None:
            path, _ = QFileDialog.getOpenFileName(self, "Open", "", pattern)
            if path:
                edit.setText(path)

        return with_browse(edit, browse)

    def _slider(self, value: int, text: str, rescore: bool = True) -> tuple[QSlider, QLabel]:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(value)
        label = QLabel()
        slider.valueChanged.connect(lambda v: label.setText(f"{text} {v / 100:.2f}"))
        if rescore:
            slider.valueChanged.connect(lambda _v: self.refresh())
        label.setText(f"{text} {value / 100:.2f}")
        return slider, label

    @property
    def image_threshold(self) -> float:
        return self.image_slider.value() / 100

    @property
    def iou_threshold(self) -> float:
        return self.iou_slider.value() / 100

    @property
    def score_threshold(self) -> float:
        return self.score_slider.value() / 100

    # ------------------------------------------------------------------ opening

    def open(
        self, gt_path: str | Path, pred_path: str | Path, images: list[str] | None = None
    ) -> bool:
        """Open ground truth (editable, autosaved) and predictions for review.

        ``images``: review only these file names (e.g. the validation images);
        default: every image of the ground truth.
        """
        try:
            session = self.workspace.session(gt_path)
            predictions, _ = annotations.load(pred_path, session.dataset.root, read_images=False)
        except (BioAnomalyError, OSError) as exc:
            self.summary.setText(f"Cannot open: {exc}")
            return False
        same = self.annotator is not None and self.annotator.session is session
        if not same:
            self._release()
        self._pred_pending = False  # accepted regions left in the old file stay there
        self.predictions, self.pred_path = predictions, Path(pred_path)
        self.heat_dir = self.pred_path.with_suffix(annotations.HEATMAPS_SUFFIX)
        self._heat_cache: dict[str, np.ndarray] = {}
        keys = [k for im in session.dataset.images for k in im.file_attributes if k != QC_ATTRIBUTE]
        self.group_by = keys[0] if keys else None
        self.model.group_name = self.group_by or "group"
        if not same:  # reopening the same ground truth (after training) keeps its layers
            # the Annotate widget's annotator when it has this file open: one copy of edits
            annotator = self.annotator = shared_annotator(
                self.viewer, session, self,
                {"image_changed": self._on_image_changed, "saved": self._on_gt_saved,
                 "regions_changed": self._on_gt_changed, "message": self._on_message},
                color=GT_COLOR, name="ground truth (review)",
            )  # fmt: skip
            annotator.on_conflict = lambda exc: ask_conflict(self, exc, annotator)
        self._ensure_pred_layer()
        wanted = set(images) if images is not None else None
        self.names = [
            im.filename for im in session.dataset.images if wanted is None or im.filename in wanted
        ]
        self.caches = {}
        for im in session.dataset.images:
            if im.filename in set(self.names):
                self._recache(im)
        self.refresh()
        self._on_image_changed(session.current)
        return True

    def _pred_image(self, filename: str) -> ImageRecord:
        assert self.predictions is not None
        for im in self.predictions.images:
            if im.filename == filename:
                return im
        record = ImageRecord(filename)
        self.predictions.images.append(record)
        return record

    def _recache(self, gt: ImageRecord) -> None:
        if gt.shape is None:  # sizes are read lazily by the session; scoring needs them
            try:
                self.annotator.session.read_shape(self.annotator.session.dataset.images.index(gt))
            except BioAnomalyError:
                pass
        keys = [self.group_by] if self.group_by else []
        self.caches[gt.filename] = ImageCache(gt, self._pred_image(gt.filename), keys)

    # ------------------------------------------------------------------ table

    def rows(self) -> list[ImageScore]:
        """Current per-image scores at the sliders' thresholds."""
        if self.annotator is None:
            return []
        return [self.caches[n].score(self.iou_threshold, self.score_threshold) for n in self.names]

    def refresh(self) -> None:
        """Rescore every image at the current thresholds (cheap: IoUs are cached)."""
        if self.annotator is None:
            return
        rows = self.rows()
        qc = {
            im.filename: str(im.file_attributes.get(QC_ATTRIBUTE, ""))
            for im in self.annotator.session.dataset.images
        }
        self.model.set_rows(rows, qc)
        lines = [self._summary_line("all", summarise(rows))]
        if self.group_by:
            groups: dict[str, list[ImageScore]] = {}
            for r in rows:
                groups.setdefault(r.group[self.group_by], []).append(r)
            lines += [
                self._summary_line(f"{self.group_by}={k}", summarise(v))
                for k, v in sorted(groups.items())
            ]
        self.summary.setText("\n".join(lines))
        self._fill_predictions()
        self._curves_timer.start()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self.annotator is not None and self.tabs.currentIndex() == 1:
            self._curves_timer.start()  # redraw the curves at the new width

    def _refresh_tab(self) -> None:
        """Recompute what the visible tab shows (the per-image table is always live)."""
        if self.annotator is None:
            return
        if self.tabs.currentIndex() == 1:
            self.refresh_image_level()
        elif self.tabs.currentIndex() == 2:
            self.fill_classes()

    def fill_classes(self) -> None:
        """Per-class scores and the agreement of the classes of matched regions."""
        iou, score = self.iou_threshold, self.score_threshold
        matched = [pair for n in self.names for pair in self.caches[n].matched_labels(iou, score)]
        classes = per_class([self.caches[n] for n in self.names], iou, score)
        self.class_table.setRowCount(len(classes))
        for r, (name, c) in enumerate(classes.items()):
            values = [name, c["gt"], c["pred"], c["tp"], c["fp"], c["fn"], c["precision"],
                      c["recall"], c["f1"], c["found"]]  # fmt: skip
            for col, v in enumerate(values):
                text = "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
                self.class_table.setItem(r, col, QTableWidgetItem(text))
        self.class_table.resizeColumnsToContents()
        agree = class_agreement_summary(matched)
        if agree["kappa"] is None:
            self.agreement_text.setText(
                f"{len(matched)} matched regions; class agreement needs predictions of "
                "two or more classes."
            )
        else:
            self.agreement_text.setText(
                f"Classes of {agree['matched']} matched regions: agreement "
                f"{agree['agreement']:.3f}, Cohen's kappa {agree['kappa']:.3f}"
            )

    def image_level(self) -> dict[str, Any]:
        """Image-level scores of the images under review at the image threshold."""
        return image_level(self.rows(), self.image_threshold)

    def refresh_image_level(self) -> None:
        """Image-level scores and the ROC and precision-recall curves (matplotlib, Agg)."""
        if self.annotator is None:
            return
        from ..plots import curves_image

        rows = self.rows()
        im = image_level(rows, self.image_threshold)

        def fmt(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        self.image_text.setText(
            f"{im['anomalous']} of {im['images']} images anomalous: ROC-AUC {fmt(im['roc_auc'])}, "
            f"AP {fmt(im['average_precision'])}. At {self.image_threshold:.2f}: TP {im['tp']} "
            f"FP {im['fp']} TN {im['tn']} FN {im['fn']}; TPR {fmt(im['tpr'])}, TNR "
            f"{fmt(im['tnr'])}, PPV {fmt(im['ppv'])}, NPV {fmt(im['npv'])}, F1 {fmt(im['f1'])}, "
            f"kappa {fmt(im['kappa'])}"
        )
        width = max(min(self.curves.width(), self.tabs.width() - 12), 320)  # fits the dock
        rgba = curves_image(
            [1 if r.n_gt else 0 for r in rows], [r.score for r in rows], self.image_threshold,
            size=(width / 80, max(width * 0.48, 150) / 80), dpi=80,
        )  # fmt: skip
        h, w = rgba.shape[:2]
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.curves.setPixmap(QPixmap.fromImage(image))

    @staticmethod
    def _summary_line(name: str, s: dict[str, Any]) -> str:
        return (
            f"{name}: TP {s['tp']} FP {s['fp']} FN {s['fn']}, precision {s['precision']:.3f}, "
            f"recall {s['recall']:.3f}, F1 {s['f1']:.3f}, pixel IoU {s['pixel_iou']:.3f}"
        )

    def _on_row_clicked(self, index: QModelIndex) -> None:
        if self.annotator is not None and index.isValid():
            name = self.names[self.proxy.mapToSource(index).row()]
            images = self.annotator.session.dataset.images
            self.annotator.show(next(i for i, im in enumerate(images) if im.filename == name))

    def _ask_export_table(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the table", "", "CSV (*.csv)")
        if path:
            self.export_table(path)

    def export_table(self, path: str | Path) -> Path:
        """Write the per-image table (at the current thresholds) as CSV, atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        for row in self.rows():
            writer.writerow([self.model.value(row, c) for c in range(len(COLUMNS))])
        data = buf.getvalue().encode("utf-8")
        return atomic_write(path, lambda fh: fh.write(data))

    # ------------------------------------------------------------------ layers

    def _ensure_pred_layer(self) -> None:
        if self.pred_layer is None or self.pred_layer not in self.viewer.layers:
            self.pred_layer = self.viewer.add_shapes(
                None,
                ndim=2,
                name="predictions (review)",
                shape_type="polygon",
                edge_color=PRED_COLOR,
                face_color="transparent",
                edge_width=2,
                metadata={TAG: {"role": "prediction", "file": str(self.pred_path)}},
            )

    def _fill_predictions(self) -> None:
        """Show the current image's predictions that pass the score threshold."""
        if self.annotator is None or self.pred_layer is None:
            return
        pred = self._pred_image(self.annotator.session.image.filename)
        self._pred_index = [
            i
            for i, r in enumerate(pred.regions)
            if r.score is None or r.score >= self.score_threshold
        ]
        layer = self.pred_layer
        layer.selected_data = set()
        layer.data = []
        shown = [pred.regions[i] for i in self._pred_index]
        if shown:
            layer.add_polygons([to_napari(r.polygon) for r in shown])
        self._restyle()
        self._fill_errors()

    def _restyle(self, *_: Any) -> None:
        alpha = "55" if self.fill.isChecked() else "00"
        for layer, color in (
            (self.pred_layer, PRED_COLOR),
            (self.annotator and self.annotator.shapes_layer, GT_COLOR),
        ):
            if layer is not None:
                layer.opacity = self.opacity.value() / 100
                if len(layer.data):
                    layer.face_color = color + alpha

    @staticmethod
    def _set_visible(layer: Any, on: bool) -> None:
        if layer is not None:
            layer.visible = on

    # ------------------------------------------------------------------ anomaly maps

    def heatmap(self, filename: str) -> np.ndarray | None:
        """The anomaly map of an image from the heatmaps folder, if there is one."""
        if filename in self._heat_cache:
            return self._heat_cache[filename]
        from ..ml.predict import heatmap_path

        try:
            path = heatmap_path(self.heat_dir, filename)
        except BioAnomalyError:
            return None
        if not path.is_file():
            return None
        import tifffile

        try:
            heat = tifffile.imread(path).astype(np.float32)
        except Exception as exc:  # a corrupt file: say which, keep reviewing
            self.summary.setText(f"{path}: cannot read the anomaly map ({exc})")
            return None
        if len(self._heat_cache) > 8:
            self._heat_cache.pop(next(iter(self._heat_cache)))
        self._heat_cache[filename] = heat
        return heat

    def _show_heatmap(self) -> None:
        """Show the current image's anomaly map under the outlines (inferno, 0 to 1)."""
        if self.annotator is None:
            return
        heat = self.heatmap(self.annotator.session.image.filename)
        layer = self.heat_layer
        if heat is None or not self.show_heat.isChecked():
            if layer is not None and layer in self.viewer.layers:
                layer.visible = False
            return
        if layer is None or layer not in self.viewer.layers:
            self.heat_layer = self.viewer.add_image(
                heat, name="anomaly map", colormap="inferno", contrast_limits=(0.0, 1.0),
                opacity=0.7, blending="additive",
                metadata={TAG: {"role": "anomaly map", "folder": str(self.heat_dir)}},
            )  # fmt: skip
            # under the outlines: just above the image
            index = self.viewer.layers.index(self.heat_layer)
            target = min(
                self.viewer.layers.index(layer)
                for layer in (self.pred_layer, self.annotator.shapes_layer)
                if layer is not None and layer in self.viewer.layers
            )
            if index > target:
                self.viewer.layers.move(index, target)
        else:
            layer.data = heat
            layer.visible = True

    @property
    def proposal_threshold(self) -> float:
        return self.heat_slider.value() / 100

    def propose(self) -> int:
        """Replace the current image's predictions by outlines of its anomaly map above
        the proposal threshold; returns how many regions were proposed."""
        if self.annotator is None:
            return 0
        from ..ml.predict import regions_from_probabilities

        image = self.annotator.session.image
        heat = self.heatmap(image.filename)
        if heat is None:
            self.summary.setText(
                f"No anomaly map for {image.filename}: use Predict & review, or predict "
                f"--heatmaps {self.heat_dir}"
            )
            return 0
        regions = regions_from_probabilities(
            np.stack([1.0 - heat, heat]), ["anomaly"], self.proposal_threshold,
            self.proposal_min_area,
        )  # fmt: skip
        pred = self._pred_image(image.filename)
        pred.regions = regions
        self._save_predictions()
        self._recache(image)
        self.refresh()
        return len(regions)

    def _on_image_changed(self, _index: int) -> None:
        self._fill_predictions()
        self._show_heatmap()
        name = self.annotator.session.image.filename
        if name in self.names:
            source = self.proxy.mapFromSource(self.model.index(self.names.index(name), 0))
            if source.isValid():
                self.table.selectRow(source.row())

    def _on_gt_changed(self) -> None:
        if self.annotator.session.image.filename in self.caches:
            self._recache(self.annotator.session.image)
            self.refresh()

    def _fill_errors(self) -> None:
        self.errors.clear()
        im = self.annotator.session.image
        if im.filename not in self.caches:
            return
        fn, fp = self.caches[im.filename].unmatched(self.iou_threshold, self.score_threshold)
        pred = self._pred_image(im.filename)
        for kind, regions, indices in (("FN", im.regions, fn), ("FP", pred.regions, fp)):
            for i in indices:
                r = regions[i]
                score = "" if r.score is None else f", score {r.score:.2f}"
                item = QListWidgetItem(f"{kind}: {r.label}, {r.area:.0f} px{score}")
                item.setData(Qt.ItemDataRole.UserRole, r.bbox)
                self.errors.addItem(item)

    def _zoom_to(self, item: QListWidgetItem) -> None:
        r0, c0, r1, c1 = item.data(Qt.ItemDataRole.UserRole)
        self.viewer.camera.center = tuple(to_napari(((r0 + r1) / 2, (c0 + c1) / 2)))
        extent = max(r1 - r0, c1 - c0, 8)
        self.viewer.camera.zoom = 600 / (4 * extent)  # the region fills about a quarter

    # ------------------------------------------------------------------ corrections

    def _move(self, indices: list[int], accept: bool) -> int:
        """Accept (into ground truth) or reject the shown predictions at ``indices``."""
        if self.annotator is None or not indices:
            return 0
        pred = self._pred_image(self.annotator.session.image.filename)
        shown = [i for i in sorted(set(indices)) if i < len(self._pred_index)]
        chosen = [self._pred_index[i] for i in shown]
        # the layer's vertices: the user may have edited a prediction before accepting it
        data = self.pred_layer.data
        moved = [
            Region(
                from_napari(data[i]),
                pred.regions[k].label,
                dict(pred.regions[k].attributes),
                pred.regions[k].score,
                "model",
                pred.regions[k].shape,
            )
            for i, k in zip(shown, chosen, strict=True)
        ]
        pred.regions = [r for i, r in enumerate(pred.regions) if i not in set(chosen)]
        if accept:
            # the predictions file loses the accepted regions only once the ground truth
            # holding them is saved (a save deferred by a disk conflict defers both)
            self._pred_pending = True
            self.annotator.add_regions(
                [
                    Region(
                        r.polygon, r.label, dict(r.attributes), r.score, "model-accepted", r.shape
                    )
                    for r in moved
                ]
            )  # saved, rescored through regions_changed
            if not self.annotator.session.dirty:
                self._on_gt_saved()
        else:
            self._save_predictions()
            self._recache(self.annotator.session.image)
            self.refresh()
        return len(moved)

    def accept_selected(self) -> int:
        return self._move(sorted(self.pred_layer.selected_data), accept=True)

    def reject_selected(self) -> int:
        return self._move(sorted(self.pred_layer.selected_data), accept=False)

    def accept_all(self) -> int:
        return self._move(list(range(len(self._pred_index))), accept=True)

    def mark_reviewed(self) -> None:
        if self.annotator is not None:
            self.annotator.session.set_flag("reviewed", True)
            self.annotator.autosave()

    def _ask_export_corrected(self) -> None:
        from qtpy.QtWidgets import QInputDialog


        if self.annotator is None:
            return
        choice, ok = QInputDialog.getItem(
            self, "Export corrected", "Format:", list(EXPORTS), 0, False
        )
        if not ok:
            return
        fmt, pattern = EXPORTS[choice]
        if pattern is None:
            out = QFileDialog.getExistingDirectory(self, "Export label masks into folder")
        else:
            out, _ = QFileDialog.getSaveFileName(self, "Export corrected annotations", "", pattern)
        if out:
            self.export_corrected(fmt, out)

    def export_corrected(self, fmt: str, path: str | Path) -> list[Path]:
        """Export the corrected ground truth (see :data:`annotations.EXPORT_FORMATS`)."""
        self.annotator.sync()
        dataset = self.annotator.session.dataset
        if fmt in ("coco", "masks"):
            annotations.attach_images(dataset)
        written, _ = annotations.save(dataset, path, fmt)
        return written

    # ------------------------------------------------------------------ one click

    def train_and_review(self) -> bool:
        """Train on the training split, predict the validation images, then review them."""
        from ..ml.config import TrainConfig

        if self.worker is not None:
            return False
        if self.workspace.busy:
            self.summary.setText("Another job of this window runs: wait for it, or stop it.")
            return False
        gt = self.gt_edit.text().strip()
        try:
            if not gt:
                raise BioAnomalyError("choose the ground-truth annotation file first")
            dataset, _ = annotations.open_dataset(gt)
            config = self._train_config(TrainConfig)
            prime_torch()
        except (BioAnomalyError, OSError, TypeError) as exc:
            self.summary.setText(f"Cannot train: {exc}")
            return False
        from napari.qt.threading import create_worker

        out = Path(gt).with_name("bioanomaly-model.pt")
        pred_out = predictions_path(gt)
        self.worker = create_worker(
            train_and_predict, dataset, config, out, pred_out, _start_thread=False
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda result: self._after_training(gt, *result))
        self.worker.errored.connect(lambda exc: self._on_worker_error("Training", exc))
        self.worker.finished.connect(self._on_worker_finished)
        self.train_button.setEnabled(False)
        self.summary.setText(f"Training {config.model} on the training split...")
        self.workspace.set_job("running", f"training {config.model} (Review)")
        self.worker.start()
        return True

    def _train_config(self, config_class: Any) -> Any:
        """Settings of "Train & review": :attr:`train_settings` when set, else the Train
        widget's form in this window, else the defaults."""
        if self.train_settings:
            return config_class(**self.train_settings)
        try:
            config = self.workspace.train_config
        except RuntimeError:  # the Train widget was deleted
            config = None
        return config if config is not None else config_class()

    def _on_worker_error(self, what: str, exc: BaseException) -> None:
        self.summary.setText(f"{what} failed: {exc}")
        self.workspace.set_job("failed", str(exc))

    def predict_and_review(self) -> bool:
        """Predict every ground-truth image with the model (in the background), then review."""
        from ..ml.predict import Predictor

        if self.worker is not None:
            return False
        if self.workspace.busy:
            self.summary.setText("Another job of this window runs: wait for it, or stop it.")
            return False
        gt, model = self.gt_edit.text().strip(), self.model_edit.text().strip()
        try:
            if not gt or not model:
                raise BioAnomalyError("choose the ground-truth file and a model first")
            dataset, _ = annotations.open_dataset(gt, read_images=False)
            prime_torch()
            predictor = Predictor.load(model)
        except (BioAnomalyError, OSError) as exc:
            self.summary.setText(f"Cannot predict: {exc}")
            return False
        # proposals from the anomaly maps start at the model's own operating point
        point = predictor.operating_point
        self.heat_slider.setValue(round(point.threshold * 100))
        self.proposal_min_area = point.min_area
        from napari.qt.threading import create_worker

        pred_out = predictions_path(gt)
        names = [im.filename for im in dataset.images]
        heatmaps = pred_out.with_suffix(annotations.HEATMAPS_SUFFIX)
        self.worker = create_worker(
            predict_and_save, predictor, dataset, pred_out, heatmaps, _start_thread=False
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda path: self._after_training(gt, path, names))
        self.worker.errored.connect(lambda exc: self._on_worker_error("Prediction", exc))
        self.worker.finished.connect(self._on_worker_finished)
        self.predict_button.setEnabled(False)
        self.workspace.set_job("running", f"predicting with {Path(model).name} (Review)")
        self.worker.start()
        return True

    def _on_progress(self, event: TrainEvent | PredictEvent) -> None:
        if isinstance(event, TrainEvent):
            if event.kind == "epoch":
                self.summary.setText(f"Training: {epoch_text(event)}")
        else:
            self.summary.setText(f"Predicting: {event.index}/{event.total} images")

    def _after_training(self, gt: str, pred_out: Path, names: list[str]) -> None:
        self.workspace.predictions_path = pred_out
        self.pred_edit.setText(str(pred_out))
        self.open(gt, pred_out, images=names)  # open() forgets the cached maps

    def _on_worker_finished(self) -> None:
        self.workspace.set_job("done")
        self.worker = None
        self.train_button.setEnabled(True)
        self.predict_button.setEnabled(True)

    def _save_predictions(self) -> None:
        if self.predictions is not None and self.pred_path is not None:
            annotations.save(self.predictions, self.pred_path, "via")
            self._pred_pending = False

    def _on_gt_saved(self, *_: Any) -> None:
        """The ground truth is on disk: predictions accepted into it leave the predictions
        file now."""
        if self._pred_pending:
            self._save_predictions()

    def _on_message(self, text: str) -> None:
        self.summary.setText(text)

    def _release(self) -> None:
        """Stop reviewing the open ground truth (saved; closed if no other widget uses it)."""
        if self.annotator is not None:
            release_annotator(self.viewer, self.annotator, self)
            self.annotator = None

    def closeEvent(self, event: Any) -> None:
        self._release()
        super().closeEvent(event)


def predictions_path(gt: str | Path) -> Path:
    """Where the widget saves predictions: ``<annotations>.predictions.json`` beside the
    ground truth (inside the folder when the ground truth is a folder of images)."""
    gt = Path(gt)
    if gt.is_dir():
        return gt / "annotations.predictions.json"
    return gt.with_name(gt.stem + ".predictions.json")


def train_and_predict(
    dataset: Dataset, config: Any, out: Path, pred_out: Path
) -> Generator[Any, None, tuple[Path, list[str]]]:
    """Worker job of "Train & review": train, predict the validation images, save them."""
    from ..ml.data import split
    from ..ml.predict import Predictor, predict_dataset

    result = yield from training_job(dataset, config, out, threading.Event())
    _, val = split(dataset, config)
    names = [dataset.images[i].filename for i in val]
    predictor = Predictor.load(result.best or result.last)
    predictions = yield from predict_dataset(predictor, dataset.subset(val))
    annotations.save(predictions, pred_out, "via")
    return pred_out, names


def predict_and_save(
    predictor: Any, dataset: Dataset, pred_out: Path, heatmaps: Path | None = None
) -> Generator[Any, None, Path]:
    """Worker job of "Predict & review": predict every image, save the predictions (and
    the anomaly maps into ``heatmaps``)."""
    from ..ml.predict import predict_dataset

    leave_a_core_to_the_gui()
    predictions = yield from predict_dataset(predictor, dataset, heatmaps=heatmaps)
    annotations.save(predictions, pred_out, "via")
    return pred_out
