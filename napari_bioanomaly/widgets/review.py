"""The Review dock widget: predictions (red) over ground truth (green), live tables,
corrections.

What is reviewed, scored and corrected is a :class:`~napari_bioanomaly.core.review.
ReviewSession` (no GUI); the layers are :class:`~napari_bioanomaly._review_layers.
ReviewLayers` and the ground truth's :class:`~napari_bioanomaly._annotator.Annotator`
(shared with the Annotate widget when it has the file open); the tables are the panels
of :mod:`._review_panels`. This class wires them together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

from .._annotator import Annotator
from .._review_layers import GT_COLOR, ReviewLayers
from .._workspace import (
    bind_keys,
    release_annotator,
    shared_annotator,
    unbind_keys,
    workspace_for,
)
from ..core.evaluate import ImageScore, Report, empty_note, empty_truth_note
from ..core.fileio import DiskChanged, WriteError
from ..core.model import BioAnomalyError
from ..core.review import ReviewSession, predictions_path
from ..core.session import AnnotationSession
from ..core.text import counted
from ._common import (
    EXPORTS,
    PluginWidget,
    ask_conflict,
    ask_export_target,
    ask_save_failed,
    button_row,
    export_dataset,
    guard_quit,
    scrolled_layout,
    slot,
    with_browse,
)
from ._launch import error_text, launch
from ._review_jobs import ReviewJobs
from ._review_panels import (
    PROPOSE_TIP,
    LayerControls,
    ReviewTabs,
    labelled_slider,
    slider_row,
)
from ._status_label import StatusLabel

__all__ = ["ReviewWidget", "predictions_path"]


#: Keyboard shortcuts bound on the viewer while a review is open: (napari key, what it does).
SHORTCUTS = [
    ("Alt-A", "accept the selected predictions"),
    ("Alt-X", "reject the selected predictions"),
    ("Alt-E", "next image with a miss or a false alarm"),
    ("Alt-M", "mark the image reviewed"),
    ("PageDown / PageUp", "next / previous image"),
]


class ReviewWidget(PluginWidget):
    """Compare predictions with ground truth image by image, and correct them."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        guard_quit(napari_viewer)  # asks before napari closes with annotations not saved
        self.annotator: Annotator | None = None
        #: the open running in the background (see open_in_background), None when none,
        #: and the worker of the last one
        self._opening: object | None = None
        self._open_worker: Any = None
        self._open_cancel = threading.Event()  # set: the open in the background stops
        self.review: ReviewSession | None = None
        self.layers = ReviewLayers(napari_viewer)
        #: regions smaller than this are not proposed (the model's operating point's)
        self.proposal_min_area = 16.0
        #: said under the summary of the open review (see :meth:`open`)
        self.review_note = ""
        #: the images the open review was asked for (see :meth:`open`)
        self._review_images: list[str] | None = None
        #: the open review's scores, as the summary says them (messages go under them)
        self._scores_text = ""
        #: the image a message under the scores is about (its file cannot be read, its
        #: map is corrupt, ...): the message goes when another image is shown
        self._message_image: str | None = None
        self._build()
        self.jobs = ReviewJobs(
            self.workspace, self.summary.setText, self._after_job, self._set_proposal_point,
            [self.train_button, self.predict_button, self.point_button], self.stop_button,
            lambda path: self.model_edit.setText(str(path)),
        )  # fmt: skip
        self.workspace.job_changed.connect(self.jobs.on_workspace_job)
        self.jobs.on_workspace_job(self.workspace.job, "")  # opened while another job runs
        # the fields start at what the other widgets opened and trained, and follow them
        self._suggested: dict[int, str] = {}
        self.workspace.changed.connect(self._on_workspace_changed)
        self._on_workspace_changed("annotations_path")
        self._on_workspace_changed("model_path")

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        layout = scrolled_layout(self)  # docked beside Annotate and Train, it scrolls
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
        open_button.clicked.connect(self._open_fields)
        self.predict_button = QPushButton("Predict && review")
        self.predict_button.setToolTip(
            "predict every ground-truth image with the model, then review"
        )
        self.predict_button.clicked.connect(slot(self.predict_and_review))
        self.train_button = QPushButton("Train && review")
        self.train_button.setToolTip(
            "train on the training split of the ground truth, predict the validation images, "
            "and review them"
        )
        self.train_button.clicked.connect(slot(self.train_and_review))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip(
            "Stop the running job after its current step or image: training ends with its "
            "best model so far (Train & review goes on to review the validation images with "
            "it; Stop again to skip that), prediction reviews the images it predicted, "
            "Choose point leaves the model file as it was"
        )
        self.stop_button.clicked.connect(slot(self.stop))
        for button in (open_button, self.predict_button, self.train_button, self.stop_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.tta_combo = QComboBox()
        for text, value in (("as the model chose on validation", "auto"),
                            ("always", "yes"), ("never", "no")):  # fmt: skip
            self.tta_combo.addItem(text, value)
        self.tta_combo.setToolTip(
            "Whether Predict & review averages each image's eight flips and 90-degree "
            "rotations (test-time augmentation: 8x the prediction time), with regions cut at "
            "the operating point the model chose on averaged validation maps. 'As the model "
            "chose': where that point beat the plain one on the model's validation images "
            "by 0.01 (on 20 regions or more; training chooses it when that is cheap, else "
            "choose-point --tta). Where it chose them: NEU-Seg steel defects +0.01 to "
            "+0.05 instance F1, CrackForest cracks +0.04 pixel F1; KolektorSDD, where they "
            "lose, leaves them off (docs/benchmarks.md). "
            "As predict --tta auto|yes|no."
        )
        tta_row = QHBoxLayout()
        tta_row.addWidget(QLabel("flips and rotations (TTA):"))
        tta_row.addWidget(self.tta_combo, 1)
        layout.addLayout(tta_row)
        point_row = QHBoxLayout()
        point_row.addWidget(QLabel("operating point on"))
        self.point_on = QComboBox()
        for text, value in (("its validation images", "validation"),
                            ("every annotated image", "all")):  # fmt: skip
            self.point_on.addItem(text, value)
        self.point_on.setToolTip(
            "The images to choose the model's threshold, minimum areas, minimum peak and "
            "class votes on, from the ground-truth file: the validation images of the run "
            "that trained it (found again from its settings and seed), or every annotated "
            "image (e.g. your own images of a new cell line)."
        )
        self.point_tta = QCheckBox("for TTA")
        self.point_tta.setToolTip(
            "Choose the point for flips and rotations (on maps averaged over the 8 of "
            "them), kept only where it beats the plain point there by 0.005 on 20 regions "
            "or more; with a gain of 0.01, Predict & review then uses TTA 'as the model "
            "chose'."
        )
        self.point_button = QPushButton("Choose point")
        self.point_button.setToolTip(
            "Choose the model's operating point again and write it into the model file (the "
            "previous file kept as .bak), in the background. As napari-bioanomaly "
            "choose-point."
        )
        self.point_button.clicked.connect(slot(self.choose_point))
        for combo in (self.tta_combo, self.point_on):  # narrower than their longest item:
            combo.setSizeAdjustPolicy(  # the rows fit a dock of 470 px, as Annotate's
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(10)
        point_row.addWidget(self.point_on, 1)
        layout.addLayout(point_row)
        point_row = QHBoxLayout()  # a second row: one would not fit a dock of 470 px
        point_row.addStretch(1)
        point_row.addWidget(self.point_tta)
        point_row.addWidget(self.point_button)
        layout.addLayout(point_row)
        self.iou_slider, label = labelled_slider(50, "IoU threshold")
        layout.addLayout(slider_row(self.iou_slider, label))
        # every prediction counts, as in evaluate (its --score is 0 by default): a predictions
        # file holds what the model outlined at its own point, often under 0.5 (0.2 on cracks)
        self.score_slider, label = labelled_slider(0, "score threshold")
        layout.addLayout(slider_row(self.score_slider, label))
        for slider in (self.iou_slider, self.score_slider):
            slider.valueChanged.connect(lambda _v: self.refresh())
        controls = LayerControls()
        for name in (
            "show_gt",
            "show_pred",
            "fill",
            "opacity",
            "show_heat",
            "heat_slider",
            "peak_box",
            "propose_button",
        ):
            setattr(self, name, getattr(controls, name))  # as tests and scripts know them
        self.show_gt.toggled.connect(
            lambda on: self.layers.set_visible(self.annotator and self.annotator.shapes_layer, on)
        )
        self.show_pred.toggled.connect(lambda on: self.layers.set_visible(self.pred_layer, on))
        self.fill.toggled.connect(self._restyle)
        self.opacity.valueChanged.connect(self._restyle)
        self.show_heat.toggled.connect(lambda _on: self._show_heatmap())
        self.propose_button.clicked.connect(self.propose)
        layout.addWidget(controls)
        # scores and messages wrap between words, never inside a number
        self.summary = StatusLabel("Open ground truth and predictions to review.")
        layout.addWidget(self.summary)
        self.tabs = ReviewTabs(self.report)
        self.table_panel, self.image_panel, self.class_panel = (
            self.tabs.table_panel,
            self.tabs.image_panel,
            self.tabs.class_panel,
        )
        self.table_panel.image_clicked.connect(self._go_to)
        self.table_panel.error_clicked.connect(self.layers.zoom_to)
        layout.addWidget(self.tabs)
        rows = [
            button_row([
                ("Accept selected", self.accept_selected,
                 "Copy the selected predictions into the ground truth (Alt-A)"),
                ("Reject selected", self.reject_selected,
                 "Remove the selected predictions (Alt-X)"),
                ("Accept all", self.accept_all, "Accept every prediction shown on this image"),
            ]),
            button_row([
                ("Next with errors", self.next_with_errors,
                 "The next image with a miss or a false alarm at these thresholds (Alt-E)"),
                ("Mark reviewed", self.mark_reviewed, "This image's status: reviewed (Alt-M)"),
            ]),
            button_row([
                ("Export table...", self._ask_export_table,
                 "Write the per-image table, at these thresholds, as CSV"),
                ("Export corrected...", self._ask_export_corrected,
                 "Write the corrected ground truth as VIA, COCO, masks, ROI sets or GeoJSON"),
            ]),
        ]  # fmt: skip
        #: what acts on an open review: enabled only while one is open
        self.review_buttons: list[QPushButton] = [self.propose_button]
        for row in rows:
            layout.addLayout(row)
            widgets = [item.widget() for i in range(row.count()) if (item := row.itemAt(i))]
            self.review_buttons += [w for w in widgets if isinstance(w, QPushButton)]
        self._set_review_enabled(False)
        #: what writes the predictions file: off while it is read-only (ReviewSession.read_only)
        self.writing_buttons = [self.propose_button] + [
            b for b in self.review_buttons if b.text() == "Reject selected"
        ]
        # the panels' parts, as tests and scripts know them
        self.table, self.proxy, self.model = (
            self.table_panel.table,
            self.table_panel.proxy,
            self.table_panel.model,
        )
        self.errors, self.filter_edit = self.table_panel.errors, self.table_panel.filter_edit
        self.image_slider, self.image_text = self.image_panel.slider, self.image_panel.text
        self.curves = self.image_panel.curves
        self.class_table, self.agreement_text = self.class_panel.table, self.class_panel.agreement

    def _suggest(self, edit: QLineEdit, path: Path | None) -> None:
        """Fill ``edit`` with ``path`` where it is empty or holds what was suggested
        before: what the user typed, or the file a review opened, stays."""
        text = edit.text().strip()
        if path is None or (text and text != self._suggested.get(id(edit))):
            return
        edit.setText(str(path))
        self._suggested[id(edit)] = str(path)

    def _on_workspace_changed(self, name: str) -> None:
        """A dataset was shown (by the Annotate widget; opened again too): its annotation
        file is the ground truth to review; a model was trained (by the Train widget): the
        model to predict with."""
        if name == "annotations_path":
            self._suggest(self.gt_edit, self.workspace.annotations_path)
        elif name == "model_path":
            self._suggest(self.model_edit, self.workspace.model_path)

    def _set_review_enabled(self, on: bool) -> None:
        """Enable the buttons that act on an open review (:attr:`review_buttons`)."""
        for button in self.review_buttons:
            button.setEnabled(on)

    def _with_browse(self, edit: QLineEdit, pattern: str = "JSON (*.json)") -> QHBoxLayout:
        def browse() -> None:
            path, _ = QFileDialog.getOpenFileName(self, "Open", "", pattern)
            if path:
                edit.setText(path)

        return with_browse(edit, browse)

    @property
    def pred_layer(self) -> Any:
        return self.layers.predictions

    @property
    def heat_layer(self) -> Any:
        return self.layers.heatmap

    @property
    def names(self) -> list[str]:
        """The images under review, in dataset order."""
        return [] if self.review is None else self.review.names

    @property
    def image_threshold(self) -> float:
        return self.image_panel.threshold

    @property
    def proposal_threshold(self) -> float:
        return self.heat_slider.value() / 100

    # ------------------------------------------------------------------ opening

    def open(
        self,
        gt_path: str | Path,
        pred_path: str | Path,
        images: list[str] | None = None,
        note: str = "",
    ) -> bool:
        """Open ground truth (editable, autosaved) and predictions for review, and wait
        (:meth:`open_in_background` keeps napari live meanwhile: what the buttons do).

        ``images``: review only these file names (e.g. the validation images);
        default: every image of the ground truth. ``note``: said under the summary while
        this review is open (e.g. the images a stopped prediction did not reach).
        """
        self._opening = None  # one in the background would replace this one: it stops
        self._open_cancel.set()
        try:
            session = self.workspace.session(gt_path)
            review = ReviewSession.open(session, pred_path, images)
        except (BioAnomalyError, OSError) as exc:
            self.summary.setText(f"Cannot open: {error_text(exc)}")
            return False
        self._show(review, images, note)
        return True

    @property
    def opening(self) -> bool:
        """Whether a review is being opened in the background (see :meth:`open_in_background`)."""
        return self._opening is not None

    def open_in_background(
        self,
        gt_path: str | Path,
        pred_path: str | Path,
        images: list[str] | None = None,
        note: str = "",
        then: Callable[[], None] | None = None,
        otherwise: str = "",
    ) -> None:
        """:meth:`open`, reading and scoring in a worker thread (seconds for thousands of
        images: napari stays live, the progress is said under the summary); the review
        on screen stays until the new one is ready. A later open replaces one still
        running. ``then`` runs once it is shown; ``otherwise`` is said under the error
        when it cannot be opened."""
        token = object()
        self._opening = token
        name = Path(pred_path).name

        def failed(exc: BaseException) -> None:
            if self._opening is token and self.alive():
                self._opening = None
                self.summary.setText(f"Cannot open: {error_text(exc)}"
                                     + (f"\n{otherwise}" if otherwise else ""))  # fmt: skip

        try:
            session = self.workspace.opened(gt_path)  # shared; else read in the worker
        except (BioAnomalyError, OSError) as exc:  # a folder that cannot be listed
            failed(exc)
            return
        self.summary.setText(f"Opening {name} for review...")

        def progress(step: tuple[int, int] | str) -> None:
            if self._opening is not token or not self.alive():
                return
            done = step if isinstance(step, str) else (f"{step[0]:,} of {step[1]:,} images "
                                                       "scored")  # fmt: skip
            self.summary.setText(f"Opening {name} for review: {done}...")

        def opened(result: tuple[AnnotationSession, ReviewSession] | None) -> None:
            if result is None or self._opening is not token or not self.alive():
                return  # replaced, or closed meanwhile
            mine, review = result
            try:
                # a correction of the review on screen written meanwhile, or the ground truth
                # read again (reloaded, restored): what was read missed it, read it again
                # (scoring every image here would freeze napari for seconds)
                if review.predictions_changed() or review.ground_truth_replaced():
                    self.open_in_background(gt_path, pred_path, images, note, then, otherwise)
                    return
                if self.workspace.out_of_date(mine):  # saved by the Annotate widget meanwhile
                    self.open_in_background(gt_path, pred_path, images, note, then, otherwise)
                    return
                shared = self.workspace.adopt(mine)
                if shared is not mine:  # the same file opened meanwhile (the Annotate widget),
                    # or open already under another name (an import's, whose edits are not
                    # saved yet): read again on that session, by its own name, in the
                    # background too
                    self.open_in_background(shared.path, pred_path, images, note, then,
                                            otherwise)  # fmt: skip
                    return
                review.adopt()
            except (BioAnomalyError, OSError) as exc:
                failed(exc)
                return
            except BaseException:  # a bug (napari shows it): the widget is not left opening
                self._opening = None
                raise
            self._opening = None
            self._show(review, images, note)
            if then is not None:
                then()

        thresholds = self.iou_slider.value() / 100, self.score_slider.value() / 100
        self._open_cancel.set()  # the open this one replaces stops reading and scoring
        self._open_cancel = threading.Event()
        self._open_worker = launch(
            _opening, (session, gt_path, pred_path, images, thresholds, self._open_cancel),
            on_event=progress, on_returned=opened, on_error=failed,
        )  # fmt: skip

    def _show(self, review: ReviewSession, images: list[str] | None, note: str) -> None:
        """Show an opened review: the ground truth's layers (shared with the Annotate
        widget when it has the file open), the predictions, the tables."""
        session = review.gt
        same = self.annotator is not None and self.annotator.session is session
        if not same:
            self._release()
            # the Annotate widget's annotator when it has this file open: one copy of edits
            annotator = self.annotator = shared_annotator(
                self.viewer, session, self,
                {"image_changed": self._on_image_changed, "regions_changed": self._on_gt_changed,
                 "message": self._on_message, "save_failed": self._on_save_failed,
                 "reloaded": self._on_gt_reloaded,
                 "classes_renamed": self._on_classes_renamed,
                 "on_conflict": lambda exc: ask_conflict(self, exc, annotator),
                 "on_save_failed": lambda exc: ask_save_failed(self, exc, annotator)},
                color=GT_COLOR, name="ground truth (review)",
            )  # fmt: skip
        # reopening the same ground truth (after training) keeps its layers
        self.review = review
        self.review_note = note
        self._review_images = images
        self.gt_edit.setText(str(session.path))  # what is open, however it was opened
        self._suggested.pop(id(self.gt_edit), None)  # it stays: a dataset shown after keeps out
        self.pred_edit.setText(str(review.path))
        self._apply_thresholds()
        self.layers.ensure_predictions(review.path)
        self._bind_keys()
        self._set_review_enabled(True)
        for button in self.writing_buttons:  # Alt-X says why, as a press would
            button.setEnabled(review.read_only is None)
        self.refresh()
        self._on_image_changed(session.current)
        self.fit_dock_later()  # the table's columns widen it

    def _apply_thresholds(self) -> None:
        if self.review is not None:
            self.review.iou_threshold = self.iou_slider.value() / 100
            self.review.score_threshold = self.score_slider.value() / 100

    def _open_fields(self) -> None:
        """The Open button: the files in the fields, each asked for where it is empty (an
        empty ground truth opened the folder napari was started in)."""
        gt, pred = self.gt_edit.text().strip(), self.pred_edit.text().strip()
        if not gt or not pred:
            what = "ground truth annotation file" if not gt else "predictions file"
            self.summary.setText(f"Cannot open: choose the {what} first (type it, or ...).")
            return
        self.open_in_background(gt, pred)

    @property
    def _gt(self) -> Annotator:
        """The ground truth's annotator (one is open while a review is)."""
        if self.annotator is None:
            raise BioAnomalyError("nothing is open for review")
        return self.annotator

    @property
    def _image(self) -> str:
        return self._gt.session.image.filename

    # ------------------------------------------------------------------ tables

    def rows(self) -> list[ImageScore]:
        """Current per-image scores at the sliders' thresholds."""
        if self.review is None:
            return []
        self._apply_thresholds()
        return self.review.rows()

    def report(self) -> Report | None:
        """Everything the tabs show, at the sliders' thresholds."""
        if self.review is None:
            return None
        self._apply_thresholds()
        return self.review.report(self.image_threshold)

    def image_level(self) -> dict[str, Any]:
        """Image-level scores of the images under review at the image threshold."""
        report = self.report()
        return {} if report is None else report.image_level

    def refresh(self) -> None:
        """Rescore every image at the current thresholds (cheap: IoUs are cached; the
        per-class and image-level tabs follow once the sliders rest)."""
        if self.review is None:
            return
        self._apply_thresholds()
        rows, summary, groups = self.review.summaries()
        group_by, scored = self.review.group_by, self.review.scored
        self.table_panel.show_rows(rows, self.review.qc_flags(), group_by, scored)
        lines = []
        if scored:  # nothing annotated: no scores, which would all say the model failed
            lines.append(_summary_line("all", summary))
            lines += [_summary_line(f"{group_by}={k}", v) for k, v in groups.items()]
        if note := self.review.scoring_note():
            lines.append(note)
        lines += self.review.pairing_notes()  # what evaluate says of the two files
        if self.review.read_only:
            lines.append(self.review.read_only)
        if note := empty_note(rows):
            lines.append(note)
        if note := empty_truth_note(rows):
            lines.append(note)
        if self.review_note:  # under the review's summary, not instead of it
            lines.append(self.review_note)
        self._scores_text = "\n".join(lines)
        self.summary.setText(self._scores_text)
        self._fill_predictions()
        self.tabs.changed()

    def fill_classes(self) -> None:
        self.tabs.fill_classes()

    def refresh_image_level(self) -> None:
        self.tabs.refresh_image_level()

    def _go_to(self, filename: str) -> None:
        if self.annotator is not None:
            images = self.annotator.session.dataset.images
            self.annotator.show(next(i for i, im in enumerate(images) if im.filename == filename))

    def _say(self, text: str) -> None:
        """Say ``text`` under the review's scores (they stay), in the message area."""
        scores = self._scores_text if self.review is not None else ""
        self.summary.setText(f"{scores}\n{text}" if scores else text)

    def _ask_export_table(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the table", "", "CSV (*.csv)")
        if path:
            self.export_table(path)

    def export_table(self, path: str | Path) -> Path | None:
        """Write the per-image table (at the current thresholds) as CSV, atomically; says
        how many rows went where, or why none did (None then)."""
        if self.review is None:
            self._say("Export table: nothing is open for review.")
            return None
        self._apply_thresholds()
        try:
            written = self.review.table_csv(path)
        except BioAnomalyError as exc:
            self._say(f"Table not exported: {exc}")
            return None
        self._say(f"Wrote {counted(len(self.review.names), 'row')} to {written}")
        return written

    # ------------------------------------------------------------------ layers

    def _fill_predictions(self) -> None:
        """Show the current image's predictions that pass the score threshold."""
        if self.review is None or self.pred_layer is None:
            return
        name = self._image
        regions = self.review.prediction(name).regions
        if self.layers.show_predictions([regions[i] for i in self.review.shown(name)]):
            # only the predictions' layer changed: the ground truth's keeps its style
            self.layers.restyle(None, self.fill.isChecked(), self.opacity.value() / 100)
        self.table_panel.show_errors(*self.review.errors(name), scored=self.review.scored)

    def _restyle(self, *_: Any) -> None:
        gt = self.annotator.shapes_layer if self.annotator is not None else None
        self.layers.restyle(gt, self.fill.isChecked(), self.opacity.value() / 100)

    def _show_heatmap(self) -> None:
        """Show the current image's anomaly map under the outlines."""
        if self.review is None:
            return
        try:
            heat = self.review.heatmap(self._image)
        except BioAnomalyError as exc:  # a corrupt map: say which, keep reviewing
            self._say_about_image(str(exc))
            heat = None
        if not self.show_heat.isChecked():
            heat = None
        above = [self.pred_layer, self._gt.shapes_layer]
        self.layers.show_heatmap(heat, self.review.heatmaps, above)

    def propose(self) -> int:
        """Replace the current image's predictions by outlines of its anomaly map above
        the proposal threshold; returns how many regions were proposed."""
        if self.review is None:
            return 0
        name = self._image
        try:
            regions = self.review.propose(name, self.proposal_threshold, self.proposal_min_area,
                                          self.proposal_peak)  # fmt: skip
        except DiskChanged as exc:
            self._reopen_changed(exc)
            return 0
        except BioAnomalyError as exc:
            self.summary.setText(str(exc))
            return 0
        if regions is None:
            self.summary.setText(
                f"No anomaly map for {name}: use Predict & review, or predict --heatmaps "
                f"{self.review.heatmaps}"
            )
            return 0
        self.refresh()
        return len(regions)

    def _on_image_changed(self, _index: int) -> None:
        if self._message_image not in (None, self._image):
            # what was said of the image before is not about this one: the scores alone
            self._message_image = None
            self.summary.setText(self._scores_text if self.review is not None else "")
        self._fill_predictions()
        self._restyle()  # the ground truth's new outlines too
        self._show_heatmap()
        self.table_panel.select(self._image)

    def _on_gt_reloaded(self) -> None:
        """The ground truth's file was read again: every image is scored again."""
        if self.review is not None:
            self.review.ground_truth_reloaded()
            self.refresh()
            self._restyle()

    def _on_classes_renamed(self) -> None:
        """A class of the ground truth was renamed (in the Annotate widget): every image's
        regions take their new names (the per-class tab had kept the old one)."""
        if self.review is not None and self.review.relabel():
            self.refresh()

    def _on_gt_changed(self) -> None:
        if self.review is not None and self._image in self.review.caches:
            self.review.rescore(self._image)
            self.refresh()
            self._restyle()  # the ground truth's new outlines too

    # ------------------------------------------------------------------ corrections

    def _move(self, indices: list[int], accept: bool) -> int:
        """Accept (into ground truth) or reject the shown predictions at ``indices``."""
        if self.review is None or not indices:
            return 0
        name = self._image
        if accept:
            # the layer's vertices: the user may have edited a prediction before accepting
            # it; the annotator shows, autosaves and (regions_changed) rescores them, and
            # says when a conflict defers the save. The predictions stay, drawn again as
            # the model outlined them, and count as found.
            polygons = self.layers.polygons()
            self.layers.redraw()
            added = self.review.accept(name, indices, polygons, add=self._gt.add_regions)
            if self.review.confirmed or self.review.kept_out or self.review.empty or not added:
                self.refresh()  # nothing added for those
                self.summary.setText("\n".join([self.summary.text(), *self._not_added()]))
            return len(added)
        try:
            moved = self.review.reject(name, indices)
        except DiskChanged as exc:
            self._reopen_changed(exc)
            return 0
        except (BioAnomalyError, OSError) as exc:  # a read-only folder, a full disk
            self.refresh()
            self._say(f"Not rejected: {exc}")
            return 0
        self.refresh()
        return moved

    def _reopen_changed(self, exc: DiskChanged) -> None:
        """The predictions file changed on disk (a new predict run over it): the review is
        opened again on it, and what happened said (nothing was written over it)."""
        assert self.review is not None
        gt, pred, note = self.review.gt.path, self.review.path, self.review_note
        self.open_in_background(
            gt, pred, self._review_images, note,
            then=lambda: self._say(f"{pred}: changed on disk since the review read it "
                                   "(predictions written again?); nothing was written over "
                                   "it: the review shows it now, redo the correction if it "
                                   "still holds"),
            otherwise=str(exc),  # the review before stays
        )  # fmt: skip

    def _not_added(self) -> list[str]:
        """What the last accept did not add, and why (its counts are the table's)."""
        if self.review is None:
            return []
        confirmed, kept_out, empty = self.review.confirmed, self.review.kept_out, self.review.empty
        said = []
        if confirmed or not (kept_out or empty):
            said.append(f"{counted(confirmed, 'accepted prediction')} matched the ground "
                        "truth already (IoU at the review's threshold): found, not added "
                        "twice")  # fmt: skip
        if kept_out:
            said.append(f"{counted(kept_out, 'accepted prediction')} not added: the ground "
                        "truth has its region already (another prediction's match, or "
                        "accepted before); it matches none, so it stays a false positive "
                        "(reject it to drop it)")  # fmt: skip
        if empty:
            said.append(f"{counted(empty, 'accepted prediction')} not added: it covers no "
                        "pixel of the image (outside it, or a sliver), and is left out of "
                        "the scores")  # fmt: skip
        return said

    def accept_selected(self) -> int:
        return self._move(self.layers.selected(), accept=True)

    def reject_selected(self) -> int:
        return self._move(self.layers.selected(), accept=False)

    def accept_all(self) -> int:
        return self._move(list(range(len(self.layers.polygons()))), accept=True)

    def next_with_errors(self) -> str | None:
        """Show the next image under review (after the one on screen, wrapping) with a
        false negative or a false positive at the current thresholds; its name, or None
        (said) when no image has one."""
        if self.review is None or self.annotator is None:
            return None
        names = self.review.names
        rows = {r.image: r for r in self.review.rows()}
        start = names.index(self._image) + 1 if self._image in names else 0
        for name in names[start:] + names[:start]:
            if rows[name].fn or rows[name].fp:
                if name != self._image:
                    self._go_to(name)
                return name
        self.summary.setText(f"{self.summary.text()}\nNo image has a miss or a false alarm "
                             "at these thresholds.")  # fmt: skip
        return None

    def _bind_keys(self) -> None:
        """The review's shortcuts (:data:`SHORTCUTS`) on the viewer until it closes;
        PageDown / PageUp under the Annotate widget's (its own step, where it is open)."""
        keys = {
            "Alt-A": lambda v: self.accept_selected(),
            "Alt-X": lambda v: self.reject_selected(),
            "Alt-M": lambda v: self.mark_reviewed(),
            "Alt-E": lambda v: self.next_with_errors(),
            "PageDown": lambda v: self._step(1),
            "PageUp": lambda v: self._step(-1),
        }
        bind_keys(self.viewer, self, keys, under=("PageDown", "PageUp"))

    def _step(self, step: int) -> None:
        if self.annotator is not None:
            self.annotator.next(step)

    def mark_reviewed(self) -> None:
        if self.annotator is not None:
            self.annotator.session.set_flag("reviewed", True)
            self.annotator.autosave()
            self.refresh()  # a checked image: what the scores stand on changed

    def _ask_export_corrected(self) -> None:
        from qtpy.QtWidgets import QInputDialog

        if self.annotator is None:
            return
        choice, ok = QInputDialog.getItem(
            self, "Export corrected", "Format:", list(EXPORTS), 0, False
        )
        target = ask_export_target(self, choice) if ok else None
        if target is not None:
            self.export_corrected(*target)

    def export_corrected(self, fmt: str, path: str | Path) -> list[Path]:
        """Export the corrected ground truth (see :data:`annotations.EXPORT_FORMATS`); says
        what was written and left out, or why nothing was, in the message area."""
        if self.annotator is None:
            self._say("Export corrected: nothing is open for review.")
            return []
        self.annotator.sync()
        dataset = self.annotator.session.dataset
        try:
            written, warnings = export_dataset(dataset, fmt, path)
        except WriteError as exc:  # names the file it could not write, and why
            self._say(f"Not exported: {exc}")
            return []
        except OSError as exc:  # about the temporary file beside the target: name the target
            self._say(f"Not exported: cannot write {path}: {exc.strerror or exc}")
            return []
        except (BioAnomalyError, ValueError) as exc:
            self._say(f"Not exported: {exc}")
            return []
        text = (f"Wrote {counted(len(written), 'file')} to {path}: "
                f"{counted(len(dataset.images), 'image')}, "
                f"{counted(len(dataset.regions), 'region')}.")  # fmt: skip
        if warnings:
            text += f"\n{counted(len(warnings), 'warning')}:\n" + "\n".join(warnings[:10])
        self._say(text)
        return written

    # ------------------------------------------------------------------ one click

    @property
    def worker(self) -> Any:
        """The running job's worker (None when idle)."""
        return self.jobs.worker

    @property
    def train_settings(self) -> dict[str, Any]:
        """TrainConfig settings of "Train & review" (default: the Train widget's form)."""
        return self.jobs.train_settings

    @train_settings.setter
    def train_settings(self, settings: dict[str, Any]) -> None:
        self.jobs.train_settings = settings

    def train_and_review(self) -> bool:
        """Train on the training split, predict the validation images, then review them."""
        return self.jobs.train(self.gt_edit.text().strip())

    def predict_and_review(self) -> bool:
        """Predict every ground-truth image with the model (in the background), then review."""
        return self.jobs.predict(
            self.gt_edit.text().strip(),
            self.model_edit.text().strip(),
            tta=self.tta_combo.currentData(),
        )

    def choose_point(self) -> bool:
        """Choose the model's operating point again on the ground truth's images (in the
        background); the model file is rewritten, the previous one kept as .bak."""
        return self.jobs.choose_point(
            self.gt_edit.text().strip(),
            self.model_edit.text().strip(),
            self.point_on.currentData(),
            self.point_tta.isChecked(),
        )

    def stop(self) -> bool:
        """Stop the running job after its current step or image (False: none runs)."""
        return self.jobs.stop()

    def _after_job(self, gt: str, pred_out: Path, names: list[str]) -> None:
        if not self.alive():  # the job saved its files; a closed widget opens no layers
            return
        self.pred_edit.setText(str(pred_out))
        self.open_in_background(gt, pred_out, names, self.jobs.problems_text(len(names)))

    @property
    def proposal_peak(self) -> float | None:
        """The ``min peak`` box's value, where it is above the slider's threshold."""
        peak = round(self.peak_box.value(), 2)
        return peak if peak > self.proposal_threshold else None

    def _set_proposal_point(
        self, threshold: float, min_area: float, min_peak: float | None = None
    ) -> None:
        """Start the proposal controls at a model's operating point, and lower the score
        threshold to its threshold where the user set it higher: every region the model
        predicts counts (a region's score, its mean probability, is above the threshold
        that outlined it), so the table is what ``evaluate`` gives for the predictions."""
        self.heat_slider.setValue(round(threshold * 100))
        self.score_slider.setValue(min(self.score_slider.value(), round(threshold * 100)))
        self.peak_box.setValue(min_peak or 0.0)
        self.proposal_min_area = min_area
        self.propose_button.setToolTip(
            PROPOSE_TIP + f"; regions of at least {min_area:g} px (the model's point)"
        )

    def _on_message(self, text: str) -> None:
        """The ground truth's annotator says something of the image it shows (it cannot be
        read, a stack, regions cut at its edges): said under the scores until another
        image is shown."""
        self._say_about_image(text)

    def _on_save_failed(self, text: str) -> None:
        """A save failed: said under the scores, and kept when another image is shown
        (the edits are not saved until it succeeds)."""
        self._message_image = None
        self._say(text)

    def _say_about_image(self, text: str) -> None:
        """Say ``text``, a message about the image on screen, under the review's scores
        until another image is shown (see :meth:`_on_image_changed`)."""
        self._message_image = self._image if self.annotator is not None else None
        self._say(text)

    def _release(self) -> None:
        """Stop reviewing the open ground truth (saved; closed if no other widget uses it)."""
        if self.annotator is not None:
            release_annotator(self.viewer, self.annotator, self)
            self.annotator = None
            self.review = None
            self._set_review_enabled(False)

    def release(self) -> None:
        """Closed (see :class:`PluginWidget`): the keys let go of, the predictions and the
        anomaly map taken out, the ground truth's layers let go of (saved; closed if no
        other widget uses them)."""
        self._open_cancel.set()
        self.workspace.job_changed.disconnect(self.jobs.on_workspace_job)
        self.workspace.changed.disconnect(self._on_workspace_changed)
        unbind_keys(self.viewer, self)
        self._release()
        self.layers.remove()


def _opening(
    session: AnnotationSession | None,
    gt_path: str | Path,
    pred_path: str | Path,
    images: list[str] | None,
    thresholds: tuple[float, float],
    cancel: threading.Event,
) -> Generator[tuple[int, int] | str, None, tuple[AnnotationSession, ReviewSession] | None]:
    """The worker of :meth:`ReviewWidget.open_in_background`: the ground truth read where
    it is not open yet (``session``), then the predictions read and scored, at the
    sliders' ``(IoU, score)`` thresholds too (the first scores at a score threshold count
    the pixels of every image: 0.6 s of 2,000 images the GUI thread does not spend).
    Yields what it reads (``"reading pred.json, 31 MiB"``: seconds of a large file), then
    ``(images scored, images)``. Ends early, returning None, once ``cancel`` is set
    (another open replaced it)."""
    if session is None:
        yield _reading_text(gt_path)
        session = AnnotationSession.open(gt_path)
        session.encode_ahead()  # its first save (the first accept) as fast as the next
    yield _reading_text(pred_path)
    steps = ReviewSession.opening(session, pred_path, images)
    while not cancel.is_set():
        try:
            yield next(steps)
        except StopIteration as done:
            review: ReviewSession = done.value
            review.iou_threshold, review.score_threshold = thresholds
            review.rows()
            return session, review
    steps.close()
    return None


def _reading_text(path: str | Path) -> str:
    """``"reading pred.json, 31 MiB"`` (a file's name alone where its size is unknown)."""
    path = Path(path)
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    return f"reading {path.name}" + (f", {size / 2**20:.0f} MiB" if size and size >= 2**20 else "")


def _summary_line(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name}: TP {s['tp']} FP {s['fp']} FN {s['fn']}, precision {s['precision']:.3f}, "
        f"recall {s['recall']:.3f}, F1 {s['f1']:.3f}, pixel IoU {s['pixel_iou']:.3f}"
    )
