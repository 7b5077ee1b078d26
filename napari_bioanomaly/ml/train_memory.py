"""The memory-bank trainer: with learned descriptors a network trained on the normal
images without annotations first (:mod:`.descriptors`; by default the fixed filter
responses of :mod:`.features`), then descriptors of normal pixels, a coreset,
calibration and validation. One of the trainers of :mod:`.train`."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..core.model import BioAnomalyError, Dataset
from . import data
from .anomaly import BANK_SIZE, CANDIDATES, coreset, image_map, memory_descriptors
from .anomaly_fit import _pixel_sample, calibrate_scoring, separation
from .checkpoint import checkpoint_payload, last_path, save_checkpoint
from .config import TrainConfig
from .data import spread
from .descriptors import PatchEncoder
from .device import pick_device
from .events import SCORE_LABELS, TrainEvent, TrainResult
from .trainer import TrainJob, budget_minutes
from .validation import operating_point

#: Share of the run's time budget spent learning the descriptor network (the rest builds
#: the bank and calibrates it: about a minute for 400 images on 2 CPU cores).
LEARN_SHARE = 0.8


def train_memory(
    dataset: Dataset,
    config: TrainConfig,
    out: Path,
    train_idx: list[int],
    val_idx: list[int],
    cancel: threading.Event,
) -> Generator[Any, None, Any]:
    """Build the memory bank from normal pixels of the training images, calibrate it on
    the validation images, measure image ROC-AUC and pixel AUROC there, save the checkpoint.

    Yields the events of neural training (one step per image) and returns a
    :class:`~.train.TrainResult`.
    """
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    classes = dataset.class_names()
    device = pick_device(config.device)
    encoder = None
    if config.descriptors == "learned":
        encoder = yield from _learn_encoder(dataset, config, train_idx, device, cancel)
        if cancel.is_set():
            return TrainResult(None, last_path(out), [], None, True, str(device))

    chosen = spread(train_idx, 256)
    per_image = max(1000, CANDIDATES // max(1, len(chosen)))
    candidates = []
    for step, i in enumerate(chosen, start=1):
        if cancel.is_set():
            return TrainResult(None, last_path(out), [], None, True, str(device))
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        # descriptors every 4th pixel, away (8 px) from annotated anomalies
        near = ndimage.binary_dilation(cls > 0, iterations=8)[::4, ::4]
        feats = memory_descriptors(norm, 4, encoder, device)[~near]
        if len(feats):
            candidates.append(feats[rng.choice(len(feats), min(len(feats), per_image), False)])
        name = dataset.images[i].filename
        yield TrainEvent("step", 0, 1, step, len(chosen), message=f"features of {name}")
    if not candidates:
        raise BioAnomalyError("no normal pixels in the training images for the memory bank")
    pool = np.concatenate(candidates)
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-6
    bank = coreset(torch.from_numpy((pool - mean) / std), BANK_SIZE, config.seed)
    scoring: dict[str, Any] = {"mean": mean.tolist(), "std": std.tolist(), "bank": bank,
                               "descriptors": config.descriptors}
    yield TrainEvent(
        "status", 0, 1, len(chosen), len(chosen), message="calibrating anomaly scores"
    )
    scoring = calibrate_scoring("memory", encoder, scoring, dataset, val_idx or train_idx,
                                config, device)
    labels, scores, px_labels, px_scores = [], [], [], []
    for i in val_idx:
        norm = cache(i)
        heat, score = image_map("memory", norm, encoder, scoring, config, device)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        labels.append(int(bool(dataset.images[i].regions)))
        scores.append(score)
        pl, ps = _pixel_sample(rng, cls > 0, heat)
        px_labels.append(pl)
        px_scores.append(ps)
    val_auc, val_pixel_auc = separation(labels, scores, px_labels, px_scores)
    history = [{"epoch": 0, "loss": None, "val_auc": val_auc, "val_pixel_auc": val_pixel_auc}]
    point = yield from operating_point(
        config, encoder, ["anomaly"], {"scoring": scoring}, dataset, val_idx, device,
        0, 1, len(chosen),
    )  # fmt: skip
    payload = checkpoint_payload(config, ["anomaly"], history, 0, val_auc)
    payload.update(scoring=scoring, best_label=SCORE_LABELS["memory"],
                   operating_point=point.to_dict())  # fmt: skip
    if encoder is not None:
        payload["state_dict"] = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    best = save_checkpoint(out, payload)
    last = save_checkpoint(last_path(out), payload)
    yield TrainEvent(
        "epoch", 0, 1, len(chosen), len(chosen), val_auc=val_auc, val_pixel_auc=val_pixel_auc
    )
    return TrainResult(best, last, history, val_auc, False, str(device), SCORE_LABELS["memory"],
                       point)


def _learn_encoder(
    dataset: Dataset,
    config: TrainConfig,
    train_idx: list[int],
    device: torch.device,
    cancel: threading.Event,
) -> Generator[TrainEvent, None, PatchEncoder]:
    """The descriptor network: a U-Net trained by masked-image reconstruction on the
    training images without annotations (all of them if every one has some), for
    :data:`LEARN_SHARE` of the time budget or ``config.epochs`` epochs; its encoder."""
    from .pretrain import learn_images

    normal = [i for i in train_idx if not dataset.images[i].regions] or list(train_idx)
    minutes = LEARN_SHARE * budget_minutes(config, device)
    length = f"{config.epochs} epochs" if config.epochs else f"{minutes:.1f} min"
    what = (f"learning descriptors from {len(normal)} normal images (self-supervised, "
            f"{length})")  # fmt: skip
    yield TrainEvent("status", 0, 1, 0, 1, message=what)
    gen = learn_images(dataset, normal, config.replace(budget_min=minutes), cancel)
    try:
        while True:
            event = next(gen)
            if event.kind == "epoch":
                yield TrainEvent("status", 0, 1, 0, 1, message=f"{what}: epoch "
                                 f"{event.epoch + 1}, reconstruction loss {event.loss:.4f}")
    except StopIteration as stop:
        unet = stop.value[0]
    return PatchEncoder.from_unet(unet, config.base_channels).to(device).eval()


def fit(job: TrainJob) -> Generator[Any, None, Any]:
    """The memory bank as a trainer (see :mod:`.trainer`)."""
    return (yield from train_memory(job.dataset, job.config, job.out, job.train_idx,
                                    job.val_idx, job.cancel))  # fmt: skip
