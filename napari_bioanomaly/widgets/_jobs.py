"""What the widgets' workers run, and how their progress reads: no Qt, shared by the widgets
(which do not import each other)."""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stopped:
    """What a job the user stopped returns: what it leaves behind, in words."""

    text: str


def until_stopped(gen: Generator[Any, Any, Any], cancel: threading.Event, seen: list | None = None
                  ) -> Generator[Any, None, tuple[bool, Any]]:  # fmt: skip
    """Pass ``gen``'s events on until it returns or ``cancel`` is set after one (then
    ``gen`` is closed); returns ``(stopped, its value or None)``. ``seen`` collects the
    events passed on."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return False, stop.value
        if seen is not None:
            seen.append(event)
        yield event
        if cancel.is_set():
            gen.close()
            return True, None


def prime_torch() -> None:
    """Load what torch loads lazily, on the main thread, before any worker starts.

    Two crashes seen in napari, and their cures:

    - a worker thread that was first to import ``torch._dynamo`` (the optimiser
      does so lazily) crashed napari: so it is imported here, on the main thread;
    - importing ``torch._dynamo`` loads triton, whose bundled LLVM segfaults once
      Mesa's software OpenGL (llvmpipe, also LLVM) is loaded, as in every napari
      on a machine without a GPU driver. Training never uses ``torch.compile``,
      so triton is blocked for this process (set ``BIOANOMALY_ALLOW_TRITON=1``
      to keep it).
    """
    import sys

    if "triton" not in sys.modules and os.environ.get("BIOANOMALY_ALLOW_TRITON") != "1":
        # makes "import triton" raise ImportError (sys.modules is typed as modules only)
        sys.modules["triton"] = None  # type: ignore[assignment]
    import torch
    import torch._dynamo

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def leave_a_core_to_the_gui() -> None:
    """Threads for a worker: every core but one, which napari keeps (torch's, and the
    forest's and line cue's pools, see :mod:`..core.threads`)."""
    import torch

    from ..core.threads import available, set_cpu_threads

    n = max(1, available() - 1)
    torch.set_num_threads(n)
    set_cpu_threads(n)


def training_job(
    dataset: Any, config: Any, out: Path, cancel: threading.Event, resume: Path | None = None
) -> Generator[Any, None, Any]:
    """The generator the worker runs: leaves one core to the GUI, then trains (goes on
    from the last state ``resume``, see :func:`..ml.train.train`)."""
    from ..ml.train import train

    leave_a_core_to_the_gui()
    return (yield from train(dataset, config, out, resume=resume, cancel=cancel))


def crossval_job(
    dataset: Any, config: Any, k: int, out: Path, group_by: str | None, cancel: threading.Event
) -> Generator[Any, None, Any]:
    """The generator the worker runs for "Cross-validate" (one core left to the GUI)."""
    from ..ml.crossval import crossval

    leave_a_core_to_the_gui()
    return (yield from crossval(dataset, config, k, out, group_by, cancel=cancel))


def train_and_predict(
    dataset: Any, config: Any, out: Path, pred_out: Path, cancel: threading.Event
) -> Generator[Any, None, tuple[Path, list[str], Any, Path] | Stopped]:
    """For "Train & review": train, predict the validation images, save the predictions;
    returns their path, the names of the validation images predicted, the model's operating
    point and the model file. Stopped while training, it goes on with the best model so far
    (``cancel`` is cleared: set again, it stops the prediction too), or returns
    :class:`Stopped` when there is none yet; stopped while predicting, it keeps the images
    predicted until then."""
    from ..ml.data import split
    from ..ml.events import TrainEvent
    from ..ml.predict import Predictor
    from ..ml.train import nothing_kept_text

    result = yield from training_job(dataset, config, out, cancel)
    if result.cancelled:
        if result.best is None:
            text = nothing_kept_text(result, config.model)
            return Stopped(f"{text[0].upper()}{text[1:]}.")
        cancel.clear()
        yield TrainEvent("status", 0, 1, 0, 0, message=(
            f"Training stopped: reviewing the validation images with its best model so far "
            f"({result.best_text()}; Stop again to skip the review)."))  # fmt: skip
    _, val = split(dataset, config)
    predictor = Predictor.load(result.best or result.last)
    # as Predict & review does by default: with flips and rotations where they paid on
    # validation (the point for them then)
    tta = predictor.tta_by_default
    names = yield from _predict_until_stopped(predictor, dataset.subset(val), pred_out, cancel,
                                              tta=tta)  # fmt: skip
    return pred_out, names, predictor.point(tta), result.best or result.last


def _resuming_text(kept: int, missing: list[str], total: int, heatmaps: Path | None
                   ) -> str | None:  # fmt: skip
    """What a resumed Predict & review says: ``kept`` of ``total`` images taken from the
    stopped run, and the ``missing`` ones whose anomaly maps left ``heatmaps``."""
    from ..core.maps import missing_maps_text

    again = missing_maps_text(missing, heatmaps)
    if kept:
        return (
            f"Resuming: {kept} of {total} images were predicted with this model before a "
            f"stop; predicting the others" + (f" ({again})." if missing else ".")
        )
    return f"Predicting every image, not resuming: {again}." if missing else None


def _predict_until_stopped(
    predictor: Any,
    dataset: Any,
    pred_out: Path,
    cancel: threading.Event,
    heatmaps: Path | None = None,
    tta: bool = False,
    manifest: Any = None,
) -> Generator[Any, None, list[str]]:
    """Predict ``dataset``'s images until done or stopped, save the predictions of those
    predicted to ``pred_out`` (the previous file kept as ``.bak``); returns their names.

    With a :class:`~napari_bioanomaly.core.manifest.Manifest`, the images a stopped run of
    the same model left in it are taken from there, not predicted again (said in a line of
    text yielded first); a stop writes the manifest, the end removes it."""
    from ..core import annotations
    from ..core.maps import with_maps
    from ..core.model import BioAnomalyError, Dataset
    from ..ml.predict import predict_dataset

    done: dict[str, Any] = {}
    earlier: dict[str, Any] = {}  # the stopped run's images, those without a map included
    if manifest is not None:
        try:
            earlier = manifest.read()
        except BioAnomalyError as exc:  # another model's (or a broken) manifest: start over
            yield f"Predicting every image, not resuming: {exc}"
        names = {im.filename for im in dataset.images}
        earlier = {name: rec for name, rec in earlier.items() if name in names}
        done, missing = with_maps(earlier, heatmaps)
        said = _resuming_text(len(done), missing, len(dataset.images), heatmaps)
        if said:
            yield said
    seen: list[Any] = []
    stopped, predictions = yield from until_stopped(
        predict_dataset(predictor, dataset, heatmaps=heatmaps, tta=tta, done=done), cancel, seen
    )
    if stopped:  # the images predicted so far (now, or by the run resumed), in order; one
        # whose map had gone and that is not predicted again yet keeps its earlier regions
        now = {e.record.filename: e.record for e in seen if e.record is not None}
        records = [now.get(im.filename) or earlier.get(im.filename) for im in dataset.images]
        predictions = Dataset(root=dataset.root, classes=list(predictor.classes),
                              images=[rec for rec in records if rec is not None])  # fmt: skip
    annotations.save(predictions, pred_out, "via")
    if manifest is not None and stopped:
        manifest.add(*predictions.images)
        manifest.save()
    elif manifest is not None:
        manifest.remove()
    return [im.filename for im in predictions.images]


def predict_and_save(
    predictor: Any,
    dataset: Any,
    pred_out: Path,
    heatmaps: Path | None = None,
    tta: bool = False,
    model: Path | None = None,
    cancel: threading.Event | None = None,
) -> Generator[Any, None, tuple[Path, list[str]]]:
    """For "Predict & review": predict every image (``tta``: averaged over flips and
    rotations), save the predictions (and the anomaly maps into ``heatmaps``); returns
    their path and the names of the images predicted (every one, unless ``cancel`` was
    set: those predicted until then). With the ``model`` file, a stop leaves a manifest
    beside ``pred_out`` and the next run with the same model file and settings resumes
    from it (:mod:`~napari_bioanomaly.core.manifest`)."""
    from ..core.manifest import Manifest, run_identity

    leave_a_core_to_the_gui()
    cancel = cancel or threading.Event()
    manifest = None
    if model is not None:
        manifest = Manifest(pred_out, run_identity([model], tta, heatmaps is not None))
    names = yield from _predict_until_stopped(predictor, dataset, pred_out, cancel, heatmaps, tta,
                                              manifest)  # fmt: skip
    return pred_out, names


def choose_point_job(
    model: Path, dataset: Any, tta: bool, on: str, cancel: threading.Event | None = None
) -> Generator[Any, None, Any]:
    """For "Choose point" (Review): choose a trained model's operating point again (``tta``:
    the one for flips and rotations) on ``on`` images, written into the model file (the
    previous one kept as ``.bak``); yields ``(done, total, name)`` per image and returns
    the :class:`~napari_bioanomaly.ml.points.PointChange`, or :class:`Stopped` when
    ``cancel`` was set (the file is then left as it was)."""
    from ..ml.points import choose_point_steps

    leave_a_core_to_the_gui()
    stopped, change = yield from until_stopped(
        choose_point_steps(model, dataset, tta, on), cancel or threading.Event()
    )
    if stopped:
        return Stopped(f"Stopped: the operating point was not chosen; {model} is unchanged.")
    return change


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def epoch_text(event: Any) -> str:
    """Status line after a validation."""
    head = f"Epoch {event.epoch + 1}/{event.epochs}: loss {_num(event.loss, '.4f')}"
    scores = event.score_text()
    return f"{head}, {scores}" if scores else head


def step_text(event: Any) -> str:
    """Status line during an epoch."""
    if event.loss is None:  # the forest and the memory bank: images read, trees grown
        return f"Step {event.step}/{event.steps}: {event.message}"
    eta = (
        ""
        if event.eta_s is None
        else f", about {int(event.eta_s) // 60} min {int(event.eta_s) % 60} s left"
    )
    return (
        f"Epoch {event.epoch + 1}/{event.epochs}, step {event.step}/{event.steps}: "
        f"loss {event.loss:.4f}, {_num(event.sec_per_step, '.2f')} s/step{eta}"
    )
