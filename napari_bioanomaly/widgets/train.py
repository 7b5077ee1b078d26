"""The Train dock widget: one click trains a model in a worker thread; napari stays responsive.

The widget collects settings, copies the dataset (read from its annotation file)
on the main thread, and runs :func:`napari_bioanomaly.ml.train.train` in a
napari thread worker. Progress events come back through the worker's
``yielded`` signal and update the plot, the progress bar and the status text on
the main thread. The worker never touches layers or notifications.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .._layers import ROLE_GROUND_TRUTH, TAG
from .._workspace import workspace_for
from ..core import annotations as annotation_files
from ..core.chooser import tta_gain_text, tta_pays
from ..core.model import BioAnomalyError
from ..core.paths import unwritable_reason
from ..core.review import beside
from ..core.text import counted
from ..ml.config import ANOMALY_MODELS, NO_LINES_CHOICE, REGISTRY
from ..ml.settings import BY_NAME, SETTINGS, config_from_form
from ._common import PluginWidget, slot, with_browse
from ._jobs import _num, crossval_job, epoch_text, prime_torch, step_text, training_job
from ._launch import error_text, launch
from ._loss_plot import LossPlot
from ._settings_form import add_setting_rows, field_values, set_field_values, spin
from ._status_label import StatusLabel

if TYPE_CHECKING:  # torch stays unloaded until a run starts
    from ..ml.crossval import CrossvalResult

#: The models of the Train widget, with what they are for (see :data:`~..ml.config.REGISTRY`).
MODEL_HELP = {name: info.help for name, info in REGISTRY.items()}
UNSUPERVISED = ANOMALY_MODELS
SOURCE_HELP = (
    "annotation file of the dataset (the Annotate widget autosaves it); the dataset opened "
    "last in the Annotate or Review widget is chosen as it opens"
)


#: The scores a cross-validation summarises (its keys), as the widget names them.
CV_SCORES = {
    "f1": "F1", "precision": "precision", "recall": "recall", "pixel_iou": "pixel IoU",
    "mean_iou": "mean IoU of the matches", "roc_auc": "image ROC-AUC",
    "average_precision": "image average precision", "kappa": "image kappa",
}  # fmt: skip


def crossval_text(
    folds: list[dict[str, Any]],
    summary: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> str:
    """Per-fold lines, the ``warnings`` of the run (a fold that trains without a class)
    and, at the end, mean +- standard deviation (min-max) of every score the folds define."""
    lines = []
    for f in folds:
        groups = f" ({', '.join(f['groups'])})" if f.get("groups") else ""
        lines.append(
            f"fold {f['fold'] + 1}{groups}: F1 {_num(f['f1'])}, pixel IoU {_num(f['pixel_iou'])}"
            f", image ROC-AUC {_num(f['roc_auc'])}"
            + (" (flips and rotations)" if f.get("tta") else "")
            + (f"; trained without {', '.join(f['trained_without'])}"
               if f.get("trained_without") else "")
        )  # fmt: skip
    lines += [f"Warning: {w}" for w in warnings or []]
    for name, label in CV_SCORES.items():
        s = (summary or {}).get(name)
        if s is not None and s["mean"] is not None:
            lines.append(f"{label}: {s['mean']:.3f} +- {s['std']:.3f} ({s['min']:.3f} to "
                         f"{s['max']:.3f}, {counted(s['folds'], 'fold')})")  # fmt: skip
    return "\n".join(lines)


def _scroll_area() -> tuple[QScrollArea, QVBoxLayout]:
    """A frameless scroll area that its content fills, and the layout of that content: a
    dock smaller than the content scrolls it rather than squeezing the docks beside it."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)
    return area, QVBoxLayout(inner)


def _fitting_height(area: QScrollArea, inner: QWidget) -> int:
    """The height ``area`` needs to show ``inner`` whole without a scroll bar: the
    content's height at the viewport's full width (the wrapped status is as tall as the
    width makes it), plus the area's frame. napari's style sheet gives every widget a
    1 px padding, which a scroll area takes from its viewport: sized to the content
    alone, the area showed a scroll bar with 2 px to scroll after every run."""
    viewport = area.maximumViewportSize()  # without scroll bars, inside the frame
    content = (
        inner.heightForWidth(viewport.width())
        if inner.hasHeightForWidth()
        else inner.sizeHint().height()
    )
    return max(content, inner.minimumSizeHint().height()) + area.height() - viewport.height()


class TrainWidget(PluginWidget):
    """Train a segmentation model on an annotated dataset, in the background."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        self.worker: Any = None
        self._own_job = False  # this widget's job runs (from before its worker exists)
        self.cancel: threading.Event | None = None
        self.result: Any = None
        self._progress: Any = None
        self._last_status = 0.0
        self._hint = ""  # a status of the run worth repeating when it ends
        self._ready = False  # the status says what a run would train on (kept up to date)
        #: the last state whose settings Resume put in the form (see resume), its time, and
        #: the values the fields then held, by setting name
        self._filled: tuple[Path, float, dict[str, Any]] | None = None
        #: the annotations and the model of the run this widget trained last
        self._run: tuple[str, str] | None = None
        self._build()
        # opened alone from the Plugins menu, the dock took the width of the buttons' row
        # squeezed (69 px): unusable until dragged wider
        self.setMinimumWidth(360)
        self.refresh_sources()
        if self.workspace.annotations_path is not None:  # the dataset on screen
            self.use_source(self.workspace.annotations_path)
        self._show_ready()
        self.source.currentTextChanged.connect(self._source_edited)
        self.viewer.layers.events.inserted.connect(lambda e: self.refresh_sources())
        # "Train & review" in the Review widget trains with these settings
        self.workspace.provide_train_config(self.config)
        self.workspace.job_changed.connect(self._on_job_changed)
        self._on_job_changed(self.workspace.job, "")  # opened while another job runs
        # another dataset opened in Annotate (or Review): Train follows it
        self.workspace.changed.connect(self._on_workspace_changed)

    def _build(self) -> None:
        """The settings above, in a scroll area of their own; below them the buttons and the
        run's progress (status, plot), always in view: the plot used to sit under some 25
        rows of settings, only its top edge showing while a run went on. A splitter
        between them moves the line."""
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        outer.addWidget(self.splitter)
        self.settings_area, layout = _scroll_area()
        self.progress_area, progress = _scroll_area()
        self.splitter.addWidget(self.settings_area)
        self.splitter.addWidget(self.progress_area)
        self.splitter.setStretchFactor(0, 1)  # a taller dock shows more settings
        self.splitter.setStretchFactor(1, 0)
        self._split_by_user = False  # once the line is moved by hand, it stays there
        self.splitter.splitterMoved.connect(self._splitter_moved)
        form = QFormLayout()
        self.source = QComboBox()
        self.source.setEditable(True)
        # long paths must not widen the dock
        self.source.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.source.setMinimumContentsLength(12)
        self.source.setToolTip(SOURCE_HELP)
        form.addRow("annotations", with_browse(self.source, self._browse_source))
        self.model = QComboBox()
        for name, tip in MODEL_HELP.items():
            self.model.addItem(name)
            self.model.setItemData(self.model.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.model.setToolTip("\n".join(f"{k}: {v}" for k, v in MODEL_HELP.items()))
        self.model.currentTextChanged.connect(self._model_changed)
        form.addRow("model", self.model)
        self._build_settings(form)
        self.out = QLineEdit()
        self.out.setPlaceholderText("model file (default: beside the annotations)")
        form.addRow("save model to", with_browse(self.out, self._browse_out))
        layout.addLayout(form)
        layout.addStretch(1)
        layout = progress
        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(slot(self.start))
        self.baseline_button = QPushButton("Train baseline")
        self.baseline_button.setToolTip(
            "random forest on multi-scale filter features (two stages): trains in minutes on "
            "a CPU, to compare with deep learning"
        )
        self.baseline_button.clicked.connect(slot(self.start_baseline))
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(
            "go on with a network's run stopped or ended: from its last state (MODEL.last.pt "
            "beside the model file in \"save model to\", else of the run of this window on "
            "these annotations, else the newest beside them), with its own settings; "
            f"{FREE_TEXT} may be changed (raise epochs to train a finished run longer)"
        )  # fmt: skip
        self.resume_button.clicked.connect(slot(self.resume))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.baseline_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        cv = QHBoxLayout()
        self.cv_folds = spin(2, 50, 3)
        self.cv_folds.setToolTip("number of folds")
        self.cv_group = QLineEdit()
        self.cv_group.setPlaceholderText("group by (e.g. cell_line)")
        self.cv_group.setToolTip(
            "file attribute whose values stay in one fold: a cell line is never in "
            "training and test at once"
        )
        self.cv_button = QPushButton("Cross-validate")
        self.cv_button.setToolTip(
            "train one model per fold with these settings, test each on its held-out fold, "
            "and report the mean and spread of the scores"
        )
        self.cv_button.clicked.connect(slot(self.start_crossval))
        cv.addWidget(QLabel("folds"))
        cv.addWidget(self.cv_folds)
        cv.addWidget(self.cv_group, 1)
        cv.addWidget(self.cv_button)
        layout.addLayout(cv)
        self.status = StatusLabel()
        layout.addWidget(self.status)
        self.plot = LossPlot()
        layout.addWidget(self.plot)
        self.cv_result = QLabel("")
        self.cv_result.setWordWrap(True)
        self.cv_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.cv_result)
        layout.addStretch(1)

    def _build_settings(self, form: QFormLayout) -> None:
        """One row per setting of :data:`~..ml.settings.SETTINGS` shown in the form; each
        field is also an attribute named like the setting."""
        self.fields = add_setting_rows(form)
        for name, field in self.fields.items():
            setattr(self, name, field)
        # "auto" epochs take the time budget; a fixed number of epochs does not; the memory
        # bank learns weights only with learned descriptors
        again = lambda *_: self._model_changed(self.model.currentText())  # noqa: E731
        self.epochs.valueChanged.connect(again)
        self.descriptors.currentTextChanged.connect(again)
        again()  # the model chosen at the start greys out its rows too

    def form_values(self) -> dict[str, Any]:
        """What the form holds, by setting name."""
        return field_values(self.fields)

    # ------------------------------------------------------------------ sources

    def refresh_sources(self) -> None:
        """Annotation files of the plugin's ground-truth layers, newest first."""
        current = self.source.currentText()
        files = []
        for layer in reversed(list(self.viewer.layers)):
            tag = layer.metadata.get(TAG) or {}
            path = tag.get("annotation_file")
            if tag.get("role") == ROLE_GROUND_TRUTH and path and path not in files:
                files.append(path)
        known = [self.source.itemText(i) for i in range(self.source.count())]
        for path in files:
            if path not in known:
                self.source.addItem(path)
        if current:
            self.source.setCurrentText(current)

    def _show_ready(self) -> None:
        """Say what Train would train on: the dataset and its annotated regions when the
        dataset is open in this viewer, else the file."""
        source = self.source.currentText().strip()
        session = self._open_session(source) if source else None
        if not source:
            text = ("To train, open a dataset in the Annotate widget (or choose its "
                    "annotation file with ...), then press Train.")  # fmt: skip
        elif session is None:
            text = f"Press Train to train on {source}."
        else:
            images = session.dataset.images
            regions = sum(len(im.regions) for im in images)
            head = f"{session.path}: {counted(len(images), 'image')}"
            text = (
                f"Ready to train on {head}, {counted(regions, 'region')} annotated. Press Train."
                if regions
                else f"{head}, no anomaly annotated yet: annotate some, then press Train "
                "(the memory model trains without)."
            )
        self._set_status(text)
        self._ready = True

    def _source_edited(self, text: str) -> None:
        self.source.setToolTip(f"{text}\n\n{SOURCE_HELP}" if text else SOURCE_HELP)
        if self._ready:  # a run's result or an error stays until the next run
            self._show_ready()

    def _open_session(self, source: str) -> Any:
        """The workspace's session of the annotation file ``source`` (None when it is not
        open in this viewer: reading it here would cost)."""
        try:
            path = Path(source).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        for session in self.workspace.sessions:
            if session.path.resolve() == path:
                return session
        return None

    def showEvent(self, event: Any) -> None:
        """Shown again (its tab raised): the ready status counts the regions annotated since."""
        if self._ready and self.worker is None:
            self._show_ready()
        super().showEvent(event)
        self._fit_progress()  # styled now (napari's style sheet): its status as tall as shown

    def use_source(self, path: str | Path) -> None:
        """Train on the annotation file ``path`` (listed first if it was not listed)."""
        text = str(path)
        if self.source.findText(text) < 0:
            self.source.insertItem(0, text)
        self.source.setCurrentText(text)

    def _on_workspace_changed(self, name: str) -> None:
        """A widget opened another dataset: Train trains on it (a file typed or chosen
        here after that stays until the next dataset is opened)."""
        if name == "annotations_path" and self.workspace.annotations_path is not None:
            self.use_source(self.workspace.annotations_path)

    def _browse_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Annotations to train on", "", "JSON (*.json)")
        if path:
            self.use_source(path)

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the model as", "", "Model (*.pt)")
        if path:
            self.out.setText(path)

    # ------------------------------------------------------------------ running

    def config(self) -> Any:
        values = self.form_values()
        model = self.model.currentText()
        for setting in SETTINGS:  # what does not apply to the model keeps its default
            if setting.name in values and not setting.applies_to(model, values):
                values[setting.name] = setting.to_form(setting.default)
        return config_from_form(model, values)

    def _model_changed(self, name: str) -> None:
        """Grey out what the chosen model, with the form's other values, does not use
        (flags and choices go back to their defaults)."""
        values = self.form_values()
        for setting in SETTINGS:
            field = self.fields.get(setting.name)
            if field is None:
                continue
            field.setEnabled(setting.applies_to(name, values))
            if not setting.applies_to(name) and setting.kind in ("flag", "choice"):
                if isinstance(field, QCheckBox):
                    field.setChecked(bool(setting.to_form(setting.default)))
                else:
                    field.setCurrentText(setting.to_form(setting.default))
        self.budget.setEnabled(self.budget.isEnabled() and self.epochs.value() == 0)

    def start_baseline(self) -> bool:
        """One click for the classic baseline: the random forest with the current settings."""
        self.model.setCurrentText("forest")
        return self.start()

    def _prepare(self) -> tuple[Any, Any, str] | None:
        """Settings, dataset and source for a run, or ``None`` (and why, in the status)."""
        if self.worker is not None:
            return None
        source = self.source.currentText().strip()
        try:
            if not source:
                raise BioAnomalyError("choose the annotation file of a dataset first")
            config = self.config()
            dataset, _ = annotation_files.open_dataset(source)
            prime_torch()
        except (BioAnomalyError, OSError) as exc:
            self._set_status(f"Cannot train: {exc}", error=True)
            return None
        return dataset, config, source

    def start(self) -> bool:
        """Start training in a worker thread; returns False (and says why) if it cannot.

        The model file defaults to ``bioanomaly-<model>.pt`` beside the annotations (in
        the folder, for a folder of images); where an earlier run's model is there, to the
        first free ``bioanomaly-<model>-2.pt``, ``-3.pt``, ... (Train pressed again took the
        earlier model's file, and its last state for resuming: both lost).
        """
        prepared = self._prepare()
        if prepared is None:
            return False
        dataset, config, source = prepared
        typed, default = self.out.text().strip(), beside(source, f"bioanomaly-{config.model}.pt")
        out = Path(typed) if typed else free_model_name(default)
        kept = (
            f" ({default.name} is an earlier run's, kept)" if out != default and not typed else ""
        )
        if not self._writable(out.parent, "the model", 'choose another file in "save model to"'):
            return False
        self.cancel = threading.Event()
        started = self._launch(
            training_job, (dataset, config, out, self.cancel), self._on_event,
            self._on_returned, (config.epochs or 1) * config.steps_per_epoch,
            f"Starting: {len(dataset.images)} images, model {config.model}, saving to "
            f"{out}{kept}",
        )  # fmt: skip
        if started:
            self._run = source, config.model
        return started

    def resumable(self) -> Path | None:
        """The last state Resume goes on from: that of the model file in "save model to"
        (or that file, a ``.last.pt`` itself), else that of the network this window
        trained last on these annotations, else the newest last state of a network
        (``bioanomaly-<model>*.last.pt``, the form's model first) beside them."""
        from ..ml.checkpoint import last_path

        typed = self.out.text().strip()
        if typed:
            path = Path(typed)
            path = path if is_last_state(path) else last_path(path)
            return path if path.is_file() else None
        source = self.source.currentText().strip()
        last = getattr(self.result, "last", None)
        if (last is not None and self._run is not None and self._run[0] == source
                and REGISTRY[self._run[1]].network and Path(last).is_file()):  # fmt: skip
            return Path(last)
        if not source:
            return None
        networks = [name for name, info in REGISTRY.items() if info.network]
        try:
            found = [
                (p.name.startswith(f"bioanomaly-{self.model.currentText()}"), p.stat().st_mtime, p)
                for p in beside(source, "x").parent.glob("bioanomaly-*.last.pt")
                if any(re.match(rf"bioanomaly-{name}[-.]", p.name) for name in networks)
            ]
        except OSError:
            return None
        return max(found)[2] if found else None

    def resume(self) -> bool:
        """Go on with a network's run from its last state (:meth:`resumable`), with the
        settings it was trained with (:func:`..ml.config.resumed`: a resumed run may
        change only how long it goes on and where it runs).

        Where the form shows other settings, it is given the run's first, and the status
        says which and waits for Resume again; what a resumed run may change (epochs,
        time budget, patience, device, point for TTA) is given the run's only where the
        field holds its default (a value typed before pressing Resume is kept, and used).
        Returns whether the run started; says why not otherwise.
        """
        if self.worker is not None:
            return False
        ckpt_path = self.resumable()
        if ckpt_path is None:
            typed = self.out.text().strip()
            where = f"for {typed}" if typed else "beside the annotations"
            self._set_status(f"Nothing to resume: no last state of a network's run "
                             f"(MODEL.last.pt) {where}; press Train to start one.",
                             error=True)  # fmt: skip
            return False
        from ..ml.checkpoint import peek_checkpoint
        from ..ml.config import TrainConfig
        from ..ml.train import refuse_fold_state

        try:
            refuse_fold_state(ckpt_path)
            ckpt = peek_checkpoint(ckpt_path)  # its weights are read, and checked, in the job
            saved = TrainConfig.from_dict(ckpt["config"])
            stamp = ckpt_path.stat().st_mtime
        except (BioAnomalyError, OSError) as exc:
            self._set_status(f"Cannot resume: {error_text(exc)}", error=True)
            return False
        if not REGISTRY[saved.model].network:
            self._set_status(f"Cannot resume {ckpt_path}: {saved.model} is fitted in one pass, "
                             "not trained in epochs; press Train.", error=True)  # fmt: skip
            return False
        put = self._filled[2] if self._filled and self._filled[:2] == (ckpt_path, stamp) else None
        differ, unshown, now = self._settings_of(saved, put)
        put = {**(put or {}), **now}
        self._filled = ckpt_path, stamp, put
        if differ:
            them = "that" if len(unshown) == 1 else "those"
            cannot = (f" The form cannot show {'; '.join(unshown)}: the run goes on with "
                      f"{them}." if unshown else "")  # fmt: skip
            self._set_status(
                f"The form now holds the settings of the run in {ckpt_path.name}, which it goes "
                f"on with (the form had {'; '.join(differ)}).{cannot} Its {FREE_TEXT} may "
                "still be changed. Press Resume to go on."
            )
            return False
        prepared = self._prepare()
        if prepared is None:
            return False
        dataset, asked, source = prepared
        values = self.form_values()
        from_form = {s.key for s in SETTINGS if s.name in values and not (
            s.name in put and _same(s, values[s.name], put[s.name]))}  # fmt: skip
        config = resumed_settings(saved, asked, from_form)
        done = int(ckpt.get("epoch", -1)) + 1
        planned = config.epochs or int(ckpt.get("planned_epochs") or 0)
        if planned and done >= planned:
            self._set_status(f"Cannot resume {ckpt_path.name}: its {counted(done, 'epoch')} "
                             f"are done; set epochs to {done + 1} or more to train it longer, "
                             "then press Resume.", error=True)  # fmt: skip
            return False
        typed = self.out.text().strip()
        out = Path(typed) if typed and not is_last_state(Path(typed)) else model_of(ckpt_path)
        if not self._writable(out.parent, "the model", "copy the run's files to a folder you "
                              "can write, and resume there"):  # fmt: skip
            return False
        self.cancel = threading.Event()
        of = f" of {planned}" if planned else ""
        started = self._launch(
            training_job, (dataset, config, out, self.cancel, ckpt_path), self._on_event,
            self._on_returned, (planned or 1) * config.steps_per_epoch,
            f"Resuming {out.name} from epoch {done + 1}{of} ({len(dataset.images)} images, "
            f"model {config.model}; its last state: {ckpt_path})",
        )  # fmt: skip
        if started:  # the epochs before, as the run's plot and progress showed them
            self._run = source, config.model
            self.plot.add_history(ckpt.get("history"), ckpt.get("best_label"))
            if self._progress is not None:
                self._progress.update(min(done, planned or done) * config.steps_per_epoch)
        return started

    def _settings_of(
        self, saved: Any, put: dict[str, Any] | None
    ) -> tuple[list[str], list[str], dict[str, Any]]:
        """Put the settings of the stopped run ``saved`` in the form where it shows others:
        those a resumed run may not change where they differ from the run's (or, ``put``:
        from what an earlier fill put in the form), and, at a first fill, those it may
        change where the field holds its default. Returns what differed in words
        ("tile size (px) 256 (the run: 64)"), and the values a field cannot show (a
        learning rate below its range), and what the fields given the run's hold now."""
        from ..ml.config import RESUME_AUTO, RESUME_FREE, RESUME_ON, RESUME_START

        differ: list[str] = []
        now: dict[str, Any] = {}
        if self.model.currentText() != saved.model:
            differ.append(f"model {self.model.currentText()} (the run: {saved.model})")
            self.model.setCurrentText(saved.model)
        values = self.form_values()
        theirs: dict[str, Any] = {}
        for setting in SETTINGS:
            name = setting.name
            if (name not in values or setting.key in RESUME_START
                    or not setting.applies_to(saved.model)):  # fmt: skip
                continue
            mine, value = values[name], setting.to_form(getattr(saved, setting.key))
            if setting.key in RESUME_AUTO and setting.from_form(mine) is None:
                continue  # auto: the run's choice is kept
            if setting.key in RESUME_FREE or (setting.key in RESUME_ON and mine):
                default = setting.to_form(setting.default)
                if put is not None or not _same(setting, mine, default):
                    continue  # the user's value: the run goes on with it
            elif put is not None and name in put:
                value = put[name]  # as near as the field came to the run's value
            if not _same(setting, mine, value):
                differ.append(f"{setting.label} {_form_text(setting, mine)} (the run: "
                              f"{_form_text(setting, value)})")  # fmt: skip
                theirs[name] = value
        set_field_values(self.fields, theirs)
        self._model_changed(saved.model)
        shown = self.form_values()
        unshown = []
        for name, value in theirs.items():
            now[name] = shown[name]
            if not _same(BY_NAME[name], shown[name], value):
                unshown.append(f"{BY_NAME[name].label} {_form_text(BY_NAME[name], value)}")
        return differ, unshown, now

    def start_crossval(self) -> bool:
        """Cross-validate the current settings in a worker thread (see :mod:`..ml.crossval`);
        fold models and ``crossval.json`` go to ``crossval-<model>/`` beside the annotations."""
        prepared = self._prepare()
        if prepared is None:
            return False
        dataset, config, source = prepared
        group_by = self.cv_group.text().strip() or None
        out = Path(source).with_name(f"crossval-{config.model}")
        if not self._writable(out, "the fold models", "copy the dataset to a folder you can "
                              "write, and open it there"):  # fmt: skip
            return False
        self.cancel = threading.Event()
        self._cv_rows: list[dict[str, Any]] = []
        self._cv_warnings: list[str] = []
        self.cv_result.setText("")
        k = self.cv_folds.value()
        return self._launch(
            crossval_job, (dataset, config, k, out, group_by, self.cancel), self._on_cv_event,
            self._on_cv_returned, k,
            f"Cross-validating {config.model} on {k} folds"
            + (f" grouped by {group_by}" if group_by else "") + f"; results in {out}",
        )  # fmt: skip

    def _writable(self, folder: Path, what: str, hint: str) -> bool:
        """Whether files can be written into ``folder``, checked before a run (which would
        fail only when it saves, after its training); if not, the status says so."""
        reason = unwritable_reason(folder)
        if reason is not None:
            self._set_status(f"Cannot train: cannot write {what} into {folder} ({reason}): "
                             f"{hint}.", error=True)  # fmt: skip
        return reason is None

    def _show_progress(self) -> None:
        """Bring the status and the plot into view (a short dock scrolls its progress area)."""
        self._fit_progress()
        self.progress_area.ensureWidgetVisible(self.plot, 0, 0)
        self.progress_area.ensureWidgetVisible(self.status, 0, 0)

    def _fit_progress(self) -> None:
        """Give the progress area the height of its content (up to 60% of the widget's),
        the settings the rest, unless the user placed the line between them."""
        area, inner = self.progress_area, self.progress_area.widget()
        # before the first show the splitter has laid nothing out yet: its own height then
        total = sum(self.splitter.sizes()) or self.splitter.height() - self.splitter.handleWidth()
        if self._split_by_user or total <= 0 or inner is None:
            return
        below = min(_fitting_height(area, inner), int(total * 0.6))
        self.splitter.setSizes([total - below, below])

    def _splitter_moved(self, *_: Any) -> None:
        self._split_by_user = True

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_progress()

    def _launch(
        self, job: Any, args: tuple, on_event: Any, on_returned: Any, total: int, text: str
    ) -> bool:
        """Run the generator function ``job(*args)`` in a napari thread worker."""
        if self.workspace.busy:
            self._set_status("Another job of this window runs (training or prediction): "
                             "wait for it, or stop it first.", error=True)  # fmt: skip
            return False
        self.result = None
        self._filled = None  # a fill for a resume is over once any run starts
        self._hint = ""
        self.plot.clear()
        self._own_job = True
        self._set_running(True)
        self._set_status(text)
        self._show_progress()
        from napari.utils import progress

        self._progress = progress(total=total, desc="training")
        try:
            self.worker = launch(
                job, args, on_event=on_event, on_returned=on_returned, on_error=self._on_error,
                on_finished=self._on_finished, workspace=self.workspace, describe=text,
            )  # fmt: skip
        except BaseException:
            self._on_finished()  # buttons back, not left waiting for a job that never ran
            raise
        return True

    def _on_cv_event(self, event: Any) -> None:
        fold = f"Fold {event.fold + 1}/{event.folds}"
        if event.warning:  # kept under the folds: the status line moves on at once
            self._cv_warnings.append(event.message)
            self.cv_result.setText(crossval_text(self._cv_rows, warnings=self._cv_warnings))
        elif event.message:  # a new fold starts
            self.plot.clear()
            self._set_status(event.message)
        elif event.scores is not None:
            self._cv_rows.append(event.scores)
            if self._progress is not None:
                self._progress.update(1)
            self.cv_result.setText(crossval_text(self._cv_rows, warnings=self._cv_warnings))
        elif event.train is not None:
            e = event.train
            self.plot.add(e)
            if e.kind == "warning":
                self._set_status(f"{fold}: {e.message}", error=True)
            elif e.kind == "epoch":
                self._set_status(f"{fold}: {epoch_text(e)}")
            elif time.monotonic() - self._last_status > 0.5:
                self._set_status(f"{fold}: {step_text(e) if e.kind == 'step' else e.message}")
                self._last_status = time.monotonic()

    def _on_cv_returned(self, result: CrossvalResult) -> None:
        self.result = result
        self.cv_result.setText(crossval_text(result.folds, result.summary, self._cv_warnings))
        done = len(result.folds)
        what = (
            f"stopped after {counted(done, 'fold')}"
            if result.cancelled
            else f"finished: {done} folds"
        )
        warned = (
            f" ({counted(len(self._cv_warnings), 'warning')}, below)" if self._cv_warnings else ""
        )
        self._set_status(f"Cross-validation {what}{warned}.", error=bool(warned))

    def stop(self) -> None:
        """Ask the run to stop after the current step: it saves its last state, and a
        network's best weights so far end at their operating point, as a finished run's."""
        if self.cancel is not None:
            self.cancel.set()
            self.workspace.set_job("stopping")
            model = REGISTRY.get(self.model.currentText())
            self._set_status("Stopping after this step, then choosing the best model's "
                             "operating point..." if model is not None and model.network
                             else "Stopping...")  # fmt: skip

    def _on_event(self, event: Any) -> None:
        self.plot.add(event)
        if self._progress is not None and event.kind == "step":
            total = event.epochs * event.steps  # the forest and memory bank: one step per image
            if self._progress.total != total:
                self._progress.total = total
            self._progress.update(1)
        if event.kind in ("warning", "status"):
            self._set_status(event.message, error=event.kind == "warning")
            if event.message == NO_LINES_CHOICE:  # worth repeating when the run ends
                self._hint = event.message
            return
        now = time.monotonic()
        if event.kind == "epoch":
            self._set_status(epoch_text(event))
            self._last_status = now
        elif now - self._last_status > 0.5:  # text updates are cheap, but not free
            self._set_status(step_text(event))
            self._last_status = now

    def _run_model(self) -> str:
        """The model of the run this widget trained last (the box stays enabled while it
        runs: what it shows at the end may be another)."""
        return self._run[1] if self._run is not None else self.model.currentText()

    def _on_returned(self, result: Any) -> None:
        self.result = result
        self.workspace.model_path = result.best
        what = "Stopped" if result.cancelled else "Finished"
        if result.best_f1 is not None:
            best = f" (best {result.best_text()})"
        elif self.model.currentText() in UNSUPERVISED:
            best = " (no validation ROC-AUC: it needs normal and anomalous validation images)"
            if self._hint:
                best += f"; {self._hint}"
        else:
            best = ""
        point = result.operating_point
        if point is not None and point.source == "validation":
            best += f"; predicts at {point.describe()}"
        tta = result.tta_point
        if tta is not None and tta.source == "validation":
            best += f"; with flips and rotations at {tta.describe(scores=False)}"
            if point is not None and tta_pays(point, tta):
                best += (" (Predict & review uses them by default: "
                         f"{tta_gain_text(point, tta)})")  # fmt: skip
        if result.best is None:  # stopped before the first validation kept a model
            from ..ml.train import nothing_kept_text

            text = nothing_kept_text(result, self._run_model())
            self._set_status(f"Stopped on {result.device}: {text}.")
            return
        # the last state is for resuming: a model fitted in one pass has none to resume
        last = f" Last state: {result.last}" if REGISTRY[self._run_model()].network else ""
        self._set_status(f"{what} on {result.device}. Model: {result.best}{best}.{last}")

    def _on_error(self, exc: BaseException) -> None:
        self._set_status(f"Training failed: {error_text(exc)}", error=True)

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.worker = None
        self._own_job = False
        self._set_running(False)
        self.plot.update()
        self._show_progress()  # the result's status is longer than the run's

    def release(self) -> None:
        """Closed (see :class:`PluginWidget`): its settings and signals let go of."""
        self.workspace.provide_train_config(None)
        self.workspace.job_changed.disconnect(self._on_job_changed)
        self.workspace.changed.disconnect(self._on_workspace_changed)

    def _on_job_changed(self, _state: str, _message: str) -> None:
        """Another widget's job (Review's Predict & review...) started or ended: the
        buttons that would start a second one wait for it (pressed, they only said so)."""
        if not self._own_job:
            self._set_running(self.workspace.busy, own=False)

    def _set_running(self, running: bool, own: bool = True) -> None:
        """Buttons while a job runs: this widget's (``own``: Stop stops it) or another's."""
        self.train_button.setEnabled(not running)
        self.baseline_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cv_button.setEnabled(not running)
        self.stop_button.setEnabled(running and own)

    def _set_status(self, text: str, error: bool = False) -> None:
        self._ready = False
        self.status.setStyleSheet("color: #d55e00" if error else "")
        self.status.setText(text)
        if not self._own_job:  # during a run the line stays put (the status changes often)
            self._fit_progress()


#: What a resumed run may change that the form shows (mixed precision and loader
#: workers are the CLI's: a resumed run keeps the stopped run's).
FREE_TEXT = "epochs, time budget, patience, device and point for TTA"


def resumed_settings(saved: Any, asked: Any, from_form: Collection[str]) -> Any:
    """The settings a run resuming one of ``saved`` goes on with, from the form's ``asked``
    (see :func:`..ml.config.resumed`): the run's, with those a resumed run may change
    taken from the form where it holds them (``from_form``, by config key: not mixed
    precision nor workers, which it does not show), and QC-flagged images left out if
    asked."""
    from ..ml.config import RESUME_FREE, RESUME_ON

    on = {name: True for name in RESUME_ON if getattr(asked, name)}
    free = {name: getattr(asked, name) for name in RESUME_FREE if name in from_form}
    return saved.replace(**free, **on)


def is_last_state(path: Path) -> bool:
    """Whether ``path`` names a run's last state (``X.last.pt``, ``X.last``)."""
    return path.stem.endswith(".last") or path.name.endswith(".last")


def model_of(last: Path) -> Path:
    """The model file of the run whose last state is ``last`` (``X.last.pt``: ``X.pt``;
    ``X.last``, of a model file named without a suffix: ``X``)."""
    if last.name.endswith(".last"):
        return last.with_name(last.name[: -len(".last")])
    stem = last.stem
    return last.with_name((stem[: -len(".last")] if stem.endswith(".last") else stem) + last.suffix)


def _same(setting: Any, a: Any, b: Any) -> bool:
    """Whether two form values of ``setting`` are the same (floats to the field's decimals)."""
    if setting.kind == "float":
        return abs(float(a) - float(b)) < 0.6 * 10**-setting.decimals
    return bool(a == b)


def _form_text(setting: Any, value: Any) -> str:
    """A value of the form as the status says it."""
    if setting.auto and not value:
        return "auto"
    if setting.kind == "flag":
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "none"


def free_model_name(path: Path) -> Path:
    """``path``, or where a model is there already (its best or its last state), the first
    of ``<stem>-2.pt``, ``<stem>-3.pt``, ... with neither."""
    from ..ml.checkpoint import last_path

    candidate, n = path, 1
    while candidate.exists() or last_path(candidate).exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
