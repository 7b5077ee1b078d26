"""Review's one-click jobs: "Train & review", "Predict & review" and "Choose point".

Each runs in a worker thread (:func:`._launch.launch`, one job per window through the
Workspace) and reports progress as text; the first two hand the predictions file and the
names of the predicted images back to the widget, which opens them for review, the third
what it changed in the model file. Each can be stopped (:meth:`ReviewJobs.stop`) after its
current step or image: training ends with its best model so far (Train & review then
reviews its validation images), prediction reviews the images predicted until then,
choosing a point leaves the model file as it was. Nothing here touches a layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QPushButton

from .._workspace import Workspace
from ..core import annotations as annotation_files
from ..core.model import BioAnomalyError
from ..core.review import beside, predictions_path
from ..ml.events import PredictEvent, TrainEvent
from ._jobs import (
    Stopped,
    choose_point_job,
    epoch_text,
    predict_and_save,
    prime_torch,
    train_and_predict,
)
from ._launch import launch


class ReviewJobs:
    """Start, follow and finish Review's jobs.

    ``say`` shows a line of text; ``on_done(gt, predictions, names)`` opens the result;
    ``on_operating_point(threshold, min_area, min_peak)`` passes a loaded model's point on to the
    proposal controls; ``on_model(path)`` a model file "Train & review" trained; ``buttons``
    are disabled while a job runs, ``stop_button`` enabled.
    """

    def __init__(
        self,
        workspace: Workspace,
        say: Callable[[str], None],
        on_done: Callable[[str, Path, list[str]], None],
        on_operating_point: Callable[[float, float, float | None], None],
        buttons: list[QPushButton],
        stop_button: QPushButton | None = None,
        on_model: Callable[[Path], None] | None = None,
    ) -> None:
        self.workspace = workspace
        self.say = say
        self.on_done = on_done
        self.on_operating_point = on_operating_point
        self.buttons = buttons
        self.stop_button = stop_button
        self.on_model = on_model
        self.worker: Any = None
        #: set to stop the running job after its current step or image (None: none runs)
        self.cancel: threading.Event | None = None
        #: whether the user stopped the last job
        self.stop_asked = False
        #: images the running prediction has done, of how many (from its progress)
        self.progress: tuple[int, int] = (0, 0)
        #: what the running job could not do (images it could not read), said at its end
        self.problems: list[str] = []
        #: images of the running prediction that are stacks (the first plane predicted)
        self.stacks: list[str] = []
        #: what the running job said of how it went (resuming a stopped prediction)
        self.notes: list[str] = []
        #: whether the running job, stopped, can be resumed (Predict & review)
        self.resumable = False
        #: TrainConfig settings of "Train & review" (default: the Train widget's form)
        self.train_settings: dict[str, Any] = {}

    def on_workspace_job(self, _state: str, _message: str) -> None:
        """Another widget's job (the Train widget's) started or ended: the buttons that
        would start a second one wait for it (pressed, they only said so)."""
        if self.worker is None:
            for button in self.buttons:
                button.setEnabled(not self.workspace.busy)

    def _can_start(self) -> bool:
        if self.worker is not None:
            return False
        if self.workspace.busy:
            self.say("Another job of this window runs: wait for it, or stop it.")
            return False
        return True

    def train(self, gt: str) -> bool:
        """Train on the training split of ``gt``, predict its validation images."""
        from ..ml.config import TrainConfig

        if not self._can_start():
            return False
        try:
            if not gt:
                raise BioAnomalyError("choose the ground-truth annotation file first")
            dataset, _ = annotation_files.open_dataset(gt)
            config = self.train_config(TrainConfig)
            prime_torch()
        except (BioAnomalyError, OSError, TypeError) as exc:
            self.say(f"Cannot train: {exc}")
            return False
        out = beside(gt, "bioanomaly-model.pt")
        self.say(f"Training {config.model} on the training split...")
        return self._start(
            train_and_predict, (dataset, config, out, predictions_path(gt)), gt,
            "Training", f"training {config.model} (Review)",
        )  # fmt: skip

    def train_config(self, config_class: Any) -> Any:
        """Settings of "Train & review": :attr:`train_settings` when set, else the Train
        widget's form in this window, else the defaults."""
        if self.train_settings:
            return config_class(**self.train_settings)
        try:
            config = self.workspace.train_config
        except RuntimeError:  # the Train widget was deleted
            config = None
        return config if config is not None else config_class()

    def predict(self, gt: str, model: str, tta: str = "auto") -> bool:
        """Predict every image of ``gt`` with the model file ``model``; ``tta``: whether to
        average over flips and rotations (see :func:`~napari_bioanomaly.ml.predict.use_tta`:
        ``auto`` where they paid on the model's validation images, ``yes``, ``no``)."""
        from ..ml.predict import TTA_APPLIES, TTA_MODELS, Predictor, tta_note, use_tta

        if not self._can_start():
            return False
        try:
            if not gt or not model:
                raise BioAnomalyError("choose the ground-truth file and a model first")
            dataset, _ = annotation_files.open_dataset(gt, read_images=False)
            prime_torch()
            predictor = Predictor.load(model)
        except (BioAnomalyError, OSError) as exc:
            self.say(f"Cannot predict: {exc}")
            return False
        how, flips = "", use_tta(predictor, tta)
        if flips:  # said, not silently dropped, for a model the flips do not apply to
            applies = predictor.kind in TTA_MODELS
            how = (
                f" ({tta_note(predictor, tta) or 'flips and rotations'})"
                if applies
                else (f" ({TTA_APPLIES}, not a {predictor.kind} model: without them)")
            )
            if predictor.lacks_tta_point(applies):
                how = (
                    " (flips and rotations, at the model's plain operating point: it has "
                    "none chosen on averaged maps; check the threshold)"
                )
            flips = applies
        # proposals from the anomaly maps start at the model's own operating point (for
        # test-time augmentation, the one chosen on averaged maps where it has one)
        point = predictor.point(flips)
        if point.source == "default" and predictor.kind != "memory":  # the bank's: calibrated
            how += (" (no operating point chosen on validation in this model: the defaults; "
                    "Choose point sets one on annotated images)")  # fmt: skip
        self.on_operating_point(point.threshold, point.min_area, point.min_peak)
        pred_out = predictions_path(gt)
        heatmaps = pred_out.with_suffix(annotation_files.HEATMAPS_SUFFIX)
        started = self._start(
            predict_and_save, (predictor, dataset, pred_out, heatmaps, flips, Path(model)), gt,
            "Prediction", f"predicting with {Path(model).name}{how} (Review)",
        )  # fmt: skip
        self.resumable = started  # a stop leaves a manifest to resume from
        return started

    def choose_point(self, gt: str, model: str, on: str = "validation", tta: bool = False
                     ) -> bool:  # fmt: skip
        """Choose the model file's operating point again on the annotated images of ``gt``
        (``on``: the validation images of the run that trained it, or ``all``; ``tta``: the
        point for flips and rotations), as ``napari-bioanomaly choose-point`` does."""
        from ..ml.points import ON

        if not self._can_start():
            return False
        try:
            if not gt or not model:
                raise BioAnomalyError("choose the ground-truth file and a model first")
            if on not in ON:
                raise BioAnomalyError(f"choose the point on one of {', '.join(ON)}, not {on!r}")
            dataset, _ = annotation_files.open_dataset(gt, read_images=False)
            prime_torch()
        except (BioAnomalyError, OSError) as exc:
            self.say(f"Cannot choose the point: {exc}")
            return False
        what = "point for flips and rotations" if tta else "operating point"
        images = "its validation images" if on == "validation" else "every annotated image"
        return self._start(
            choose_point_job, (Path(model), dataset, tta, on), gt, "Choosing the point",
            f"choosing the {what} of {Path(model).name} on {images} (Review)",
            returned=self._after_point,
        )  # fmt: skip

    def _after_point(self, change: Any) -> None:
        """The point is written: say what changed, and start the proposals there."""
        from ..ml.points import change_lines

        point = change.after
        self.on_operating_point(point.threshold, point.min_area, point.min_peak)
        lines = change_lines(change)
        if change.unlearnt:
            lines.append(f"warning: the model did not learn {', '.join(change.unlearnt)}: "
                         "those regions counted as background")  # fmt: skip
        self.say("\n".join(lines))

    def stop(self) -> bool:
        """Ask the running job to stop after its current step or image (False: none runs).
        Training ends with its best model so far, which Train & review goes on to review
        (Stop again skips that); prediction saves and reviews the images it predicted;
        choosing a point leaves the model file as it was."""
        if self.cancel is None or self.cancel.is_set():
            return False
        self.cancel.set()
        self.stop_asked = True
        self.workspace.set_job("stopping")
        self.say("Stopping after the current step or image...")
        return True

    def _start(self, job: Any, args: tuple, gt: str, what: str, describe: str,
               returned: Callable[[Any], None] | None = None) -> bool:  # fmt: skip
        for button in self.buttons:
            button.setEnabled(False)
        if self.stop_button is not None:
            self.stop_button.setEnabled(True)
        self.problems = []
        self.stacks = []
        self.notes = []
        self.resumable = False
        self.progress = (0, 0)
        self.stop_asked = False
        self.cancel = threading.Event()
        after = returned or (lambda result: self._after(gt, *result))
        self.worker = launch(
            job, (*args, self.cancel), on_event=self._on_progress,
            on_returned=lambda result: self.say(result.text) if isinstance(result, Stopped)
            else after(result),
            on_error=lambda exc: self.say(f"{what} failed: {exc}"),
            on_finished=self._on_finished, workspace=self.workspace, describe=describe,
        )  # fmt: skip
        return True

    def _on_progress(self, event: TrainEvent | PredictEvent | tuple[int, int, str] | str
                     ) -> None:  # fmt: skip
        if isinstance(event, str):  # resuming, or why not
            self.notes.append(event)
            self.say(event)
            return
        if isinstance(event, PredictEvent):
            if event.message:  # an image it could not predict (unreadable): said at the end
                self.problems.append(event.message)
            if event.note:  # a stack, of which the first plane was predicted
                self.stacks.append(event.image)
            self.progress = (event.index, event.total)
        if self.cancel is not None and self.cancel.is_set():
            return  # "Stopping..." stays said while the stop is pending
        if isinstance(event, tuple):  # choosing the point: (done, total, name)
            self.say(f"Choosing the point: {event[0]}/{event[1]} images")
        elif isinstance(event, TrainEvent):
            if event.kind == "epoch":
                self.say(f"Training: {epoch_text(event)}")
            elif event.kind in ("status", "warning"):  # calibrating, choosing the point...
                self.say(event.message)
        else:
            self.say(f"Predicting: {event.index}/{event.total} images")

    def _after(self, gt: str, pred_out: Path, names: list[str], point: Any = None,
               model: Path | None = None) -> None:  # fmt: skip
        """A job's predictions are saved: review them (from the operating point of a model
        trained by the job; Predict & review passed its model's on at the start)."""
        self.workspace.predictions_path = pred_out
        if model is not None and self.on_model is not None:
            self.on_model(model)
        if point is not None:
            self.on_operating_point(point.threshold, point.min_area, point.min_peak)
        self.on_done(gt, pred_out, names)

    def problems_text(self, reviewed: int | None = None) -> str:
        """What the last job did not do, in words (empty when nothing): the images it
        stopped before, and those it could not predict; and whether it resumed a stopped
        prediction. ``reviewed``: how many images it predicted, when known (a stopped run
        that resumed another also hands on those the other predicted)."""
        lines = list(self.notes)
        done, total = self.progress
        done = done if reviewed is None else reviewed
        if self.stop_asked and done < total:
            resume = (
                " (Predict & review with this model resumes from there)" if self.resumable else ""
            )
            lines.append(f"Stopped after {done} of {total} images: reviewing the {done} "
                         f"predicted{resume}.")  # fmt: skip
        if self.stacks:
            more = f" (and {len(self.stacks) - 1} more)" if len(self.stacks) > 1 else ""
            lines.append(f"{len(self.stacks)} image(s) are stacks of several planes: only the "
                         f"first plane of each was predicted: {self.stacks[0]}{more}")  # fmt: skip
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            lines.append(f"{len(self.problems)} image(s) could not be predicted and are left "
                         f"out of the predictions and the review: "
                         f"{self.problems[0]}{more}")  # fmt: skip
        return "\n".join(lines)

    def _on_finished(self) -> None:
        self.worker = None
        self.cancel = None
        for button in self.buttons:
            button.setEnabled(True)
        if self.stop_button is not None:
            self.stop_button.setEnabled(False)
