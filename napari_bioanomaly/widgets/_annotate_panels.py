"""The Annotate widget's panels for the image on screen and the classes.

Each panel shows state and forwards edits to the open :class:`~.._annotator.Annotator`
(reached through a callable, since the widget opens and closes datasets); neither
opens files or keeps annotations of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .._annotator import Annotator
from ..core.colors import class_color, dataset_colors
from ..core.model import FALLBACK_CLASS, BioAnomalyError
from ..core.session import AnnotationSession
from ..core.text import counted
from ._annotate_list import _NumberItem, _swatch, _table
from ._common import button_row, headers

AnnotatorRef = Callable[[], "Annotator | None"]


def _attribute_text(value: Any) -> str:
    """A file attribute's value as the table shows it: a checkbox attribute's options
    ticked, separated by commas; any other as text."""
    if isinstance(value, dict):
        return ", ".join(str(k) for k, on in value.items() if on)
    return str(value)


class CurrentImagePanel(QGroupBox):
    """This image: its name, "checked: no anomaly", file attributes and regions."""

    def __init__(self, annotator: AnnotatorRef, on_error: Callable[[str], None]) -> None:
        super().__init__("This image")
        self._annotator = annotator
        self._on_error = on_error
        self._filling = False
        #: each file attribute's text in the table and its value (see _value)
        self._shown: dict[str, tuple[str, Any]] = {}
        form = QVBoxLayout(self)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)
        form.addWidget(self.image_label)
        self.no_anomaly_box = QCheckBox("checked: no anomaly")
        self.no_anomaly_box.toggled.connect(self._on_no_anomaly)
        form.addWidget(self.no_anomaly_box)
        self.attr_table = QTableWidget(0, 2)
        self.attr_table.setHorizontalHeaderLabels(["file attribute", "value"])
        horizontal, vertical = headers(self.attr_table)
        vertical.setVisible(False)
        horizontal.setStretchLastSection(True)
        self.attr_table.setMinimumHeight(80)
        self.attr_table.setMaximumHeight(120)
        self.attr_table.itemChanged.connect(self._on_attribute_edited)
        form.addWidget(self.attr_table)
        add_attr = QPushButton("Add attribute")
        add_attr.clicked.connect(self.add_attribute)
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

    def show_image(self, session: AnnotationSession, index: int) -> None:
        im = session.image
        shape = f"{im.shape[0]}x{im.shape[1]}" if im.shape else "size unknown"
        problem = session.problems.get(im.filename)
        self.image_label.setText(
            f"<b>{index + 1}/{len(session.dataset.images)}</b> {im.filename} ({shape})"
            + (f"<br><span style='color:#d55e00'>{problem}</span>" if problem else "")
        )
        self.set_no_anomaly(im.no_anomaly)
        self.fill_attributes(session)

    def show_regions(self, session: AnnotationSession, small: set[int], min_area: float) -> None:
        regions = session.image.regions
        colors = dataset_colors(session.dataset)
        table = self.region_table
        table.setRowCount(len(regions))
        for i, r in enumerate(regions):
            cells = [
                _NumberItem(i + 1),
                QTableWidgetItem(r.label),
                _NumberItem(r.area, f"{r.area:.0f}"),
                QTableWidgetItem(r.source),
            ]
            cells[1].setIcon(_swatch(colors.get(r.label) or class_color(r.label)))
            if i in small:
                cells[2].setForeground(QColor("#e69f00"))
            for col, item in enumerate(cells):
                table.setItem(i, col, item)
        self.size_warning.setText(
            f"{counted(len(small), 'region')} smaller than {min_area:.0f} px\u00b2" if small else ""
        )
        self.set_no_anomaly(session.image.no_anomaly)

    def set_no_anomaly(self, checked: bool) -> None:
        """Show the flag without sending it back to the annotator."""
        self.no_anomaly_box.blockSignals(True)
        self.no_anomaly_box.setChecked(checked)
        self.no_anomaly_box.blockSignals(False)

    def _on_region_clicked(self, row: int, _col: int) -> None:
        if (annotator := self._annotator()) is not None:
            layer = annotator.shapes_layer
            if row < len(layer.data):
                layer.mode = "select"
                layer.selected_data = {row}

    def undo_delete(self) -> None:
        if (annotator := self._annotator()) is not None:
            annotator.undo_delete()

    def _on_no_anomaly(self, checked: bool) -> None:
        if (annotator := self._annotator()) is None:
            return
        try:
            annotator.set_no_anomaly(checked)
        except BioAnomalyError as exc:
            self.set_no_anomaly(False)
            self._on_error(str(exc))

    # ------------------------------------------------------------------ file attributes

    def fill_attributes(self, session: AnnotationSession) -> None:
        attrs = session.image.file_attributes
        self._filling = True
        self.attr_table.setRowCount(len(attrs))
        self._shown = {}
        for row, (k, v) in enumerate(attrs.items()):
            text = _attribute_text(v)
            self._shown[str(k)] = (text, v)
            self.attr_table.setItem(row, 0, QTableWidgetItem(str(k)))
            item = QTableWidgetItem(text)
            if isinstance(v, dict):
                item.setToolTip("a checkbox attribute: the options ticked, separated by commas")
            self.attr_table.setItem(row, 1, item)
        self._filling = False

    def _value(self, name: str, text: str) -> Any:
        """The value of the file attribute ``name`` whose row reads ``text``: as it was
        where the row is unchanged; a checkbox attribute (VIA: ``{"HE": true}``) stays
        one, ticking the options the text lists (it was saved as the text of the
        dictionary, ``"{'HE': True}"``, when any other attribute was edited)."""
        shown, value = self._shown.get(name, (None, None))
        if text == shown:
            return value
        if isinstance(value, dict):
            return {option.strip(): True for option in text.split(",") if option.strip()}
        return text

    def add_attribute(self) -> None:
        """A new row to type an attribute into (the first one suggests ``cell_line``)."""
        if self._annotator() is None:
            return
        self._filling = True
        row = self.attr_table.rowCount()
        self.attr_table.setRowCount(row + 1)
        self.attr_table.setItem(row, 0, QTableWidgetItem("cell_line" if row == 0 else ""))
        self.attr_table.setItem(row, 1, QTableWidgetItem(""))
        self._filling = False
        self.attr_table.editItem(self.attr_table.item(row, 1))

    def _on_attribute_edited(self, _item: QTableWidgetItem) -> None:
        if self._filling or (annotator := self._annotator()) is None:
            return
        attrs: dict[str, Any] = {}
        repeated = []
        for row in range(self.attr_table.rowCount()):
            key, value = self.attr_table.item(row, 0), self.attr_table.item(row, 1)
            if key is None or not key.text().strip():
                continue
            name = key.text().strip()
            if name in attrs:  # a second row of a key: kept in the table, not applied
                repeated.append(name)
                continue
            attrs[name] = self._value(name, value.text() if value is not None else "")
        annotator.set_file_attributes(attrs)
        if repeated:
            listed = ", ".join(repr(k) for k in dict.fromkeys(repeated))
            annotator.message.emit(
                f"{annotator.session.image.filename}: file attribute {listed} is in the table "
                "twice; the first row's value is kept: rename or clear the other row"
            )


class ClassesPanel(QGroupBox):
    """The dataset's classes (choose, add, rename, remove) and the drawing options."""

    def __init__(
        self,
        annotator: AnnotatorRef,
        on_error: Callable[[str], None],
        on_options: Callable[[], None],
        on_attribute: Callable[[str], object],
    ) -> None:
        super().__init__("Classes")
        self._annotator = annotator
        self._on_error = on_error
        box = QVBoxLayout(self)
        self.attribute_combo = QComboBox()
        self.attribute_combo.setToolTip(
            "the region attribute the classes are read from: VIA files name it as their "
            "annotators chose (class, type, defect, ...); the choice is saved with the file"
        )
        self._on_attribute = on_attribute
        self.attribute_combo.activated.connect(self._attribute_chosen)
        row = QFormLayout()
        row.addRow("classes from", self.attribute_combo)
        box.addLayout(row)
        self.class_list = QListWidget()
        self.class_list.setMinimumHeight(140)
        self.class_list.currentTextChanged.connect(self._on_class_chosen)
        box.addWidget(self.class_list)
        box.addLayout(
            button_row([("Add", self._ask_add), ("Rename", self._ask_rename),
                        ("Remove", self.remove_current)])
        )  # fmt: skip
        opts = QFormLayout()
        self.polyline_spin = QDoubleSpinBox()
        self.polyline_spin.setRange(0.5, 100)
        self.polyline_spin.setValue(3.0)
        self.polyline_spin.setSuffix(" px")
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0, 1e7)
        self.min_area_spin.setDecimals(0)
        self.min_area_spin.setValue(200)
        self.min_area_spin.setSuffix(" px\u00b2")
        self.min_area_spin.setToolTip(
            "warn about regions smaller than this; annotators often use about twice the area "
            "of a surrounding cell"
        )
        for spin in (self.polyline_spin, self.min_area_spin):
            spin.valueChanged.connect(lambda *_: on_options())
        opts.addRow("polyline width", self.polyline_spin)
        opts.addRow("minimum region area", self.min_area_spin)
        box.addLayout(opts)

    def fill(self) -> None:
        """List the open dataset's classes, keeping the one chosen for drawing."""
        if (annotator := self._annotator()) is None:
            return
        current = annotator.current_class
        self.class_list.blockSignals(True)
        self.class_list.clear()
        colors = dataset_colors(annotator.session.dataset)
        for i, name in enumerate(annotator.session.dataset.classes):
            item = QListWidgetItem(_swatch(colors[name]), name)
            if i < 9:
                item.setToolTip(f"Alt-{i + 1}")
            self.class_list.addItem(item)
            if name == current:
                self.class_list.setCurrentItem(item)
        self.class_list.blockSignals(False)
        session = annotator.session
        self.attribute_combo.blockSignals(True)
        self.attribute_combo.clear()
        self.attribute_combo.addItems(session.class_attributes())
        self.attribute_combo.setCurrentText(session.dataset.class_attribute)
        self.attribute_combo.blockSignals(False)

    def _attribute_chosen(self, index: int) -> None:
        self._on_attribute(self.attribute_combo.itemText(index))

    def lists(self, names: list[str]) -> bool:
        """Whether every one of ``names`` is in the list."""
        return all(self.class_list.findItems(n, Qt.MatchFlag.MatchExactly) for n in names)

    def _on_class_chosen(self, name: str) -> None:
        if name and (annotator := self._annotator()) is not None:
            annotator.current_class = name

    def choose(self, i: int) -> None:
        if 0 <= i < self.class_list.count():
            self.class_list.setCurrentRow(i)

    def _ask_add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok:
            self.add(name)

    def add(self, name: str) -> None:
        name = name.strip()
        if not name or (annotator := self._annotator()) is None:
            return
        session = annotator.session
        if name not in session.dataset.classes:
            try:
                session.set_classes([*session.dataset.classes, name])
            except BioAnomalyError as exc:  # said in the status, as rename and remove do
                self._on_error(str(exc))
                return
            annotator.autosave()
        self.fill()
        self.choose(session.dataset.classes.index(name))

    def _ask_rename(self) -> None:
        item = self.class_list.currentItem()
        if item is None or self._annotator() is None:
            return
        new, ok = QInputDialog.getText(self, "Rename class", f"New name for {item.text()!r}:")
        if ok:
            self.rename(item.text(), new)

    def rename(self, old: str, new: str) -> None:
        if (annotator := self._annotator()) is None:
            return
        try:
            annotator.rename_class(old, new)
        except BioAnomalyError as exc:
            self._on_error(str(exc))
            return
        annotator.autosave()
        self.fill()

    def remove_current(self) -> None:
        """Remove the chosen class (refused while regions of it exist)."""
        item = self.class_list.currentItem()
        if item is None or (annotator := self._annotator()) is None:
            return
        session = annotator.session
        try:
            session.set_classes([c for c in session.dataset.classes if c != item.text()])
        except BioAnomalyError as exc:
            self._on_error(str(exc))
            return
        if annotator.current_class == item.text():  # it came back with the next shape
            annotator.current_class = (
                session.dataset.classes[0] if session.dataset.classes else FALLBACK_CLASS
            )
        annotator.autosave()
        self.fill()
