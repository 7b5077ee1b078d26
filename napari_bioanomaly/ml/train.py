"""Training as one generator: it yields typed progress events and returns the result.

The CLI drains it; the Train widget runs it in a napari thread worker. It never
touches a GUI. It prepares the run (split, quality filter, tile) and hands it to
the trainer of the model (see :mod:`.trainer`). Cancel by setting the ``cancel``
event: the generator notices at the next step, saves its last checkpoint, and
returns.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator
from pathlib import Path

import torch

from ..core.images import ImageReadError
from ..core.model import BioAnomalyError, Dataset
from ..core.text import counted
from . import data, train_forest, train_memory, train_network
from .checkpoint import last_path, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import REGISTRY, TrainConfig, resumed
from .device import default_batch, pick_device
from .distributed import Dist, rank, world_size
from .events import SCORE_LABELS, VAL_F1, TrainEvent, TrainResult
from .trainer import Trainer, TrainJob
from .validation import MIN_AREA

__all__ = [
    "MIN_AREA", "SCORE_LABELS", "TRAINERS", "VAL_F1", "TrainEvent", "TrainJob", "TrainResult",
    "last_path", "load_checkpoint", "model_from_checkpoint", "pick_device", "save_checkpoint",
    "train",
]  # fmt: skip

#: The trainer of each kind of model (:attr:`~.config.ModelInfo.trainer` names one).
TRAINERS: dict[str, Trainer] = {
    "network": train_network.fit,
    "forest": train_forest.fit,
    "memory": train_memory.fit,
}


def train(
    dataset: Dataset,
    config: TrainConfig,
    out: str | Path,
    resume: str | Path | None = None,
    cancel: threading.Event | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train a model on ``dataset``; the best checkpoint goes to ``out``.

    The best epoch of a network is chosen by its validation F1 (by validation loss
    when no validation image is annotated). The forest and the memory bank are
    fitted in one pass. Yields :class:`TrainEvent` and returns a :class:`TrainResult`.
    The last state of a network is kept in ``MODEL.last.pt`` after every epoch
    and on cancel, and ``resume`` continues from such a file: the same classes, and the
    stopped run's settings (``config`` may change only how long it goes on and where it
    runs; see :func:`.config.resumed`).

    Raises
    ------
    BioAnomalyError
        For bad input (no annotations, unreadable images) or an out-of-memory
        error that halving the batch down to 1 did not cure.
    """
    dist = Dist()
    if world_size() > 1 and config.pretrain_min and resume is None:
        # one process group for the pretraining and the training from its weights: a
        # group joined again after leaving one hangs (gloo, torchrun 2.14)
        dist = Dist.setup(pick_device(config.device))
    try:
        result = yield from _train(dataset, config, out, resume, cancel)
        dist.close(finished=True)
        return result
    finally:
        dist.close()


def _train(
    dataset: Dataset,
    config: TrainConfig,
    out: str | Path,
    resume: str | Path | None,
    cancel: threading.Event | None,
) -> Generator[TrainEvent, None, TrainResult]:
    out = Path(out)
    cancel = cancel or threading.Event()
    torch.manual_seed(config.seed)
    if resume is not None:
        refuse_fold_state(Path(resume))
    # a resumed run goes on with the settings of the run it resumes (see config.resumed)
    saved = None if resume is None else TrainConfig.from_dict(load_checkpoint(resume)["config"])
    if config.batch is None:  # the checkpoint keeps the batch the run trained with
        device = pick_device(config.device)
        config = config.replace(batch=saved.batch if saved is not None and saved.batch else
                                default_batch(device, world_size(), config.model))  # fmt: skip
    data_classes = data.class_names(dataset)
    if resume is not None and not REGISTRY[config.model].network:
        raise BioAnomalyError(f"{resume}: resuming continues a network's training; "
                              f"{config.model} is fitted in one pass")  # fmt: skip
    if not data_classes and not config.unsupervised:
        raise BioAnomalyError("no annotated anomalies in the dataset: annotate some regions "
                              "first, or train the unsupervised model memory, which learns "
                              "from the images alone")  # fmt: skip
    # the unsupervised models learn one class; annotations (if any) only mask their loss
    classes = ["anomaly"] if config.unsupervised else data_classes
    train_idx, val_idx = data.split(dataset, config)
    if config.exclude_qc:
        yield TrainEvent(
            "status", 0, config.epochs or 1, 0, config.steps_per_epoch,
            message=f"image quality of {len(train_idx) + len(val_idx)} training and validation "
            "images (stored flags, or checked now)",
        )  # fmt: skip
        # judged together (out of focus is among peers); left out of validation too
        kept, dropped = data.quality_filter(dataset, train_idx + val_idx)
        keep = set(kept)
        train_idx = [i for i in train_idx if i in keep]
        val_idx = [i for i in val_idx if i in keep]
        if dropped:
            names = ", ".join(f"{name} ({'; '.join(flags)})" for name, flags in dropped[:5])
            more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            yield TrainEvent(
                "warning", 0, config.epochs or 1, 0, config.steps_per_epoch,
                message=f"{counted(len(dropped), 'image')} with quality flags left out of "
                f"training and validation: {names}{more}",
            )  # fmt: skip
    if not train_idx:
        raise BioAnomalyError("no training images left after the validation split and QC")
    try:
        data.check_images(dataset, train_idx + val_idx)
    except BioAnomalyError as exc:
        raise _unreadable(exc, config) from None
    if config.pretrain_min and resume is None:
        weights = yield from _pretrain(dataset, config, out, cancel)
        if weights is None:  # stopped while pretraining
            return TrainResult(
                None, last_path(out), [], None, True, str(pick_device(config.device))
            )
        config = config.replace(weights=str(weights), pretrain_min=0.0)
    fitted = data.fit_tile(config, dataset, train_idx + val_idx)
    if saved is not None and REGISTRY[saved.model].network:
        # the tile asked is judged as the stopped run fitted it: the command that started
        # it, --resume added, resumes it (its checkpoint keeps the fitted tile)
        config = resumed(saved, config, resume, fitted.tile)
    else:
        config = fitted
    if world_size() > 1 and not learns_together(config):
        if rank() != 0:  # nothing for this process to do: the fit is one pass
            return TrainResult(None, last_path(out), device=str(pick_device(config.device)))
        yield TrainEvent("warning", 0, 1, 0, 1, message=f"{config.model} is fitted in one pass, "
                         f"by process 0 alone: the other {world_size() - 1} processes of this "
                         "torchrun have nothing to do")  # fmt: skip
    job = TrainJob(dataset, config, out, classes, data_classes, train_idx, val_idx, cancel,
                   None if resume is None else Path(resume))  # fmt: skip
    try:
        return (yield from TRAINERS[REGISTRY[config.model].trainer](job))
    except ImageReadError as exc:
        # damaged inside, where the check above does not look (it decodes no pixels): every
        # image is decoded now, so that all such images are named at once
        yield TrainEvent("warning", 0, config.epochs or 1, 0, config.steps_per_epoch,
                         message=f"{_first_line(exc)}; reading every training and validation "
                         "image to find all that cannot be read")  # fmt: skip
        try:
            data.read_all(dataset, train_idx + val_idx)
        except BioAnomalyError as every:
            raise _unreadable(every, config) from None
        raise _unreadable(BioAnomalyError(f"1 image cannot be read: {_first_line(exc)}"),
                          config) from None  # fmt: skip


def refuse_fold_state(path: Path) -> None:
    """Refuse to resume the last state of a cross-validation fold (``fold<i>.last.pt``
    beside the run's ``crossval.json``): it trained without its test fold's images."""
    if re.fullmatch(r"fold\d+\.last\.pt", path.name) and path.with_name("crossval.json").is_file():
        raise BioAnomalyError(
            f"{path}: the last state of a cross-validation fold, which trained without its "
            "test fold's images: resumed here it would train on them too (and its test "
            "scores would mean nothing); run the cross-validation again, with more epochs"
        )


def _first_line(exc: BaseException) -> str:
    """An error's message without what a data loader process adds (its traceback)."""
    text = str(exc).strip()
    lines = text.splitlines()
    # torch re-raises a loader process's error as "Caught X in DataLoader worker process N.
    # Original Traceback ...", the original message last
    return lines[-1].split(": ", 1)[-1] if len(lines) > 1 else text


def _unreadable(exc: BaseException, config: TrainConfig) -> BioAnomalyError:
    """The error of images that cannot be read, saying how to leave them out."""
    if config.exclude_qc:  # images checked now are flagged: these kept flags from before
        return BioAnomalyError(f"{exc}; the quality flags stored for them (qc --save) are "
                               "older: run qc --save again to flag them unreadable")  # fmt: skip
    return BioAnomalyError(f"{exc}; leave them out with --exclude-qc (in napari: leave "
                           "out QC-flagged images), which flags them unreadable")  # fmt: skip


def learns_together(config: TrainConfig) -> bool:
    """Whether the processes of a distributed run share the model's training: networks
    (DistributedDataParallel), and the memory bank's learned descriptor network (then
    process 0 builds the bank). Pretraining is shared too, before this."""
    return REGISTRY[config.model].network or (
        config.model == "memory" and config.descriptors == "learned"
    )


def nothing_kept_text(result: TrainResult, model: str) -> str:
    """What a run of ``model`` stopped before it kept a model leaves, in words."""
    if not REGISTRY[model].network:  # the forest and the memory bank: fitted in one pass
        return "stopped before the model was fitted: nothing kept"
    return (f"stopped before the first validation: no model kept; its last state is in "
            f"{result.last} (napari-bioanomaly train --resume continues it)")  # fmt: skip


def _pretrain(
    dataset: Dataset, config: TrainConfig, out: Path, cancel: threading.Event
) -> Generator[TrainEvent, None, Path | None]:
    """Pretrain the U-Net on every image (``MODEL.pretrained.pt``), saying how it goes in
    status events; the weights file, or None when stopped."""
    from .pretrain import pretrain

    path = out.with_name(out.stem + ".pretrained.pt")
    minutes = config.pretrain_min
    gen = pretrain(dataset, config.replace(budget_min=minutes, epochs=None), path, cancel)
    try:
        while True:
            try:
                event = next(gen)
            except BioAnomalyError:
                if cancel.is_set():  # stopped before its first step: nothing written
                    return None
                raise
            if event.kind == "epoch":
                yield TrainEvent(
                    "status", 0, config.epochs or 1, 0, config.steps_per_epoch,
                    message=f"pretraining on {counted(len(dataset.images), 'image')} without their "
                    f"annotations ({minutes:g} min): epoch {event.epoch + 1}, reconstruction "
                    f"loss {event.loss:.4f}",
                )  # fmt: skip
    except StopIteration as stop:
        result = stop.value
    if cancel.is_set():
        return None
    yield TrainEvent("status", 0, config.epochs or 1, 0, config.steps_per_epoch,
                     message=result.text())  # fmt: skip
    return result.path
