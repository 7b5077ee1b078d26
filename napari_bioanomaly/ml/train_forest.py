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
from ..core.text import counted
from . import data
from .checkpoint import checkpoint_payload, last_path, save_checkpoint
from .config import TrainConfig
from .data import spread
from .events import TrainEvent, TrainResult, score_label
from .forest import (
    MAX_IMAGES,
    MAX_SAMPLES,
    N_TREES,
    SAMPLES_PER_IMAGE,
    Forest,
    sample_index,
    stage_features,
)
from .trainer import TrainJob
from .validation import operating_point

#: The second stage learns from at most about this many pixels' worth of training images
#: (at least :data:`SECOND_MIN_IMAGES` images): it reads each image again and predicts it
#: with a first-stage forest, so its cost is capped apart from the first's.
SECOND_PIXELS, SECOND_MIN_IMAGES = 25_000_000, 40


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
    is set, and returns a :class:`~.train.TrainResult`. With ``config.autocontext``
    (and two training images or more) the first stage is two half forests, each grown on
    half the images; the second stage learns from each image's first-stage probabilities
    as the other half's forest gives them, and the halves joined are its first stage
    (:mod:`.forest`). The operating point (threshold, minimum area) is chosen on the
    validation images.
    """
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    chosen = spread(train_idx, MAX_IMAGES)
    per_image = int(np.clip(MAX_SAMPLES // (2 * max(len(chosen), 1)), 200, SAMPLES_PER_IMAGE))
    two = config.autocontext and len(chosen) >= 2
    n, chunks = len(chosen), N_TREES // 8
    progress = _Progress(n + chunks + (n + chunks if two else 0))
    picks: dict[int, np.ndarray] = {}
    xs, ys, pixels = [], [], 0
    for i in chosen:
        if cancel.is_set():
            return _stopped(out)
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        picks[i] = sample_index(cls, rng, per_image, per_class=config.class_balance)
        feats = stage_features(norm, config.features)
        xs.append(feats.reshape(-1, feats.shape[-1])[picks[i]])
        ys.append(cls.ravel()[picks[i]])
        pixels += norm.size
        yield progress.step(f"features of {dataset.images[i].filename}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    n_out = len(classes) + 1
    weights = None
    if config.class_weights == "balanced":
        weights = data.balanced_weights(np.bincount(y, minlength=n_out))
    if not two:
        yield progress.status(
            f"fitting {N_TREES} trees on {len(y):,} pixels of {counted(n, 'image')}"
        )
        forest = yield from _grow(progress, cancel, x, y, n_out, weights, config.seed,
                                  config.features, N_TREES)  # fmt: skip
    else:
        half = np.concatenate([np.full(len(v), k % 2) for k, v in enumerate(ys)])
        firsts = []
        for h in (0, 1):
            yield progress.status(
                f"first stage: {N_TREES // 2} trees on the {'even' if h == 0 else 'odd'} half "
                f"of {counted(n, 'image')}"
            )
            grown = yield from _grow(progress, cancel, x[half == h], y[half == h], n_out, weights,
                                     config.seed + h, config.features, N_TREES // 2)  # fmt: skip
            if grown is None:
                return _stopped(out)
            firsts.append(grown)
        del x, xs
        limit = max(SECOND_MIN_IMAGES, int(SECOND_PIXELS * n / max(pixels, 1)))
        second = spread(list(range(n)), limit)
        progress.total = n + 2 * chunks + len(second)
        x2, y2 = [], []
        for k in second:
            if cancel.is_set():
                return _stopped(out)
            i = chosen[k]
            norm = cache(i)
            # the first stage's probabilities as the half that did not learn this image gives them
            feats = stage_features(norm, config.features, firsts[1 - k % 2])
            x2.append(feats.reshape(-1, feats.shape[-1])[picks[i]])
            y2.append(ys[k])
            yield progress.step(f"first-stage probabilities of {dataset.images[i].filename}")
        x, y = np.concatenate(x2), np.concatenate(y2)
        yield progress.status(f"second stage: {N_TREES} trees on {len(y):,} pixels of "
                              f"{counted(len(second), 'image')}")  # fmt: skip
        forest = yield from _grow(progress, cancel, x, y, n_out, weights, config.seed + 2,
                                  config.features, N_TREES, Forest.join(firsts))  # fmt: skip
    if forest is None:
        return _stopped(out)
    total = progress.total
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
    yield TrainEvent("epoch", 0, 1, total, total, val_f1=val_f1, val_iou=val_iou,
                     val_score=val_score, score_label=label)  # fmt: skip
    return TrainResult(best, last, history, val_score, False, "cpu", label, point)


class _Progress:
    """The trainer's place in its ``total`` steps, as events."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total

    def step(self, message: str) -> TrainEvent:
        self.done += 1
        return TrainEvent("step", 0, 1, self.done, self.total, message=message)

    def status(self, message: str) -> TrainEvent:
        return TrainEvent("status", 0, 1, self.done, self.total, message=message)


def _stopped(out: Path) -> TrainResult:
    return TrainResult(None, last_path(out), [], None, True, "cpu")


def _grow(
    progress: _Progress,
    cancel: threading.Event,
    x: np.ndarray,
    y: np.ndarray,
    n_out: int,
    weights: np.ndarray | None,
    seed: int,
    feature_set: str,
    n_trees: int,
    first: Forest | None = None,
) -> Generator[TrainEvent, None, Forest | None]:
    """Grow a forest eight trees a step; None when ``cancel`` is set between steps."""
    growing = Forest.fit_steps(x, y, n_out, weights, seed, feature_set=feature_set,
                               n_trees=n_trees, first=first)  # fmt: skip
    while True:
        if cancel.is_set():
            return None
        try:
            grown = next(growing)
        except StopIteration as stop:
            return stop.value
        yield progress.step(f"{grown} trees")


def fit(job: TrainJob) -> Generator[Any, None, Any]:
    """The forest as a trainer (see :mod:`.trainer`)."""
    return (yield from train_forest(job.dataset, job.config, job.out, job.classes,
                                    job.train_idx, job.val_idx, job.cancel))  # fmt: skip
