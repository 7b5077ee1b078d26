"""Validation during and after training: scores of every epoch, and the operating point.

Every epoch scores fixed validation tiles at several thresholds (so model
selection does not depend on how calibrated the network is yet); after
training the best model predicts the whole validation images and the
threshold and minimum area with the best validation F1 become its operating
point (:mod:`napari_bioanomaly.core.operating`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import operating
from ..core.chooser import PointChooser
from ..core.model import Dataset
from ..core.text import counted
from . import data, models
from .config import TrainConfig
from .data import spread
from .events import TrainEvent

#: Predicted specks smaller than this (pixels) are not counted as instances in validation.
MIN_AREA = 16


#: The validation grid of every epoch: thresholds of ``1 - p(background)``, specks below
#: :data:`MIN_AREA` dropped; the epoch's F1 is the best over the thresholds, so model
#: selection and early stopping do not depend on how calibrated the network is yet.
VAL_THRESHOLDS = operating.THRESHOLDS
#: ``[loss sum, loss count, tiles, truth pixels]`` then the operating-point counts.
_HEAD = 4
#: Whole validation images an operating point is chosen on, at most (evenly spread).
POINT_IMAGES = 64


def count_prediction(inst: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Raw validation counts (see :func:`validate`) of one anomaly map against true instances."""
    counts = operating.point_counts(heat, inst, VAL_THRESHOLDS, (MIN_AREA,))
    return np.concatenate([[0.0, 0.0, 1.0, np.count_nonzero(inst)], counts.ravel()])


def validate(
    kind: str,
    model: torch.nn.Module,
    tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    device: torch.device,
    batch: int,
) -> list[float]:
    """Raw validation counts of some tiles, to add up over processes (see :func:`scores`).

    ``[loss sum, loss count, tiles, truth pixels]`` followed by TP, FP, FN,
    predicted pixels inside the truth and predicted pixels at each of
    :data:`VAL_THRESHOLDS` (connected components of the anomaly map, specks
    smaller than :data:`MIN_AREA` pixels dropped); the loss is the U-Net's only.
    """
    model.eval()
    raw = np.zeros(_HEAD + 5 * len(VAL_THRESHOLDS))
    losses = []
    with torch.no_grad():
        for start in range(0, len(tiles), batch):
            chunk = tiles[start : start + batch]
            images = torch.from_numpy(np.stack([t[0] for t in chunk])[:, None]).to(device)
            classes = torch.from_numpy(np.stack([t[1] for t in chunk])).to(device)
            if kind == "unet":  # one forward pass for the loss and the map
                logits = model(images).float()
                losses.append(float(models.unet_loss(logits, classes)))
                heat = 1.0 - torch.softmax(logits, dim=1)[:, 0]
            else:
                _, heat = models.predict_classes(kind, model, images)
            for (_, _, inst), h in zip(chunk, heat.cpu().numpy(), strict=True):
                raw += count_prediction(inst, h)
    model.train()
    raw[0], raw[1] = float(sum(losses)), float(len(losses))
    return raw.tolist()


def scores(
    raw: np.ndarray | list[float], criterion: str = "mean"
) -> tuple[float | None, float, float, float]:
    """Validation loss (``None`` without one), and the foreground pixel IoU, instance F1
    and threshold at the threshold of :data:`VAL_THRESHOLDS` with the best
    :func:`~napari_bioanomaly.core.operating.f1_score` under ``criterion``."""
    raw = np.asarray(raw, dtype=float)
    loss_sum, n_loss, _, truth_px = (float(v) for v in raw[:_HEAD])
    counts = raw[_HEAD:].reshape(len(VAL_THRESHOLDS), 1, 5)
    point = operating.choose(counts, int(truth_px), VAL_THRESHOLDS, (MIN_AREA,), criterion)
    i = VAL_THRESHOLDS.index(point.threshold)
    _, _, _, hit, pred = counts[i, 0]
    union = pred + truth_px - hit
    iou = hit / union if union else 1.0
    return (
        (loss_sum / n_loss if n_loss else None),
        float(iou),
        float(point.f1 or 0.0),
        point.threshold,
    )


#: What a step of a long job yields: ``(done, total, name)``.
Step = tuple[int, int, str]


def drain(steps: Generator[Step, None, Any], progress: Callable[[int, int, str], None] | None
          ) -> Any:  # fmt: skip
    """Run the generator ``steps`` to its end, telling ``progress`` of each step; its value."""
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(*step)


def choose_operating_point(
    predictor_probs: Callable[[np.ndarray], np.ndarray],
    dataset: Dataset,
    indices: list[int],
    classes: list[str],
    criterion: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    against: operating.OperatingPoint | None = None,
) -> operating.OperatingPoint:
    """The threshold and minimum area with the best validation F1 on whole validation images
    (under ``criterion``; default: :func:`~..core.operating.criterion_for` their annotations).

    ``predictor_probs(image)`` gives the class probabilities of a raw image, as
    :func:`~.predict.predict_image` does; at most :data:`POINT_IMAGES` images are used.
    ``progress(done, total, name)`` is told of each image predicted. With ``against`` (a
    point chosen on other maps of these images) the new point must beat it on these maps
    (:meth:`~..core.chooser.PointChooser.choose_against`), else it is ``against``.
    """
    return drain(choose_operating_point_steps(predictor_probs, dataset, indices, classes,
                                              criterion, against), progress)  # fmt: skip


def choose_operating_point_steps(
    predictor_probs: Callable[[np.ndarray], np.ndarray],
    dataset: Dataset,
    indices: list[int],
    classes: list[str],
    criterion: str | None = None,
    against: operating.OperatingPoint | None = None,
) -> Generator[Step, None, operating.OperatingPoint]:
    """:func:`choose_operating_point` as a generator that yields ``(done, total, name)``
    after each image (for a worker thread to report) and returns the point."""
    chooser = yield from _chooser_steps(predictor_probs, dataset, indices, classes)
    if against is not None and against.source == "validation":
        return chooser.choose_against(against)
    return chooser.choose(criterion)


def _chooser_steps(
    predictor_probs: Callable[[np.ndarray], np.ndarray],
    dataset: Dataset,
    indices: list[int],
    classes: list[str],
) -> Generator[Step, None, PointChooser]:
    """A :class:`PointChooser` given the maps of (at most :data:`POINT_IMAGES` of) these
    images, yielding ``(done, total, name)`` after each."""
    from ..core.images import read_image
    from ..core.paths import resolve_image

    root = dataset.root or Path(".")
    chooser = PointChooser(classes=classes)
    chosen = spread(indices, POINT_IMAGES)
    for n, i in enumerate(chosen, start=1):
        im = dataset.images[i]
        probs = predictor_probs(read_image(resolve_image(root, im.filename)))
        truth_classes, truth = data.rasterise(im, classes, probs.shape[1:])
        chooser.add(probs, truth, truth_classes)
        yield n, len(chosen), im.filename
    return chooser


def operating_point(
    config: TrainConfig,
    model: torch.nn.Module | None,
    classes: list[str],
    extra: dict[str, Any],
    dataset: Dataset,
    val_idx: list[int],
    device: torch.device,
    epoch: int,
    epochs: int,
    steps: int,
    criterion: str | None = None,
    tta: bool = False,
    against: operating.OperatingPoint | None = None,
) -> Generator[TrainEvent, None, operating.OperatingPoint]:
    """Choose the operating point of a trained model on the validation images (the
    default point when none of them is annotated). ``extra`` is what the model's
    :class:`~.predict.Predictor` needs besides the network (the ``forest``).
    ``tta``: on maps averaged over the flips and rotations of test-time augmentation;
    ``against``: the point to beat there (see :func:`choose_operating_point`)."""
    annotated = [i for i in val_idx if dataset.images[i].regions]
    if not annotated:
        return operating.OperatingPoint()
    from .predict import Predictor, predict_image

    maps = " (maps averaged over 8 flips and rotations, for test-time augmentation)"
    yield TrainEvent(
        "status", epoch, epochs, steps, steps,
        message="choosing the threshold and minimum area on "
        f"{counted(min(len(val_idx), POINT_IMAGES), 'validation image')}" + (maps if tta else ""),
    )  # fmt: skip
    predictor = Predictor(
        None if model is None else model.eval(), config.model, classes, config, device, extra
    )
    point = choose_operating_point(
        lambda image: predict_image(predictor, image, tta=tta)[0], dataset, val_idx,
        data.class_names(dataset), criterion, against=against,
    )  # fmt: skip
    what = "operating point for test-time augmentation" if tta else "operating point"
    same = (
        KEPT_PLAIN
        if against is not None and point.describe(scores=False) == against.describe(scores=False)
        else ""
    )
    yield TrainEvent("status", epoch, epochs, steps, steps,
                     message=f"{what}: {point.describe()}{same}")  # fmt: skip
    return point


#: Said where the point for averaged maps is the plain one (chooser.choose_against).
KEPT_PLAIN = (
    " (the plain one: no other beats it on the averaged maps by 0.005, on 20 "
    "validation regions or more)"
)
#: Training chooses the point for test-time augmentation by itself (``tta_point``
#: ``auto``) when that takes at most this share of the training time.
TTA_POINT_SHARE = 0.1


def tta_point_wanted(setting: str, plain_s: float, train_s: float) -> bool:
    """Whether to choose the operating point for test-time augmentation after training:
    ``yes``, ``no``, or (``auto``) when its 8 passes over the validation images, estimated
    as 8x the plain point's ``plain_s`` seconds, take at most :data:`TTA_POINT_SHARE` of
    the ``train_s`` seconds of training (seconds on NEU-Seg or CrackForest on a CPU;
    64 images of 1080 px on a CPU are left to ``choose-point --tta``)."""
    if setting in ("yes", "no"):
        return setting == "yes"
    return 8 * plain_s <= TTA_POINT_SHARE * train_s
