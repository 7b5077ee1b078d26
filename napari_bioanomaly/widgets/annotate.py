"""The Annotate dock widget: walk through a dataset, draw anomalies with classes, never lose work.

The widget only collects input and shows state; the work is done by
:class:`napari_bioanomaly._annotator.Annotator` (napari, no Qt) and
:class:`napari_bioanomaly.core.session.AnnotationSession` (no napari).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtCore import QModelIndex, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._annotator import Annotator
from .._layers import class_color
from .._workspace import release_annotator, shared_annotator, workspace_for
from ..core import annotations
from ..core.model import BioAnomalyError, ImageRecord
from ..core.quality import QC_ATTRIBUTE, flags_from_text, flags_to_text
from ..core.session import AnnotationSession, summary
from ._annotate_list import (
    ImageListPanel,
    _NumberItem,
    _swatch,
    _table,
    quality_job,
)
from ._common import EXPORTS, ask_conflict, button_row, compact_dock_tabs
from ._launch import error_text, launch

#: Keyboard shortcuts bound on the viewer while a dataset is open: (napari key, what it does).
SHORTCUTS = [
    ("PageDown", "next image"),
    ("PageUp", "previous image"),
    ("Alt-1 ... Alt-9", "choose class 1-9 (also sets the class of the selected regions)"),
    ("Alt-N", "toggle 'checked: no anomaly'"),
    ("Alt-Z", "undo the last deletion of regions"),
    ("P", "draw a polygon (napari); double-click or Escape to finish"),
    ("Shift-L", "draw a polyline for scratches and hairs (stored as a thin polygon)"),
    ("Backspace / Delete", "delete the selected regions (napari)"),
    ("S / D", "select shapes / select vertices (napari)"),
]




class AnnotateWidget(QWidget):
    """Open a dataset, walk through its images, draw anomalies with classes, export."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        self.annotator: Annotator | None = None
        self._qc_worker: Any = None
        self._qc_session: AnnotationSession | None = None
        self._filling = False
        self._last: Path | None = None
        self._build()
        last = AnnotationSession.last_opened()
        self.resume_button.setVisible(last is not None)
        if last is not None:
            self.resume_button.setText(f"Resume {last.parent.name}/{last.name}")
            self.resume_button.setToolTip(str(last))
            self._last = last

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        layout = QVBoxLayout(inner)
        row = QHBoxLayout()
        for text, slot, tip in [
            ("Open folder...", self._ask_folder, "a folder of images, with or without annotations"),
            ("Open file...", self._ask_file, "a VIA (1, 2, 3) or COCO annotation file"),
        ]:
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            row.addWidget(button)
        layout.addLayout(row)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.open_path(self._last))
        layout.addWidget(self.resume_button)
        self.status_label = QLabel("No dataset open.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.save_label = QLabel("")
        self.save_label.setWordWrap(True)
        layout.addWidget(self.save_label)

        self.images_panel = panel = ImageListPanel()
        for name in ("filter_edit", "status_filter", "qc_filter", "image_model", "image_proxy",
                     "image_table", "prev_button", "next_button", "qc_button"):
            setattr(self, name, getattr(panel, name))  # as tests and scripts know them
        self.filter_edit.textChanged.connect(self._apply_filter)
        self.status_filter.currentTextChanged.connect(self._apply_filter)
        self.qc_filter.currentTextChanged.connect(self._apply_filter)
        self.image_table.clicked.connect(self._on_image_clicked)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.qc_button.clicked.connect(self.check_quality)
        layout.addWidget(panel)

        current = QGroupBox("This image")
        form = QVBoxLayout(current)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)
        form.addWidget(self.image_label)
        self.no_anomaly_box = QCheckBox("checked: no anomaly")
        self.no_anomaly_box.toggled.connect(self._on_no_anomaly)
        form.addWidget(self.no_anomaly_box)
        self.attr_table = QTableWidget(0, 2)
        self.attr_table.setHorizontalHeaderLabels(["file attribute", "value"])
        self.attr_table.verticalHeader().setVisible(False)
        self.attr_table.horizontalHeader().setStretchLastSection(True)
        self.attr_table.setMinimumHeight(80)
        self.attr_table.setMaximumHeight(120)
        self.attr_table.itemChanged.connect(self._on_attribute_edited)
        form.addWidget(self.attr_table)
        add_attr = QPushButton("Add attribute")
        add_attr.clicked.connect(self._add_attribute)
        form.addWidget(add_attr)
        self.region_table = _table(["#", "class", "area px", "source"])
        self.region_table.setMinimumHeight(130)
        self.region_table.cellClicked.connect(self._on_region_clicked)
        form.addWidget(self.region_table)
        self.size_warning = QLabel("")
        self.size_warning.setStyleSheet("color: #e69f00")
        self.size_warning.setWordWrap(True)
        form.addWidget(self.size_warning)
        self.undo_button = QPushButton("Undo delete (Alt-Z)")
        self.undo_button.clicked.connect(self.undo_delete)
        form.addWidget(self.undo_button)
        layout.addWidget(current)

        classes = QGroupBox("Classes")
        cbox = QVBoxLayout(classes)
        self.class_list = QListWidget()
        self.class_list.setMinimumHeight(140)
        self.class_list.currentTextChanged.connect(self._on_class_chosen)
        cbox.addWidget(self.class_list)
        cbox.addLayout(
            button_row(
                [
                    ("Add", self._add_class),
                    ("Rename", self._rename_class),
                    ("Remove", self._remove_class),
                ]
            )
        )
        opts = QFormLayout()
        self.polyline_spin = QDoubleSpinBox()
        self.polyline_spin.setRange(0.5, 100)
        self.polyline_spin.setValue(3.0)
        self.polyline_spin.setSuffix(" px")
        self.polyline_spin.valueChanged.connect(self._on_options)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0, 1e7)
        self.min_area_spin.setDecimals(0)
        self.min_area_spin.setValue(200)
        self.min_area_spin.setSuffix(" px\u00b2")
        self.min_area_spin.setToolTip(
            "warn about regions smaller than this; annotators often use about twice the area "
            "of a surrounding cell"
        )
        self.min_area_spin.valueChanged.connect(self._on_options)
        opts.addRow("polyline width", self.polyline_spin)
        opts.addRow("minimum region area", self.min_area_spin)
        cbox.addLayout(opts)
        layout.addWidget(classes)

        export = QGroupBox("Export")
        erow = QHBoxLayout(export)
        self.export_combo = QComboBox()
        self.export_combo.addItems(list(EXPORTS))
        export_button = QPushButton("Export...")
        export_button.clicked.connect(self._ask_export)
        erow.addWidget(self.export_combo)
        erow.addWidget(export_button)
        layout.addWidget(export)

        self.help_box = QGroupBox("Shortcuts")
        self.help_box.setCheckable(True)
        self.help_box.setChecked(False)
        hbox = QVBoxLayout(self.help_box)
        self.help_label = QLabel(
            "<table>"
            + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
            + "</table>"
        )
        self.help_label.setWordWrap(True)
        self.help_label.setVisible(False)
        self.help_box.toggled.connect(self.help_label.setVisible)
        hbox.addWidget(self.help_label)
        layout.addWidget(self.help_box)
        layout.addStretch(1)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.prev_button, self.next_button, self.no_anomaly_box, self.undo_button):
            w.setEnabled(on)

    # ------------------------------------------------------------------ opening

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_path(folder)

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open annotations",
            "",
            "Annotations (*.json *.geojson *.zip *.roi);;VIA or COCO (*.json);;"
            "QuPath GeoJSON (*.geojson *.json);;ImageJ ROI set (*.zip *.roi)",
        )
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> bool:
        """Open a dataset folder or annotation file (saving the one open now)."""
        try:
            session = self.workspace.session(path)
        except (BioAnomalyError, OSError) as exc:
            self._error(str(exc))
            return False
        if self.annotator is None or self.annotator.session is not session:
            self._release()
            # one annotator per file and viewer, shared with the Review widget
            annotator = self.annotator = shared_annotator(
                self.viewer, session, self,
                {"image_changed": self._on_image_changed, "saved": self._on_saved,
                 "regions_changed": self._on_regions_changed, "message": self._info},
            )  # fmt: skip
            annotator.on_conflict = lambda exc: ask_conflict(self, exc, annotator)
        self.annotator.polyline_width = self.polyline_spin.value()
        self.annotator.min_area = self.min_area_spin.value()
        self._bind_keys()
        self._fill_classes()
        self._fill_images()
        self._set_enabled(True)
        self.resume_button.setVisible(False)
        self._on_image_changed(session.current)
        report = session.report
        problems = len(session.problems)
        text = f"{session.path.name}: {len(session.dataset.images)} images ({report.format})"
        if report.issues or problems:
            text += f"; {len(report.issues)} import issue(s), {problems} missing image(s)"
        self.status_label.setText(text)
        self.status_label.setToolTip("\n".join(report.summary(5)[:60]))
        return True

    def _bind_keys(self) -> None:
        bind = self.viewer.bind_key
        bind("PageDown", lambda v: self.step(1), overwrite=True)
        bind("PageUp", lambda v: self.step(-1), overwrite=True)
        bind("Alt-N", lambda v: self.no_anomaly_box.toggle(), overwrite=True)
        bind("Alt-Z", lambda v: self.undo_delete(), overwrite=True)
        for i in range(1, 10):
            bind(f"Alt-{i}", lambda v, i=i: self.choose_class(i - 1), overwrite=True)

    # ------------------------------------------------------------------ image list

    def _fill_images(self) -> None:
        self.image_model.set_session(self._session)
        self.image_table.resizeColumnsToContents()

    def _refresh_row(self, index: int) -> None:
        self.image_model.refresh(index)

    def _apply_filter(self, *_: Any) -> None:
        self.image_proxy.set_filter(
            self.filter_edit.text(), self.status_filter.currentText(), self.qc_filter.currentText()
        )

    # ------------------------------------------------------------------ quality control

    def check_quality(self) -> bool:
        """Check every image's quality in a worker thread; flags arrive row by row and are
        saved with the annotations when all are done. Returns False if it cannot start."""
        if self.annotator is None or self._qc_worker is not None:
            return False
        session = self._qc_session = self._session
        root = session.dataset.root or Path(".")
        records = [(i, ImageRecord(im.filename)) for i, im in enumerate(session.dataset.images)]
        self.qc_button.setEnabled(False)
        self._info(f"Checking the quality of {len(records)} images...")
        self._qc_worker = launch(
            quality_job, (root, records), on_event=self._on_quality,
            on_error=lambda exc: self._info(f"Quality check failed: {error_text(exc)}"),
            on_finished=self._on_quality_done,
        )  # fmt: skip
        return True

    def _on_quality(self, item: tuple[int, tuple[str, ...]]) -> None:
        index, flags = item
        if self.annotator is None or self._session is not self._qc_session:
            return  # another dataset was opened meanwhile: these flags are not its
        session = self._session
        if index >= len(session.dataset.images):
            return
        attrs = dict(session.dataset.images[index].file_attributes)
        attrs[QC_ATTRIBUTE] = flags_to_text(flags)
        session.set_file_attributes(attrs, index)
        self.image_model.refresh(index)
        if index == session.current:
            self._fill_attributes()

    def _on_quality_done(self) -> None:
        self._qc_worker = None
        self.qc_button.setEnabled(True)
        if self.annotator is None or self._session is not self._qc_session:
            return
        self.annotator.autosave()
        images = self._session.dataset.images
        flagged = [im for im in images if flags_from_text(im.file_attributes.get(QC_ATTRIBUTE))]
        self._info(
            f"Quality checked: {len(flagged)} of {len(images)} images flagged "
            "(filter the list by QC; Train can leave them out)."
        )

    def visible_images(self) -> list[int]:
        """Dataset indices of the images the list shows now, in display order."""
        proxy = self.image_proxy
        return [proxy.mapToSource(proxy.index(r, 0)).row() for r in range(proxy.rowCount())]

    def _on_image_clicked(self, index: QModelIndex) -> None:
        if self.annotator is not None and index.isValid():
            self.go_to(self.image_proxy.mapToSource(index).row())

    # ------------------------------------------------------------------ navigation

    @property
    def _session(self) -> AnnotationSession:
        if self.annotator is None:
            raise BioAnomalyError("no dataset open")
        return self.annotator.session

    def go_to(self, index: int) -> None:
        if self.annotator is not None and index != self.annotator.index:
            previous = self.annotator.index
            self.annotator.show(index)
            self._refresh_row(previous)

    def step(self, step: int) -> None:
        if self.annotator is not None:
            self.go_to(
                min(max(self.annotator.index + step, 0), len(self._session.dataset.images) - 1)
            )

    def _on_image_changed(self, index: int) -> None:
        session = self._session
        im = session.image
        shape = f"{im.shape[0]}x{im.shape[1]}" if im.shape else "size unknown"
        problem = session.problems.get(im.filename)
        self.image_label.setText(
            f"<b>{index + 1}/{len(session.dataset.images)}</b> {im.filename} ({shape})"
            + (f"<br><span style='color:#d55e00'>{problem}</span>" if problem else "")
        )
        self.no_anomaly_box.blockSignals(True)
        self.no_anomaly_box.setChecked(im.no_anomaly)
        self.no_anomaly_box.blockSignals(False)
        self._fill_attributes()
        self._on_regions_changed()
        proxy_index = self.image_proxy.mapFromSource(self.image_model.index(index, 0))
        if proxy_index.isValid():
            self.image_table.selectRow(proxy_index.row())
            self.image_table.scrollTo(proxy_index)

    # ------------------------------------------------------------------ regions

    def _on_regions_changed(self) -> None:
        session = self._session
        regions = session.image.regions
        small = set(self.annotator.small_regions()) if self.annotator else set()
        table = self.region_table
        table.setRowCount(len(regions))
        for i, r in enumerate(regions):
            cells = [
                _NumberItem(i + 1),
                QTableWidgetItem(r.label),
                _NumberItem(r.area, f"{r.area:.0f}"),
                QTableWidgetItem(r.source),
            ]
            cells[1].setIcon(_swatch(class_color(r.label)))
            if i in small:
                cells[2].setForeground(QColor("#e69f00"))
            for col, item in enumerate(cells):
                table.setItem(i, col, item)
        self.size_warning.setText(
            f"{len(small)} region(s) smaller than {self.min_area_spin.value():.0f} px\u00b2"
            if small
            else ""
        )
        self.no_anomaly_box.blockSignals(True)
        self.no_anomaly_box.setChecked(session.image.no_anomaly)
        self.no_anomaly_box.blockSignals(False)
        self._refresh_row(session.current)
        counts = summary(session)
        done = counts["annotated"] + counts["checked: no anomaly"] + counts["reviewed"]
        self.save_label.setText(
            self._save_state_text() + f"  |  {done}/{len(session.dataset.images)} images done"
        )
        for name in session.dataset.classes:
            if not self.class_list.findItems(name, Qt.MatchFlag.MatchExactly):
                self._fill_classes()
                break

    def _on_region_clicked(self, row: int, _col: int) -> None:
        if self.annotator is not None:
            layer = self.annotator.shapes_layer
            if row < len(layer.data):
                layer.mode = "select"
                layer.selected_data = {row}

    def undo_delete(self) -> None:
        if self.annotator is not None:
            self.annotator.undo_delete()

    def _on_no_anomaly(self, checked: bool) -> None:
        if self.annotator is None:
            return
        try:
            self.annotator.set_no_anomaly(checked)
        except BioAnomalyError as exc:
            self.no_anomaly_box.blockSignals(True)
            self.no_anomaly_box.setChecked(False)
            self.no_anomaly_box.blockSignals(False)
            self._error(str(exc))

    # ------------------------------------------------------------------ file attributes

    def _fill_attributes(self) -> None:
        attrs = self._session.image.file_attributes
        self._filling = True
        self.attr_table.setRowCount(len(attrs))
        for row, (k, v) in enumerate(attrs.items()):
            self.attr_table.setItem(row, 0, QTableWidgetItem(str(k)))
            self.attr_table.setItem(row, 1, QTableWidgetItem(str(v)))
        self._filling = False

    def _add_attribute(self) -> None:
        if self.annotator is None:
            return
        self._filling = True
        row = self.attr_table.rowCount()
        self.attr_table.setRowCount(row + 1)
        self.attr_table.setItem(row, 0, QTableWidgetItem("cell_line" if row == 0 else ""))
        self.attr_table.setItem(row, 1, QTableWidgetItem(""))
        self._filling = False
        self.attr_table.editItem(self.attr_table.item(row, 1))

    def _on_attribute_edited(self, _item: QTableWidgetItem) -> None:
        if self._filling or self.annotator is None:
            return
        attrs = {}
        for row in range(self.attr_table.rowCount()):
            key, value = self.attr_table.item(row, 0), self.attr_table.item(row, 1)
            if key is not None and key.text().strip():
                attrs[key.text().strip()] = value.text() if value is not None else ""
        self.annotator.set_file_attributes(attrs)

    # ------------------------------------------------------------------ classes

    def _fill_classes(self) -> None:
        current = self.annotator.current_class if self.annotator else None
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for i, name in enumerate(self._session.dataset.classes):
            item = QListWidgetItem(_swatch(class_color(name)), name)
            if i < 9:
                item.setToolTip(f"Alt-{i + 1}")
            self.class_list.addItem(item)
            if name == current:
                self.class_list.setCurrentItem(item)
        self.class_list.blockSignals(False)

    def _on_class_chosen(self, name: str) -> None:
        if name and self.annotator is not None:
            self.annotator.current_class = name

    def choose_class(self, i: int) -> None:
        if 0 <= i < self.class_list.count():
            self.class_list.setCurrentRow(i)

    def _add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok:
            self.add_class(name)

    def add_class(self, name: str) -> None:
        name = name.strip()
        if not name or self.annotator is None:
            return
        session = self._session
        if name not in session.dataset.classes:
            session.set_classes([*session.dataset.classes, name])
            self.annotator.autosave()
        self._fill_classes()
        self.choose_class(session.dataset.classes.index(name))

    def _rename_class(self) -> None:
        item = self.class_list.currentItem()
        if item is None or self.annotator is None:
            return
        new, ok = QInputDialog.getText(self, "Rename class", f"New name for {item.text()!r}:")
        if ok:
            self.rename_class(item.text(), new)

    def rename_class(self, old: str, new: str) -> None:
        try:
            self._session.rename_class(old, new)
        except BioAnomalyError as exc:
            self._error(str(exc))
            return
        self.annotator.show(self.annotator.index)  # redraw with the new name
        self.annotator.autosave()
        self._fill_classes()

    def _remove_class(self) -> None:
        item = self.class_list.currentItem()
        if item is None or self.annotator is None:
            return
        classes = [c for c in self._session.dataset.classes if c != item.text()]
        try:
            self._session.set_classes(classes)
        except BioAnomalyError as exc:
            self._error(str(exc))
            return
        self.annotator.autosave()
        self._fill_classes()

    def _on_options(self, *_: Any) -> None:
        if self.annotator is not None:
            self.annotator.polyline_width = self.polyline_spin.value()
            self.annotator.min_area = self.min_area_spin.value()
            self._on_regions_changed()

    # ------------------------------------------------------------------ saving and export

    def _save_state_text(self) -> str:
        session = self._session
        if session.dirty:
            return "\u25cf unsaved changes"
        return f"\u2713 saved to {session.path.name}"

    def _on_saved(self, path: str) -> None:
        self.save_label.setText(f"\u2713 saved {Path(path).name} at {time.strftime('%H:%M:%S')}")

    def _ask_export(self) -> None:
        if self.annotator is None:
            return
        fmt, pattern = EXPORTS[self.export_combo.currentText()]
        if pattern is None:
            out = QFileDialog.getExistingDirectory(self, f"Export {fmt} files into folder")
        else:
            out, _ = QFileDialog.getSaveFileName(self, "Export annotations", "", pattern)
        if out:
            self.export(fmt, out)

    def export(self, fmt: str, path: str | Path) -> list[Path]:
        """Save the current image's edits, then export the dataset; shows what was written."""
        self.annotator.sync()
        dataset = self._session.dataset
        for im in dataset.images:
            if im.shape is None and fmt in ("coco", "masks", "imagej", "geojson"):
                annotations.attach_images(dataset)
                break
        try:
            written, warnings = annotations.save(dataset, path, fmt)
        except (BioAnomalyError, OSError, ValueError) as exc:
            self._error(f"export failed: {exc}")
            return []
        text = (
            f"Wrote {len(written)} file(s): {len(dataset.images)} images, "
            f"{len(dataset.regions)} regions."
        )
        if warnings:
            text += f"\n{len(warnings)} warning(s):\n" + "\n".join(warnings[:10])
        self._info(text)
        return written

    # ------------------------------------------------------------------ messages

    def _info(self, text: str) -> None:
        from napari.utils.notifications import show_info

        show_info(text)

    def _error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        show_error(text)

    def compact_dock_tabs(self) -> None:
        """Keep tabbed plugin docks from widening the dock area (see ``_common``)."""
        compact_dock_tabs(self)

    def _release(self) -> None:
        """Stop showing the open dataset (saved; closed if no other widget uses it)."""
        if self.annotator is not None:
            release_annotator(self.viewer, self.annotator, self)
            self.annotator = None

    def closeEvent(self, event: Any) -> None:
        if self._qc_worker is not None:  # a quality check in flight stops at the next image
            self._qc_worker.quit()
        self._release()
        super().closeEvent(event)
