"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QScrollArea,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..core.model import BioAnomalyError

#: Export formats the widgets offer: label -> (format, file pattern; None: a folder).
EXPORTS = {
    "VIA 2 project (.json)": ("via-project", "JSON (*.json)"),
    "VIA 2 export (.json)": ("via", "JSON (*.json)"),
    "COCO (.json)": ("coco", "JSON (*.json)"),
    "Label masks (folder)": ("masks", None),
    "ImageJ/Fiji ROI sets (folder)": ("imagej", None),
    "QuPath GeoJSON (folder)": ("geojson", None),
}


def ask_export_target(parent: QWidget, label: str) -> tuple[str, str] | None:
    """Ask where to export in the format of :data:`EXPORTS` ``label``: (format, path),
    or None when the user cancels."""
    from qtpy.QtWidgets import QFileDialog

    fmt, pattern = EXPORTS[label]
    if pattern is None:
        out = QFileDialog.getExistingDirectory(parent, f"Export {fmt} files into folder")
    else:
        out, _ = QFileDialog.getSaveFileName(parent, "Export annotations", "", pattern)
    return (fmt, out) if out else None


def export_dataset(dataset: Any, fmt: str, path: Any) -> tuple[list[Any], list[str]]:
    """Export ``dataset`` (reading image sizes first where the format needs them):
    the files written and the warnings (see :func:`annotations.save`)."""
    from ..core import annotations

    if fmt in ("coco", "masks", "imagej", "geojson") and any(
        im.shape is None for im in dataset.images
    ):
        annotations.attach_images(dataset)
    return annotations.save(dataset, path, fmt)


def export_and_say(
    dataset: Any,
    fmt: str,
    path: Any,
    info: Callable[[str], None],
    error: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
) -> list[Any]:
    """Export ``dataset`` (:func:`export_dataset`), then say what was written (``info``),
    or, where the export warned (what a format leaves out, files set aside), that and the
    warnings (``warn``, their count on the first line: a notification shows that line
    alone, which a long path had filled); or why nothing was written (``error``). Returns
    the files written."""
    from ..core.model import BioAnomalyError
    from ..core.text import counted

    try:
        written, warnings = export_dataset(dataset, fmt, path)
    except (BioAnomalyError, OSError, ValueError) as exc:
        error(f"export failed: {exc}")
        return []
    where = written[0] if len(written) == 1 else Path(path)
    to = "to" if len(written) == 1 else "into"
    wrote = (f"Wrote {counted(len(written), 'file')} ({len(dataset.images)} images, "
             f"{len(dataset.regions)} regions) {to}")  # fmt: skip
    if not warnings or warn is None:
        text = f"{wrote} {where}"
        if warnings:
            text += f"\n{counted(len(warnings), 'warning')}:\n" + "\n".join(warnings[:10])
        info(text)
        return written
    more = f"\n... and {len(warnings) - 10} more" if len(warnings) > 10 else ""
    warn(f"{wrote} {Path(where).name}, with {counted(len(warnings), 'warning')} (in "
         f"{Path(where).parent}):\n" + "\n".join(warnings[:10]) + more)  # fmt: skip
    return written


def scrolled_layout(widget: QWidget) -> QVBoxLayout:
    """The layout for ``widget``'s content, in a scroll area that fills it: a dock smaller
    than the content scrolls it, rather than squeezing the docks beside it, making the
    window taller than the screen or cutting off its right side."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    inner = QWidget()
    scroll.setWidget(inner)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


def slot(action: Callable[[], object]) -> Callable[[], None]:
    """``action`` as a Qt slot that returns nothing: the widgets' actions return whether
    they started (for their callers and tests), PyQt5 declares slots as returning None."""

    def call() -> None:
        action()

    return call


def headers(table: QTableView) -> tuple[QHeaderView, QHeaderView]:
    """A table's horizontal and vertical headers (Qt makes both with the table)."""
    horizontal, vertical = table.horizontalHeader(), table.verticalHeader()
    if horizontal is None or vertical is None:
        raise RuntimeError("a Qt table view without headers")
    return horizontal, vertical


def button_row(buttons: Iterable[tuple[Any, ...]]) -> QHBoxLayout:
    """A row of push buttons ``(text, slot[, tooltip])``, each calling its slot when
    clicked."""
    row = QHBoxLayout()
    for text, action, *tip in buttons:
        button = QPushButton(text)
        button.clicked.connect(slot(action))
        if tip:
            button.setToolTip(tip[0])
        row.addWidget(button)
    return row


def with_browse(field: QWidget, action: Callable[[], object]) -> QHBoxLayout:
    """``field`` followed by a small "..." button that calls ``action``."""
    row = QHBoxLayout()
    button = QPushButton("...")
    button.setMaximumWidth(30)
    button.clicked.connect(slot(action))
    row.addWidget(field, 1)
    row.addWidget(button)
    return row


def compact_dock_tabs(widget: QWidget, width: int = 470) -> None:
    """Let the tab bars of tabbed dock widgets shrink (elided titles, scroll buttons),
    so that three plugin tabs with long titles do not widen the dock area, and give
    the widget's dock ``width`` pixels."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMainWindow, QTabBar

    window = widget.window()
    if window is None:
        return
    for bar in window.findChildren(QTabBar):
        bar.setElideMode(Qt.TextElideMode.ElideRight)
        bar.setUsesScrollButtons(True)
        bar.setExpanding(False)
    dock = dock_of(widget)
    if dock is not None and isinstance(window, QMainWindow):
        window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)


def dock_of(widget: QWidget) -> Any:
    """The QDockWidget ``widget`` sits in, or None."""
    from qtpy.QtWidgets import QDockWidget

    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    return dock


def fit_dock(widget: QWidget) -> None:
    """Widen ``widget``'s dock to the width its content needs where napari docked it
    narrower (the Plugins menu did: the Annotate widget's right side was cut off behind a
    horizontal scroll bar, its labels wrapped at the hidden width and cut), at most half
    the window's width; a dock as wide or wider stays as it is."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMainWindow, QScrollArea

    dock, window = dock_of(widget), widget.window()
    if dock is None or not isinstance(window, QMainWindow):
        return
    scroll = widget.findChild(QScrollArea)
    content = scroll.widget() if scroll is not None else None
    needed = (content or widget).minimumSizeHint().width()
    if scroll is not None:  # its vertical scroll bar takes a width of its own
        bar = scroll.verticalScrollBar()
        needed += (bar.sizeHint().width() if bar is not None else 0) + 2 * scroll.frameWidth()
    needed += max(dock.width() - widget.width(), 0)  # the dock's own frame
    target = min(needed, max(dock.width(), window.width() // 2))
    if target > dock.width():  # never narrower (a dock widened past half the window stays)
        window.resizeDocks([dock], [target], Qt.Orientation.Horizontal)


def conflict_box(parent: QWidget, exc: Exception) -> tuple[Any, dict[str, Any]]:
    """The dialog of :func:`ask_conflict` and its buttons by choice (not shown yet)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setText(str(exc))
    role = QMessageBox.ButtonRole
    if getattr(exc, "gone", False):  # moved or deleted: there is no "theirs" to reload
        box.setWindowTitle("Annotation file moved or deleted")
        buttons = {"overwrite": box.addButton("Save mine there again", role.AcceptRole)}
    else:
        box.setWindowTitle("Annotation file changed on disk")
        buttons = {
            "reload": box.addButton("Reload theirs (drop my changes)", role.DestructiveRole),
            "overwrite": box.addButton(
                "Keep mine (theirs kept as an earlier version)", role.AcceptRole
            ),
            "copy": box.addButton("Save mine as a copy, then reload theirs", role.ActionRole),
        }
    buttons["later"] = box.addButton("Decide later", role.RejectRole)
    return box, buttons


def save_failed_box(parent: QWidget, exc: Exception) -> tuple[Any, dict[str, Any]]:
    """The dialog of :func:`ask_save_failed` and its buttons by choice (not shown yet)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle("Annotations not saved")
    box.setText(f"{exc}\n\nYour changes are kept in memory, and every edit tries to save "
                "them again. Save a copy of all the annotations to another file now?")  # fmt: skip
    role = QMessageBox.ButtonRole
    buttons = {
        "copy": box.addButton("Save a copy as...", role.AcceptRole),
        "later": box.addButton("Keep trying", role.RejectRole),
    }
    return box, buttons


def ask_save_failed(parent: QWidget, exc: Exception, annotator: Any) -> Path | None:
    """A save failed (a read-only folder, a full disk): offer to write every annotation,
    unsaved changes included, to a file the user chooses (the session keeps its own file
    and goes on trying it). Returns the copy written, or None; says what happened."""
    from napari.utils.notifications import show_error, show_info
    from qtpy.QtWidgets import QFileDialog

    box, buttons = save_failed_box(parent, exc)
    box.exec_() if hasattr(box, "exec_") else box.exec()
    if box.clickedButton() is not buttons["copy"]:
        return None
    session = annotator.session
    suggested = str(Path.home() / (session.path.stem + ".copy.json"))
    while True:
        path, _ = QFileDialog.getSaveFileName(parent, "Save a copy of the annotations as",
                                              suggested, "VIA project (*.json)")  # fmt: skip
        if not path:
            return None
        try:
            written = session.save_copy(path)
        except (OSError, BioAnomalyError) as err:
            show_error(f"copy not saved: {err}")
            suggested = path
            continue
        show_info(f"every annotation, unsaved changes included, is in {written}; "
                  f"{session.path.name} is saved again at the next edit that can be")  # fmt: skip
        return written


def ask_conflict(parent: QWidget, exc: Exception, annotator: Any) -> str:
    """Ask what to do when the annotation file changed on disk since it was read:
    ``"reload"`` (theirs), ``"overwrite"`` (mine; theirs kept as an earlier version), or
    ``"later"`` (a file moved or deleted: ``"overwrite"`` writes it there again). "Save
    mine as a copy" writes this session to a file the user chooses, then reloads theirs:
    both versions are kept."""
    from qtpy.QtWidgets import QFileDialog

    box, buttons = conflict_box(parent, exc)
    box.exec_() if hasattr(box, "exec_") else box.exec()
    choice = next((k for k, b in buttons.items() if b is box.clickedButton()), "later")
    if choice == "copy":
        session = annotator.session
        suggested = str(session.path.with_name(session.path.stem + ".mine.json"))
        path, _ = QFileDialog.getSaveFileName(parent, "Save my version as", suggested,
                                              "VIA project (*.json)")  # fmt: skip
        if not path:
            return "later"
        session.save_copy(path)
        return "reload"
    return choice


class _QuitGuard(QObject):
    """Asks before napari's window closes with annotations not saved (a conflict answered
    "Decide later", a folder that cannot be written): closing the window calls no dock
    widget's close, and those changes were lost without a word."""

    def __init__(self, viewer: Any, window: QWidget) -> None:
        super().__init__(window)
        self._viewer = weakref.ref(viewer)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() != QEvent.Type.Close or not obj.isVisible():
            return False  # a window never shown (scripts, tests) has nobody to ask
        viewer = self._viewer()
        if viewer is None or not (left := unsaved_annotations(viewer)):
            return False
        if ask_close_unsaved(obj, left):
            return False
        event.ignore()
        return True


def guard_quit(viewer: Any) -> None:
    """Install (once per window) the question of :class:`_QuitGuard` on ``viewer``'s
    main window."""
    from .._workspace import unwrapped

    # a proxy's window is a proxy too: no Qt parent (it raised, and no widget opened
    # from the Plugins menu or `napari-bioanomaly gui`)
    viewer = unwrapped(viewer)
    window = unwrapped(getattr(getattr(viewer, "window", None), "_qt_window", None))
    if not isinstance(window, QWidget) or getattr(window, "_bioanomaly_quit_guard", None):
        return
    guard = _QuitGuard(viewer, window)
    window._bioanomaly_quit_guard = guard
    window.installEventFilter(guard)


def unsaved_annotations(viewer: Any) -> list[str]:
    """The annotation files of ``viewer`` whose changes are still not saved after one more
    try (each annotator saves what is on screen; a conflict asks its question again), and
    the layers of those let go of unsaved (``... (NOT SAVED)``)."""
    from .._workspace import workspace_for

    left = []
    for annotator, _ in list(workspace_for(viewer).views.values()):
        try:
            if annotator.shapes_layer is not None:
                annotator.sync()  # the shapes on screen into the session, then saved
            else:
                annotator.autosave()
        except (BioAnomalyError, OSError):  # a copy refused in the conflict dialog: asked below
            pass
        if annotator.session.dirty:
            left.append(str(annotator.session.path))
    # datasets let go of with changes not saved (another one opened, the widget closed):
    # their layers stay, named so (see Annotator.close)
    left += [f"layer '{layer.name}'" for layer in viewer.layers
             if layer.name.endswith("(NOT SAVED)")]  # fmt: skip
    return left


def ask_close_unsaved(parent: QWidget, paths: list[str]) -> bool:
    """Whether to close napari although the changes of ``paths`` (files, layers) are not
    saved."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Annotations not saved")
    names = "\n".join(paths)
    box.setText(f"Changes not saved (closing napari loses them):\n{names}\n\nTo keep them: "
                "Cancel, then write them elsewhere with Annotate's Export... (VIA 2 "
                "project), or a '(NOT SAVED)' layer with File > Save Selected Layers; a "
                "file changed on disk asks again (keep mine, save mine as a copy) at the "
                "next edit or close.")  # fmt: skip
    role = QMessageBox.ButtonRole
    close = box.addButton("Close and lose them", role.DestructiveRole)
    box.addButton("Cancel", role.RejectRole)
    box.exec_() if hasattr(box, "exec_") else box.exec()
    return box.clickedButton() is close


class PluginWidget(QWidget):
    """A dock widget of the plugin, closed once whichever way it goes: napari closes it,
    or its dock's X takes it out of the window (napari then only takes it out of its
    dock: it stayed alive, hidden, its keys bound, its layers and background work
    going on). :meth:`release` is what closing lets go of; :meth:`alive` says whether
    Qt still has the widget (its window closed deletes it without a close)."""

    def __init__(self) -> None:
        super().__init__()
        self._docked = False
        self._released = False
        self._fitted = False

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._fitted:  # first shown: its dock as wide as its content needs
            self._fitted = True
            self.fit_dock_later()

    def fit_dock_later(self) -> None:
        """:func:`fit_dock` once napari has laid the window out: when first shown, and when
        a dataset shown widens the content (a table's columns); a dock the user narrowed
        later stays as they left it until then."""
        QTimer.singleShot(0, self._fit_dock)

    def _fit_dock(self) -> None:
        if self.alive():
            fit_dock(self)

    def event(self, event: Any) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked and not self._released:  # out of its dock: the dock's X
                QTimer.singleShot(0, self._close_undocked)  # once napari is done with it
        return bool(super().event(event))

    def _close_undocked(self) -> None:
        if not self._released and self.parent() is None:  # not docked again meanwhile
            self.close()

    def closeEvent(self, event: Any) -> None:
        if not self._released:
            self._released = True
            self.release()
        super().closeEvent(event)

    def release(self) -> None:
        """Let go of what the widget holds (keys, layers, signals); once."""

    def alive(self) -> bool:
        """Whether the widget is still there to show something (not closed, and not
        deleted by Qt with its window)."""
        try:
            self.objectName()
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
            return False
        return not self._released
