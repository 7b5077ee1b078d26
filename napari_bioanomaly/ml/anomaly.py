"""Anomaly maps learned from normal appearance only: an autoencoder and a feature memory bank.

Neither needs an annotation; annotated anomalies, where there are some, are
left out of what is learned as normal.

``autoencoder``
    A convolutional autoencoder trained on random tiles (the training loop of
    :mod:`.train`) with a *trimmed* loss: the worst 5% of pixels of each batch
    do not count, so the rare anomalies of unannotated images are not learned
    as normal. The anomaly map is the reconstruction error ``|x - AE(x)|``,
    smoothed; anomalies reconstruct badly because the narrow bottleneck learned
    normal cells and background only.
``memory``
    A PatchCore-style memory bank (Roth et al. 2022) of patch descriptors of
    normal pixels, reduced to a coreset; a pixel's score is the distance of its
    descriptor to the nearest bank entry. Without pretrained networks the
    descriptors are the multi-scale filter responses of the classic baseline
    (intensity, edges, texture at sigmas 0.7-16 px), standardised: on the
    sample dataset they beat the autoencoder's own encoder features clearly
    (docs/benchmarks.md). Fitting takes seconds on a CPU and needs no training.

Raw scores are calibrated on normal pixels of held-out images into a
probability-like map: ``0.5`` at the 99.5th percentile of normal pixels, so the
usual 0.5 threshold of prediction turns the map into proposed regions. The image
score is the mean of the top-k raw pixel scores (k = 0.1% of the pixels, at
least 64), calibrated the same way on normal images.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..core.imagemetrics import roc_auc
from ..core.model import BioAnomalyError, Dataset
from . import data
from .config import TrainConfig
from .device import free_memory, is_oom
from .events import SCORE_LABELS, TrainEvent, TrainResult
from .tiling import blend_tiles
from .validation import operating_point, spread

#: Share of pixels of each batch left out of the autoencoder loss (robust to unannotated anomalies).
TRIM = 0.05
#: Memory bank size (coreset) and how many candidate patches it is chosen from.
BANK_SIZE = 4096
CANDIDATES = 40_000
#: Gaussian smoothing (pixels) of the raw maps.
SIGMA = {"autoencoder": 2.0, "memory": 4.0}
#: Pixel percentile of normal images that calibrates to 0.5. On held-out sample images
#: (memory bank) 99.5 outlined anomalies far better than 99.9 (pixel IoU 0.50 against
#: 0.19, recall at IoU 0.25 0.73 against 0.47) for a few more false proposals.
PIXEL_PERCENTILE = 99.5


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4 if stride == 2 else 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class AutoEncoder(nn.Module):
    """Convolutional autoencoder for 1-channel tiles: three stride-2 stages to a narrow
    bottleneck (``latent`` channels at 1/8 resolution) and back.

    With ``base=16`` it has about 0.4 M parameters. Input sides must be multiples of 8.
    """

    def __init__(self, base: int = 16, latent: int = 8) -> None:
        super().__init__()
        b = base
        self.stem = _conv(1, b)
        self.down1 = nn.Sequential(_conv(b, 2 * b, 2), _conv(2 * b, 2 * b))  # 1/2
        self.down2 = nn.Sequential(_conv(2 * b, 4 * b, 2), _conv(4 * b, 4 * b))  # 1/4
        self.down3 = nn.Sequential(_conv(4 * b, 4 * b, 2), nn.Conv2d(4 * b, latent, 1))  # 1/8
        self.decode = nn.Sequential(
            nn.Conv2d(latent, 4 * b, 1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * b, 4 * b, 4, stride=2, padding=1),
            _conv(4 * b, 4 * b),
            nn.ConvTranspose2d(4 * b, 2 * b, 4, stride=2, padding=1),
            _conv(2 * b, 2 * b),
            nn.ConvTranspose2d(2 * b, b, 4, stride=2, padding=1),
            _conv(b, b),
            nn.Conv2d(b, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.down3(self.down2(self.down1(self.stem(x)))))


def loss(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Trimmed reconstruction loss: mean squared error of the pixels that are not annotated
    anomalies and not among the worst :data:`TRIM` of the batch."""
    err = (model(images).float() - images.float()).pow(2)[:, 0]
    values = err[classes == 0]
    if values.numel() == 0:
        return err.sum() * 0.0
    sample = values.detach()
    if sample.numel() > 1_000_000:
        sample = sample[:: sample.numel() // 1_000_000 + 1]
    cut = torch.quantile(sample, 1.0 - TRIM)
    return values[values <= cut].mean()


@torch.no_grad()
def reconstruction_error(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Raw autoencoder scores ``(N, 1, H, W)``: ``|x - AE(x)|`` of a batch of tiles."""
    return (model(images).float() - images.float()).abs().cpu().numpy()


def smooth(kind: str, raw: np.ndarray) -> np.ndarray:
    """A raw ``(H, W)`` map smoothed by the method's Gaussian (:data:`SIGMA`)."""
    return ndimage.gaussian_filter(raw.astype(np.float32, copy=False), SIGMA[kind], mode="nearest")


def top_k(scores: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Image score: mean of the top 0.1% (at least 64) scores of the ``valid`` pixels."""
    values = scores[valid] if valid is not None else scores.ravel()
    if values.size == 0:
        return 0.0
    k = min(values.size, max(64, int(0.001 * values.size)))
    return float(np.partition(values, values.size - k)[values.size - k :].mean())


def calibrate(values: np.ndarray | float, center: float, threshold: float) -> np.ndarray:
    """Raw scores to ``(0, 1)``: 0.5 at ``threshold``, about 0.02 at ``center``.

    Below the threshold a logistic curve; above it ``1 - 0.5 / (1 + z / 2)``, which
    meets the logistic smoothly but approaches 1 slowly: strong anomalies keep their
    order instead of all saturating at 1.0 (rankings, hence AUROCs, are those of the
    raw scores).
    """
    scale = max(threshold - center, 1e-6) / 4.0
    z = np.maximum((np.asarray(values, dtype=np.float32) - threshold) / scale, -30.0)
    low = 1.0 / (1.0 + np.exp(-np.minimum(z, 0.0)))
    high = 1.0 - 0.5 / (1.0 + np.maximum(z, 0.0) / 2.0)
    return np.where(z <= 0, low, high).astype(np.float32)


def image_score(raw_score: float, scoring: dict[str, Any]) -> float:
    """Calibrated image score: 0.5 at the highest score of normal calibration images.

    The slope is gentle (the spread of normal image scores, at least that of normal
    pixels) so that scores far from the threshold keep their order in 6 decimals.
    """
    spread = max(
        scoring["image_threshold"] - scoring["image_center"],
        scoring["threshold"] - scoring["center"],
        1e-9,
    )
    z = (raw_score - scoring["image_threshold"]) / spread
    return round(1.0 / (1.0 + math.exp(-max(min(z, 700.0), -700.0))), 6)


def coreset(features: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Greedy k-center coreset (as PatchCore): ``size`` rows that cover ``features``.

    Distances are taken in a random 32-dimensional projection (Johnson-Lindenstrauss),
    which keeps the selection fast for tens of thousands of candidates.
    """
    n = len(features)
    if n <= size:
        return features.clone()
    gen = torch.Generator().manual_seed(seed)
    dims = min(32, features.shape[1])
    proj = features @ torch.randn(features.shape[1], dims, generator=gen) / math.sqrt(dims)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    dist = (proj - proj[chosen[0]]).pow(2).sum(1)
    for _ in range(size - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (proj - proj[i]).pow(2).sum(1))
    return features[chosen].clone()


def memory_raw(
    norm: np.ndarray, scoring: dict[str, Any], device: torch.device | str = "cpu"
) -> np.ndarray:
    """Raw memory-bank scores ``(H, W)``: distance of each pixel's standardised descriptor
    to the nearest bank entry (computed every second pixel, then interpolated)."""
    from .forest import features

    feats = features(norm)[::2, ::2]
    h, w, d = feats.shape
    mean, std = (np.asarray(scoring[k], dtype=np.float32) for k in ("mean", "std"))
    query = torch.from_numpy((feats.reshape(-1, d) - mean) / std)

    def nearest_on(dev: torch.device | str) -> torch.Tensor:
        bank = torch.as_tensor(scoring["bank"], dtype=torch.float32, device=dev)
        with torch.no_grad():
            return torch.cat(
                [torch.cdist(q.to(dev), bank).min(dim=1).values for q in query.split(8192)]
            )

    try:
        nearest = nearest_on(device)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc) or torch.device(device).type == "cpu":
            raise
        free_memory(device)
        nearest = nearest_on("cpu")  # out of GPU memory: the same distances on the CPU
    small = nearest.reshape(1, 1, h, w).float()
    full = F.interpolate(small, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)
    return full[0, 0, : norm.shape[0], : norm.shape[1]].cpu().numpy()


def raw_map(
    kind: str,
    norm: np.ndarray,
    model: nn.Module | None,
    scoring: dict[str, Any],
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The smoothed, uncalibrated anomaly map ``(H, W)`` of a normalised image."""
    if kind == "memory":
        raw = memory_raw(norm, scoring, device)
    else:
        assert model is not None
        model.eval()
        raw = blend_tiles(
            norm, config.tile, lambda x: reconstruction_error(model, x), device,
            batch=max(1, config.batch),
        )[0]  # fmt: skip
    return smooth(kind, raw)


def image_map(
    kind: str,
    norm: np.ndarray,
    model: nn.Module | None,
    scoring: dict[str, Any],
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, float]:
    """Calibrated anomaly map ``(H, W)`` of a normalised image, and its calibrated score."""
    raw = raw_map(kind, norm, model, scoring, config, device)
    heat = calibrate(raw, scoring["center"], scoring["threshold"])
    return heat, image_score(top_k(raw), scoring)


def calibrate_scoring(
    kind: str,
    model: nn.Module | None,
    scoring: dict[str, Any],
    dataset: Dataset,
    indices: list[int],
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``scoring`` with its calibration from the normal pixels of whole images ``indices``
    (annotated pixels left out): 0.5 at the 99.5th percentile of normal pixels, and, for
    image scores, at the highest score of the images' normal content."""
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    classes = dataset.class_names()
    normal_px, per_image = [], []
    for i in spread(indices, 64):
        norm = cache(i)
        raw = raw_map(kind, norm, model, scoring, config, device)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        valid = cls == 0
        if not valid.any():
            continue
        values = raw[valid]
        normal_px.append(rng.choice(values, min(values.size, 200_000), replace=False))
        per_image.append(top_k(raw, valid))
    if not per_image:
        raise BioAnomalyError("no normal pixels to calibrate the anomaly scores on")
    normal = np.concatenate(normal_px)
    image_center = float(np.median(per_image))
    return {
        **scoring,
        "kind": kind,
        "center": float(np.median(normal)),
        "threshold": float(np.percentile(normal, PIXEL_PERCENTILE)),
        "image_center": image_center,
        "image_threshold": max(float(np.max(per_image)), image_center + 1e-6),
    }


def separation(
    labels: list[int], scores: list[float], px_labels: list[np.ndarray], px_scores: list[np.ndarray]
) -> tuple[float | None, float | None]:
    """Image ROC-AUC and pixel AUROC, ``None`` where only one kind is present."""
    image_auc = roc_auc(labels, scores) if 0 < sum(labels) < len(labels) else None
    pl = np.concatenate(px_labels) if px_labels else np.zeros(0, bool)
    pixel_auc = None
    if 0 < pl.sum() < pl.size:
        pixel_auc = roc_auc(pl, np.concatenate(px_scores))
    return image_auc, pixel_auc


def _pixel_sample(
    rng: np.random.Generator, labels: np.ndarray, scores: np.ndarray, n: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    pick = rng.choice(labels.size, min(labels.size, n), replace=False)
    return labels.ravel()[pick], scores.ravel()[pick]


@torch.no_grad()
def validate(
    model: nn.Module,
    tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    device: torch.device,
    batch: int,
) -> dict[str, float | None]:
    """Validation of the autoencoder: loss on normal pixels, tile ROC-AUC and pixel AUROC.

    A tile is anomalous when it holds annotated pixels; its score is :func:`top_k`.
    The AUCs are ``None`` when the tiles have only one kind.
    """
    model.eval()
    losses, labels, scores, px_labels, px_scores = [], [], [], [], []
    rng = np.random.default_rng(0)
    for k in range(0, len(tiles), batch):
        chunk = tiles[k : k + batch]
        x = torch.from_numpy(np.stack([t[0] for t in chunk])[:, None]).to(device)
        cls = torch.from_numpy(np.stack([t[1] for t in chunk])).to(device)
        losses.append(float(loss(model, x, cls)))
        for m, (_, c, _) in zip(reconstruction_error(model, x)[:, 0], chunk, strict=True):
            m = smooth("autoencoder", m)
            labels.append(int(c.any()))
            scores.append(top_k(m))
            pl, ps = _pixel_sample(rng, c > 0, m)
            px_labels.append(pl)
            px_scores.append(ps)
    model.train()
    tile_auc, pixel_auc = separation(labels, scores, px_labels, px_scores)
    return {
        "val_loss": float(np.mean(losses)) if losses else None,
        "val_auc": tile_auc,
        "val_pixel_auc": pixel_auc,
    }


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
    from . import train as tr
    from .forest import features

    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    classes = dataset.class_names()
    chosen = spread(train_idx, 256)
    per_image = max(1000, CANDIDATES // max(1, len(chosen)))
    candidates = []
    for step, i in enumerate(chosen, start=1):
        if cancel.is_set():
            return TrainResult(None, tr.last_path(out), [], None, True, "cpu")
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        # descriptors every 4th pixel, away (8 px) from annotated anomalies
        near = ndimage.binary_dilation(cls > 0, iterations=8)[::4, ::4]
        feats = features(norm)[::4, ::4][~near]
        if len(feats):
            candidates.append(feats[rng.choice(len(feats), min(len(feats), per_image), False)])
        name = dataset.images[i].filename
        yield TrainEvent("step", 0, 1, step, len(chosen), message=f"features of {name}")
    if not candidates:
        raise BioAnomalyError("no normal pixels in the training images for the memory bank")
    pool = np.concatenate(candidates)
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-6
    bank = coreset(torch.from_numpy((pool - mean) / std), BANK_SIZE, config.seed)
    scoring: dict[str, Any] = {"mean": mean.tolist(), "std": std.tolist(), "bank": bank}
    yield TrainEvent(
        "status", 0, 1, len(chosen), len(chosen), message="calibrating anomaly scores"
    )
    scoring = calibrate_scoring("memory", None, scoring, dataset, val_idx or train_idx, config)
    labels, scores, px_labels, px_scores = [], [], [], []
    for i in val_idx:
        norm = cache(i)
        heat, score = image_map("memory", norm, None, scoring, config)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        labels.append(int(bool(dataset.images[i].regions)))
        scores.append(score)
        pl, ps = _pixel_sample(rng, cls > 0, heat)
        px_labels.append(pl)
        px_scores.append(ps)
    val_auc, val_pixel_auc = separation(labels, scores, px_labels, px_scores)
    history = [{"epoch": 0, "loss": None, "val_auc": val_auc, "val_pixel_auc": val_pixel_auc}]
    point = yield from operating_point(
        config, None, ["anomaly"], {"scoring": scoring}, dataset, val_idx, torch.device("cpu"),
        0, 1, len(chosen),
    )  # fmt: skip
    payload = tr.checkpoint_payload(config, ["anomaly"], history, 0, val_auc)
    payload.update(scoring=scoring, best_label=SCORE_LABELS["memory"],
                   operating_point=point.to_dict())  # fmt: skip
    best = tr.save_checkpoint(out, payload)
    last = tr.save_checkpoint(tr.last_path(out), payload)
    yield TrainEvent(
        "epoch", 0, 1, len(chosen), len(chosen), val_auc=val_auc, val_pixel_auc=val_pixel_auc
    )
    return TrainResult(best, last, history, val_auc, False, "cpu", SCORE_LABELS["memory"],
                          point)
