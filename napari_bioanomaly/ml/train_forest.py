"""The random-forest trainer: pixels sampled from the training images, the forest grown
eight trees at a time (progress and stop between them), the operating point chosen on the
validation images. One of the trainers of :mod:`.train`."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.model import Dataset
from ..core.operating import f1_score
from . import data
from .checkpoint import checkpoint_payload, last_path, save_checkpoint
from .config import TrainConfig
from .data import spread
from .events import TrainEvent, TrainResult, score_label
from .forest import MAX_IMAGES, MAX_SAMPLES, N_TREES, SAMPLES_PER_IMAGE, Forest, sample_pixels
from .trainer import TrainJob
from .validation import operating_point


def train_forest(
    dataset: Dataset,
    config: TrainConfig,
    out: Path,
    classes: list[str],
    train_idx: list[int],
    val_idx: list[int],
    cancel: threading.Event,
) -> Generator[Any, None, Any]:
    """Sample pixels of the training images, fit the forest, validate, save the checkpoint.

    Yields the same events as neural training (one step per image read and per
    eight trees grown, one epoch at the end), stops between steps when ``cancel``
    is set, and returns a :class:`~.train.TrainResult`. The operating point
    (threshold, minimum area) is chosen on the validation images.
    """
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    chosen = spread(train_idx, MAX_IMAGES)
    per_image = int(np.clip(MAX_SAMPLES // (2 * max(len(chosen), 1)), 200, SAMPLES_PER_IMAGE))
    xs, ys = [], []
    n = len(chosen)
    total = n + N_TREES // 8  # progress: one step per image read, one per 8 trees grown
    for step, i in enumerate(chosen, start=1):
        if cancel.is_set():
            return TrainResult(None, last_path(out), [], None, True, "cpu")
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        x, y = sample_pixels(norm, cls, rng, per_image, per_class=config.class_balance,
                             feature_set=config.features)  # fmt: skip
        xs.append(x)
        ys.append(y)
        name = dataset.images[i].filename
        yield TrainEvent("step", 0, 1, step, total, message=f"features of {name}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    n_out = len(classes) + 1
    weights = None
    if config.class_weights == "balanced":
        weights = data.balanced_weights(np.bincount(y, minlength=n_out))
    yield TrainEvent("status", 0, 1, n, total, message=f"fitting {N_TREES} trees on "
                        f"{len(y):,} pixels of {n} images")  # fmt: skip
    growing = Forest.fit_steps(x, y, n_out, weights, config.seed, feature_set=config.features)
    while True:
        if cancel.is_set():
            return TrainResult(None, last_path(out), [], None, True, "cpu")
        try:
            grown = next(growing)
        except StopIteration as stop:
            forest = stop.value
            break
        yield TrainEvent("step", 0, 1, n + grown // 8, total, message=f"{grown} trees")
    point = yield from operating_point(
        config, None, classes, {"forest": forest}, dataset, val_idx, torch.device("cpu"), 0, 1,
        total,
    )  # fmt: skip
    val_f1 = point.f1
    val_score = val_iou = None
    if point.f1 is not None:
        pixel_f1 = point.pixel_f1 or 0.0
        val_score = f1_score(point.f1, pixel_f1, point.criterion)
        val_iou = pixel_f1 / (2 - pixel_f1)
    history = [{"epoch": 0, "loss": None, "val_loss": None, "val_iou": val_iou, "val_f1": val_f1,
                "val_score": val_score}]  # fmt: skip
    payload = checkpoint_payload(config, classes, history, 0, val_score, weights)
    label = score_label("forest", point.criterion)
    payload.update(samples=len(y), forest=forest.state(), best_label=label,
                   operating_point=point.to_dict())  # fmt: skip
    best = save_checkpoint(out, payload)
    last = save_checkpoint(last_path(out), payload)
    yield TrainEvent("epoch", 0, 1, total, total, val_f1=val_f1, val_iou=val_iou)
    return TrainResult(best, last, history, val_score, False, "cpu", label, point)


def fit(job: TrainJob) -> Generator[Any, None, Any]:
    """The forest as a trainer (see :mod:`.trainer`)."""
    return (yield from train_forest(job.dataset, job.config, job.out, job.classes,
                                    job.train_idx, job.val_idx, job.cancel))  # fmt: skip
