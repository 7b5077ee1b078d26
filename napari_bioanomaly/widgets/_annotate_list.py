"""The Annotate widget's image list: table model, filters, the list panel, and the
quality-check job (no edits: flags are returned to the widget)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.model import ImageRecord
from ..core.quality import QC_ATTRIBUTE, among_peers, check_file, flags_from_text, flags_of
from ..core.session import STATUSES, AnnotationSession
from ._common import headers

SORT_ROLE = Qt.ItemDataRole.UserRole + 7


def _swatch(color: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(color))
    return QIcon(pix)


def _table(titles: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(titles))
    table.setHorizontalHeaderLabels(titles)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    horizontal, vertical = headers(table)
    vertical.setVisible(False)
    horizontal.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    horizontal.setStretchLastSection(True)
    return table


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by number."""

    def __init__(self, value: float, text: str | None = None) -> None:
        super().__init__(text if text is not None else f"{value:g}")
        self.setData(Qt.ItemDataRole.UserRole, value)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a = self.data(Qt.ItemDataRole.UserRole)
        b = other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return super().__lt__(other)


def quality_job(
    root: Path, records: list[tuple[int, ImageRecord]], groups: list[object] | None = None
) -> Generator[tuple[int, tuple[str, ...] | None], None, None]:
    """The worker of "Check quality" (no edits): reads each image, yielding ``(index,
    None)`` as it goes, then every image's flags, out of focus judged among them all (among
    those of its group, a value per record: its cell line)."""
    reports = []
    for index, record in records:
        reports.append(check_file(root, record))
        yield index, None
    checked, _ = among_peers(reports, groups)
    for (index, _), report in zip(records, checked, strict=True):
        yield index, flags_of(report)


class ImageListModel(QAbstractTableModel):
    """The dataset's images as table rows, read live from the session (no copies)."""

    FIXED = ("#", "image", "status", "regions", "QC")

    def __init__(self) -> None:
        super().__init__()
        self.session: AnnotationSession | None = None
        self.attr_keys: list[str] = []

    def set_session(self, session: AnnotationSession) -> None:
        self.beginResetModel()
        self.session = session
        keys: list[str] = []
        for im in session.dataset.images:
            keys.extend(k for k in im.file_attributes if k not in keys and k != QC_ATTRIBUTE)
        self.attr_keys = keys[:4]
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if self.session is None or parent.isValid() else len(self.session.dataset.images)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(self.FIXED) + len(self.attr_keys)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return [*self.FIXED, *self.attr_keys][section]
        return None

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if self.session is None or not index.isValid():
            return None
        row, col = index.row(), index.column()
        im = self.session.dataset.images[row]
        if role in (Qt.ItemDataRole.DisplayRole, SORT_ROLE):
            if col == 0:
                return row + 1
            if col == 1:
                return im.filename
            if col == 2:
                return self.session.status(row)
            if col == 3:
                return len(im.regions)
            if col == 4:
                return str(im.file_attributes.get(QC_ATTRIBUTE, ""))
            return str(im.file_attributes.get(self.attr_keys[col - 5], ""))
        if col == 4 and role == Qt.ItemDataRole.ForegroundRole:
            flags = flags_from_text(im.file_attributes.get(QC_ATTRIBUTE))
            return QColor("#d55e00") if flags else None
        if col == 2 and im.filename in self.session.problems:
            if role == Qt.ItemDataRole.ToolTipRole:
                return self.session.problems[im.filename]
            if role == Qt.ItemDataRole.ForegroundRole:
                return QColor("#d55e00")
        return None

    def refresh(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))


#: Choices of the image list's quality filter.
QC_FILTERS = ("any quality", "QC flagged", "QC ok", "QC not checked")


class ImageFilter(QSortFilterProxyModel):
    """Rows whose text contains the filter text and whose status and QC state match."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.status = "all"
        self.qc = QC_FILTERS[0]
        self.setSortRole(SORT_ROLE)

    def set_filter(self, text: str, status: str, qc: str = QC_FILTERS[0]) -> None:
        self.text, self.status, self.qc = text.strip().lower(), status, qc
        self.invalidateFilter()

    def _qc_matches(self, value: str) -> bool:
        if self.qc == QC_FILTERS[0]:
            return True
        flags = flags_from_text(value)
        if self.qc == "QC not checked":
            return flags is None
        if flags is None:
            return False
        return bool(flags) == (self.qc == "QC flagged")

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        model = self.sourceModel()
        if model is None:
            return True
        values = [
            str(model.data(model.index(row, c, parent), Qt.ItemDataRole.DisplayRole)).lower()
            for c in range(model.columnCount())
        ]
        if self.status != "all" and values[2] != self.status:
            return False
        if not self._qc_matches(values[4]):
            return False
        return not self.text or any(self.text in v for v in values)


class ImageListPanel(QGroupBox):
    """The dataset's images: text, status and QC filters, the sortable table, previous /
    next and the quality check. The Annotate widget connects the signals."""

    def __init__(self) -> None:
        super().__init__("Images")
        box = QVBoxLayout(self)
        filters = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("filter: name or attribute")
        self.status_filter = QComboBox()
        self.status_filter.addItems(["all", *STATUSES])
        self.qc_filter = QComboBox()
        self.qc_filter.addItems(QC_FILTERS)
        self.qc_filter.setToolTip("show images by their quality-control flags")
        box.addWidget(self.filter_edit)  # the text filter gets the whole width
        filters.addWidget(self.status_filter)
        filters.addWidget(self.qc_filter)
        box.addLayout(filters)
        self.image_model = ImageListModel()
        self.image_proxy = ImageFilter()
        self.image_proxy.setSourceModel(self.image_model)
        self.image_table = QTableView()
        self.image_table.setModel(self.image_proxy)
        # dataset order until the user clicks a column header (no sort pass on open)
        horizontal, vertical = headers(self.image_table)
        horizontal.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.image_table.setSortingEnabled(True)
        self.image_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.image_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        vertical.setVisible(False)
        horizontal.setStretchLastSection(True)
        horizontal.setResizeContentsPrecision(100)  # rows looked at
        self.image_table.setMinimumHeight(220)
        box.addWidget(self.image_table)
        nav = QHBoxLayout()
        self.prev_button = QPushButton("< Previous")
        self.next_button = QPushButton("Next >")
        self.qc_button = QPushButton("Check quality")
        self.qc_button.setToolTip(
            "flag images that are uniform, binary (a mask), dim, saturated or out of focus; "
            "the flags are saved with the annotations (file attribute qc), can be filtered, "
            "and Train can leave flagged images out; click again to stop a running check"
        )
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.qc_button)
        box.addLayout(nav)
        # shown while the quality check reads the images (its flags come once all are read)
        self.qc_progress = QProgressBar()
        self.qc_progress.setFormat("quality check: %v of %m images read")
        self.qc_progress.setVisible(False)
        box.addWidget(self.qc_progress)
