"""The Annotate dock widget: walk through a dataset, draw anomalies with classes, never lose work.

The widget only collects input and shows state; the work is done by
:class:`napari_bioanomaly._annotator.Annotator` (napari, no Qt) and
:class:`napari_bioanomaly.core.session.AnnotationSession` (no napari).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from qtpy.QtCore import QModelIndex
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from .._annotator import Annotator
from .._workspace import (
    bind_keys,
    release_annotator,
    shared_annotator,
    unbind_keys,
    workspace_for,
)
from ..core.history import replaced_text, versions
from ..core.model import BioAnomalyError, ImageRecord
from ..core.quality import QC_ATTRIBUTE, flags_from_text, flags_to_text, focus_groups
from ..core.session import AnnotationSession, summary
from ..core.text import counted, name_first
from ._annotate_list import ImageListPanel, quality_job
from ._annotate_panels import ClassesPanel, CurrentImagePanel
from ._common import (
    EXPORTS,
    PluginWidget,
    ask_conflict,
    ask_export_target,
    ask_save_failed,
    compact_dock_tabs,
    export_and_say,
    guard_quit,
    scrolled_layout,
)
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


class AnnotateWidget(PluginWidget):
    """Open a dataset, walk through its images, draw anomalies with classes, export."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        guard_quit(napari_viewer)  # asks before napari closes with annotations not saved
        self.annotator: Annotator | None = None
        self._qc_worker: Any = None
        self._qc_session: AnnotationSession | None = None
        self._qc_stopped = False
        self._qc_flagged = 0  # images whose flags the running check has set
        self._last: Path | None = None
        #: the open under way in the background (see open_in_background), its worker
        self._opening: object | None = None
        self._open_worker: Any = None
        self._build()
        last = AnnotationSession.last_opened()
        self.resume_button.setVisible(last is not None)
        if last is not None:
            self.resume_button.setText(f"Resume {last.parent.name}/{last.name}")
            self.resume_button.setToolTip(str(last))
            self._last = last

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        layout = scrolled_layout(self)
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
        self.resume_button.clicked.connect(self._resume)
        layout.addWidget(self.resume_button)
        self.status_label = QLabel("No dataset open.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.save_label = QLabel("")
        self.save_label.setWordWrap(True)
        layout.addWidget(self.save_label)

        self.images_panel = panel = ImageListPanel()
        for name in (
            "filter_edit",
            "status_filter",
            "qc_filter",
            "image_model",
            "image_proxy",
            "image_table",
            "prev_button",
            "next_button",
            "qc_button",
            "qc_progress",
        ):
            setattr(self, name, getattr(panel, name))  # as tests and scripts know them
        self.filter_edit.textChanged.connect(self._apply_filter)
        self.status_filter.currentTextChanged.connect(self._apply_filter)
        self.qc_filter.currentTextChanged.connect(self._apply_filter)
        self.image_table.clicked.connect(self._on_image_clicked)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.qc_button.clicked.connect(self._on_qc_button)
        layout.addWidget(panel)

        self.image_panel = CurrentImagePanel(lambda: self.annotator, self._error)
        self.classes_panel = ClassesPanel(
            lambda: self.annotator, self._error, self._on_options, self.set_class_attribute
        )
        for panel, names in (
            (self.image_panel, ("image_label", "no_anomaly_box", "attr_table", "region_table",
                                "size_warning", "undo_button")),
            (self.classes_panel, ("class_list", "attribute_combo", "polyline_spin",
                                  "min_area_spin")),
        ):  # fmt: skip
            for name in names:
                setattr(self, name, getattr(panel, name))  # as tests and scripts know them
            layout.addWidget(panel)

        export = QGroupBox("Export and earlier versions")
        ebox = QVBoxLayout(export)
        erow = QHBoxLayout()
        ebox.addLayout(erow)
        self.export_combo = QComboBox()
        self.export_combo.addItems(list(EXPORTS))
        export_button = QPushButton("Export...")
        export_button.clicked.connect(self._ask_export)
        self.versions_button = QPushButton("Earlier versions...")
        self.versions_button.setToolTip(
            "Go back to a version of the annotation file kept while it was edited (one every "
            "10 minutes of editing; the current one is kept too)"
        )
        self.versions_button.clicked.connect(self._ask_version)
        erow.addWidget(self.export_combo)
        erow.addWidget(export_button)
        ebox.addWidget(self.versions_button)
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
            self.open_in_background(folder)

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open annotations",
            "",
            "Annotations (*.json *.geojson *.zip *.roi);;VIA or COCO (*.json);;"
            "QuPath GeoJSON (*.geojson *.json);;ImageJ ROI set (*.zip *.roi)",
        )
        if path:
            self.open_in_background(path)

    def open_path(self, path: str | Path) -> bool:
        """Open a dataset folder or annotation file (saving the one open now), and wait
        (:meth:`open_in_background` keeps napari live meanwhile: what the buttons do)."""
        if self._opening is not None:  # one under way in the background: this one replaces it
            self._opening = None
            self._say_current()
        try:
            session = self.workspace.session(path)
        except (BioAnomalyError, OSError) as exc:
            self._error(str(exc))
            return False
        self._show(session)
        return True

    @property
    def opening(self) -> bool:
        """Whether a dataset is being read in the background (:meth:`open_in_background`)."""
        return self._opening is not None

    def open_in_background(self, path: str | Path) -> None:
        """:meth:`open_path`, the file read in a worker thread (a real 31 MiB annotation
        file of 2,000 images held napari 2.1 s; see ``bench_annotate.py --open``): the
        status line says so, the dataset on screen stays (and can be edited) until the new
        one is shown, and a later open replaces one under way. Nothing is read on napari's
        thread, not even to find the folder's annotation file: a dataset open already (in
        the Review widget) is read in the worker too, and the open one shown."""
        token = object()
        self._opening = token
        self.status_label.setText(f"Opening {Path(path).name}...")

        def opened(mine: AnnotationSession) -> None:
            if self._opening is not token or not self.alive():
                return  # replaced, or closed meanwhile
            if self.workspace.out_of_date(mine):  # saved by the Review widget meanwhile
                self.open_in_background(path)
                return
            self._opening = None
            self._show(self.workspace.adopt(mine))  # the one open already, if any

        def failed(exc: BaseException) -> None:
            if self._opening is not token or not self.alive():
                return
            self._opening = None
            self._say_current()
            self._error(error_text(exc))

        self._open_worker = launch(_reading, (path,), on_returned=opened, on_error=failed)

    def _say_current(self) -> None:
        """The status line of the dataset on screen (after an open that did not happen)."""
        if self.annotator is not None:
            self._say_opened()
        else:
            self.status_label.setText("No dataset open.")

    def _show(self, session: AnnotationSession) -> None:
        """Show an opened dataset: its annotator (shared with the Review widget where it
        has the file open), the classes, the image list, the image it was left at."""
        if self.annotator is None or self.annotator.session is not session:
            self._release()
            # one annotator per file and viewer, shared with the Review widget
            self.annotator = shared_annotator(
                self.viewer, session, self,
                {"image_changed": self._on_image_changed, "saved": self._on_saved,
                 "regions_changed": self._on_regions_changed, "message": self._on_message,
                 "save_failed": self._on_save_failed,
                 "on_conflict": lambda exc: ask_conflict(self, exc, self._open),
                 "on_save_failed": lambda exc: ask_save_failed(self, exc, self._open)},
            )  # fmt: skip
        self.annotator.polyline_width = self.polyline_spin.value()
        self.annotator.min_area = self.min_area_spin.value()
        self._bind_keys()
        self._fill_classes()
        self._fill_images()
        self._set_enabled(True)
        self.resume_button.setVisible(False)
        self._on_image_changed(session.current)
        self._say_opened()
        self.fit_dock_later()  # the image list's columns widen it

    def _say_opened(self) -> None:
        """The status line of the open dataset: its file, format, import issues, notes."""
        session = self._session
        report = session.report
        problems = len(session.problems)
        # the folder too: several datasets are all annotations.json
        where = f"{session.path.parent.name}/{session.path.name}"
        text = f"{where}: {counted(len(session.dataset.images), 'image')} ({report.format})"
        notes, links = report.counts()["note"], len(report.outside_links)
        said = [counted(n, what) for n, what in ((len(report.issues) - notes - links,
                                                 "import issue"),
                                                (problems, "missing image"),
                                                (notes, "note")) if n]  # fmt: skip
        if links:  # images the user may expect: said apart (the tooltip names them)
            said.insert(0, f"{counted(links, 'link')} leading outside the folder left out")
        if said:
            text += "; " + ", ".join(said)
        self.status_label.setText(text)
        self.status_label.setToolTip("\n".join([str(session.path), *report.summary(5)[:60]]))

    def _bind_keys(self) -> None:
        """:data:`SHORTCUTS` on the viewer, until this widget closes (see ``bind_keys``)."""
        keys: dict[str, Callable[[Any], object]] = {
            "PageDown": lambda v: self.step(1),
            "PageUp": lambda v: self.step(-1),
            "Alt-N": lambda v: self.no_anomaly_box.toggle(),
            "Alt-Z": lambda v: self.undo_delete(),
        }
        for i in range(9):
            keys[f"Alt-{i + 1}"] = self._class_key(i)
        bind_keys(self.viewer, self, keys)

    def _class_key(self, index: int) -> Callable[[Any], object]:
        return lambda v: self.choose_class(index)

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

    def _on_qc_button(self) -> None:
        if self._qc_worker is None:
            self.check_quality()
        else:
            self.stop_quality()

    def check_quality(self) -> bool:
        """Check every image's quality in a worker thread; flags arrive once every image
        is read (out of focus means blurrier than the others) and are saved with the
        annotations. The progress bar counts the images read; the button stops the check
        meanwhile. Returns False if it cannot start."""
        if self.annotator is None or self._qc_worker is not None:
            return False
        session = self._qc_session = self._session
        root = session.dataset.root or Path(".")
        records = [(i, ImageRecord(im.filename)) for i, im in enumerate(session.dataset.images)]
        groups = focus_groups(session.dataset.images)  # sharpness judged per cell line
        self._qc_stopped, self._qc_flagged = False, 0
        self.qc_button.setText("Stop check")
        self.qc_progress.setRange(0, len(records))
        self.qc_progress.setValue(0)
        self.qc_progress.setVisible(True)
        self._info(f"Checking the quality of {len(records)} images...")
        self._qc_worker = launch(
            quality_job, (root, records, groups), on_event=self._on_quality,
            on_error=lambda exc: self._info(f"Quality check failed: {error_text(exc)}"),
            on_finished=self._on_quality_done,
        )  # fmt: skip
        return True

    def stop_quality(self) -> bool:
        """Stop a running quality check at its next image; returns False if none runs.
        Flags come only once every image is read, so a check stopped while reading sets
        none."""
        if self._qc_worker is None:
            return False
        self._qc_stopped = True
        self.qc_button.setEnabled(False)
        self.qc_button.setText("Stopping...")
        self._qc_worker.quit()
        return True

    def _on_quality(self, item: tuple[int, tuple[str, ...] | None]) -> None:
        index, flags = item
        if flags is None:  # read; flagged when all are (out of focus is among them all)
            self.qc_progress.setValue(self.qc_progress.value() + 1)
            return
        if self.annotator is None or self._session is not self._qc_session:
            return  # another dataset was opened meanwhile: these flags are not its
        session = self._session
        if index >= len(session.dataset.images):
            return
        attrs = dict(session.dataset.images[index].file_attributes)
        attrs[QC_ATTRIBUTE] = flags_to_text(flags)
        session.set_file_attributes(attrs, index)
        self._qc_flagged += 1
        self.image_model.refresh(index)
        if index == session.current:
            self.image_panel.fill_attributes(session)

    def _on_quality_done(self) -> None:
        self._qc_worker = None
        self.qc_button.setText("Check quality")
        self.qc_button.setEnabled(True)
        self.qc_progress.setVisible(False)
        if self.annotator is None:
            return
        if self._session is not self._qc_session:
            if self._qc_session is not None:
                self._info(f"The quality check of {self._qc_session.path} was dropped: another "
                           "dataset was opened before it ended (no flags saved)")  # fmt: skip
            return
        images = self._session.dataset.images
        if self._qc_stopped and self._qc_flagged < len(images):
            if self._qc_flagged:
                self.annotator.autosave()
            done = f"flags set for {self._qc_flagged}" if self._qc_flagged else "no flags set"
            self._info(
                f"Quality check stopped after {self.qc_progress.value()} of {len(images)} "
                f"images read: {done} (out of focus is judged among all the images, so "
                "flags come once every image is read)."
            )
            return
        self.annotator.autosave()
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

    def _resume(self) -> None:
        if self._last is not None:  # the button shows only then
            self.open_in_background(self._last)

    # ------------------------------------------------------------------ navigation

    @property
    def _open(self) -> Annotator:
        """The open dataset's annotator."""
        if self.annotator is None:
            raise BioAnomalyError("no dataset open")
        return self.annotator

    @property
    def _session(self) -> AnnotationSession:
        return self._open.session

    def go_to(self, index: int) -> None:
        if self.annotator is not None and index != self.annotator.index:
            previous = self.annotator.index
            self.annotator.show(index)
            self._refresh_row(previous)

    def step(self, step: int) -> None:
        """The next (``step`` > 0) or previous image of the list as shown: filtered and in
        its sort order (PageDown with a filter moved to images the filter hides)."""
        if self.annotator is None:
            return
        shown = self.visible_images()
        if not shown:
            return
        here = self.annotator.index
        if here in shown:
            target = shown[min(max(shown.index(here) + step, 0), len(shown) - 1)]
        else:  # the image shown is not in the list: its first (last) image
            target = shown[0] if step > 0 else shown[-1]
        self.go_to(target)

    def _on_image_changed(self, index: int) -> None:
        self.image_panel.show_image(self._session, index)
        self._on_regions_changed()
        proxy_index = self.image_proxy.mapFromSource(self.image_model.index(index, 0))
        if proxy_index.isValid():
            self.image_table.selectRow(proxy_index.row())
            self.image_table.scrollTo(proxy_index)
        else:  # filtered out: no other row looks like the image shown
            self.image_table.clearSelection()

    # ------------------------------------------------------------------ regions

    def _on_regions_changed(self) -> None:
        session = self._session
        small = set(self.annotator.small_regions()) if self.annotator else set()
        self.image_panel.show_regions(session, small, self.min_area_spin.value())
        self._refresh_row(session.current)
        self.save_label.setText(self._save_state_text() + self._done_text())
        if not self.classes_panel.lists(session.dataset.classes):
            self._fill_classes()

    def undo_delete(self) -> None:
        self.image_panel.undo_delete()

    # ------------------------------------------------------------------ classes

    def _fill_classes(self) -> None:
        self.classes_panel.fill()

    def choose_class(self, i: int) -> None:
        self.classes_panel.choose(i)

    def add_class(self, name: str) -> None:
        self.classes_panel.add(name)

    def rename_class(self, old: str, new: str) -> None:
        self.classes_panel.rename(old, new)

    def set_class_attribute(self, name: str) -> bool:
        """Read the classes from the region attribute ``name`` (Classes > classes from):
        every region again, the one on screen too; saved with the choice."""
        if self.annotator is None or name == self._session.dataset.class_attribute:
            return False
        report = self.annotator.set_class_attribute(name)
        self._fill_classes()
        self._fill_images()
        self._on_image_changed(self._session.current)
        ds = self._session.dataset
        text = f"classes read from {name!r}: {counted(len(ds.classes), 'class', 'classes')}"
        said = [w for w in report.warnings if "no class attribute" in w]
        self._info("; ".join([text, *said]))
        self._say_opened()  # the import issues of the classes are the new choice's
        return True

    def _remove_class(self) -> None:
        self.classes_panel.remove_current()

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
        if not session.path.exists():  # a folder without annotations: nothing written yet
            return f"new: {session.path.name} is written at the first edit"
        return f"\u2713 saved to {session.path.name}"

    def _done_text(self) -> str:
        counts = summary(self._session)
        done = counts["annotated"] + counts["checked: no anomaly"] + counts["reviewed"]
        return f"  |  {done}/{len(self._session.dataset.images)} images done"

    def _on_saved(self, path: str) -> None:
        saved = f"\u2713 saved {Path(path).name} at {time.strftime('%H:%M:%S')}"
        self.save_label.setText(saved + self._done_text())

    def _ask_export(self) -> None:
        if self.annotator is not None:
            target = ask_export_target(self, self.export_combo.currentText())
            if target is not None:
                self.export(*target)

    def export(self, fmt: str, path: str | Path) -> list[Path]:
        """Save the current image's edits, then export the dataset; shows what was written."""
        self._open.sync()
        if Path(path).resolve() == self._session.path.resolve():
            self._error(f"export failed: {path} is the open dataset's own file (saved there "
                        "already, as a VIA 2 project): choose another file")  # fmt: skip
            return []
        return export_and_say(self._session.dataset, fmt, path, self._info, self._error,
                              self._warn)  # fmt: skip

    def version_choices(self) -> list[tuple[str, Path]]:
        """The kept versions of the open annotation file, newest first, as offered:
        (when, how big; the file)."""
        now = time.time()
        out = []
        for path in versions(self._session.path):
            stat = path.stat()
            minutes = max(0, round((now - stat.st_mtime) / 60))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stat.st_mtime))
            out.append((f"{when} ({minutes} min ago, {stat.st_size / 1024:.0f} KiB)", path))
        return out

    def _ask_version(self) -> None:
        from qtpy.QtWidgets import QInputDialog

        if self.annotator is None:
            return
        choices = self.version_choices()
        if not choices:
            self._info(f"no earlier version of {self._session.path.name} kept yet (one is "
                       "kept every 10 minutes of editing)")  # fmt: skip
            return
        label, ok = QInputDialog.getItem(
            self, "Go back to an earlier version",
            f"Put back this version of {self._session.path.name}?\nThe current one is kept "
            "as a version too, so this can be undone the same way.",
            [text for text, _ in choices], 0, False,
        )  # fmt: skip
        if ok:
            self.restore_version(dict(choices)[label])

    def restore_version(self, version: str | Path) -> bool:
        """Go back to a kept version of the open annotation file (see ``core.history``)."""
        try:
            kept = self._open.restore(version)
        except (BioAnomalyError, OSError) as exc:
            self._error(f"not restored: {exc}")
            return False
        self._fill_classes()  # the version's classes, statuses and regions
        self._fill_images()
        self._on_image_changed(self._session.current)
        self._info(f"{self._session.path.name}: back to {Path(version).name}; "
                   f"{replaced_text(kept)}")  # fmt: skip
        return True

    # ------------------------------------------------------------------ messages

    def _on_message(self, text: str) -> None:
        self._info(text)

    def _on_save_failed(self, text: str) -> None:
        self._error(text)  # an error, not a passing note

    def _info(self, text: str) -> None:
        from napari.utils.notifications import show_info

        show_info(text)

    def _warn(self, text: str) -> None:
        from napari.utils.notifications import show_warning

        show_warning(text)

    def _error(self, text: str) -> None:
        """Say an error in a napari notification, the file's name first (its first line is
        what shows; see :func:`~.core.text.name_first`)."""
        from napari.utils.notifications import show_error

        show_error(name_first(text))

    def compact_dock_tabs(self) -> None:
        """Keep tabbed plugin docks from widening the dock area (see ``_common``)."""
        compact_dock_tabs(self)

    def _release(self) -> None:
        """Stop showing the open dataset (saved; closed if no other widget uses it)."""
        if self.annotator is not None:
            release_annotator(self.viewer, self.annotator, self)
            self.annotator = None

    def release(self) -> None:
        """Closed (see :class:`PluginWidget`): the quality check stopped, the keys and the
        dataset's layers let go of (saved; closed if no other widget uses them)."""
        if self._qc_worker is not None:  # a quality check in flight stops at the next image
            self._qc_worker.quit()
        unbind_keys(self.viewer, self)
        self._release()


def _reading(path: str | Path) -> Generator[None, None, AnnotationSession]:
    """The worker of :meth:`AnnotateWidget.open_in_background`: the dataset read (its
    annotation file parsed, its folder listed; the images are read as they are shown),
    and encoded for its first save."""
    yield  # a generator, as every job of the widgets is
    session = AnnotationSession.open(path)
    session.encode_ahead()  # here, not at the first edit on napari's thread
    return session
