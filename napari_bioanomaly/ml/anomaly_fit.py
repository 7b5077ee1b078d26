"""Fitting the anomaly maps of :mod:`.anomaly`: calibration of raw scores on normal
pixels, and how well scores separate anomalous from normal images and pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.imagemetrics import roc_auc
from ..core.model import BioAnomalyError, Dataset
from ..core.reference import contrast_map, line_map
from . import data
from .anomaly import (
    PIXEL_PERCENTILE,
    TOP_FRACTION,
    TOP_FRACTIONS,
    contrast_scoring,
    cue_scoring,
    line_top,
    raw_map,
    top_ks,
)
from .config import TrainConfig
from .data import spread


def calibrate_scoring(
    kind: str,
    model: nn.Module | None,
    scoring: dict[str, Any],
    dataset: Dataset,
    indices: list[int],
    config: TrainConfig,
    device: torch.device | str = "cpu",
    all_levels: bool = False,
    lines: bool = False,
    line_maps: data.DerivedCache | None = None,
) -> dict[str, Any]:
    """``scoring`` with its calibration from the normal pixels of whole images ``indices``
    (annotated pixels left out): 0.5 at the 99.5th percentile of normal pixels, and, for
    image scores, at the highest score of the images' normal content (with
    ``all_levels``, ``image_levels`` holds that calibration for each of
    :data:`.config.TOP_FRACTIONS`, for the trainer to choose from and remove). With
    ``lines``, the line cue's calibration too (``line_*``: :func:`.anomaly.with_lines`),
    its maps taken from ``line_maps`` where the caller keeps them (relative to its
    surroundings where ``scoring["line_window"]`` says so)."""
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    classes = dataset.class_names()
    normal_px, contrast_px, per_image, line_px, line_tops = [], [], [], [], []
    for i in spread(indices, 64):
        norm = cache(i)
        raw = raw_map(kind, norm, model, scoring, device)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        valid = cls == 0
        if not valid.any():
            continue
        n = int(np.count_nonzero(valid))
        pick = rng.choice(n, min(n, 200_000), replace=False)
        normal_px.append(raw[valid][pick])
        contrast_px.append(contrast_map(norm)[valid][pick])
        per_image.append(top_ks(raw, valid))
        if lines:
            cue = (line_maps(i, norm) if line_maps is not None
                   else line_map(norm, window=scoring.get("line_window")))  # fmt: skip
            line_px.append(cue[valid][pick])
            line_tops.append(line_top(cue, valid))
    if not per_image:
        raise BioAnomalyError("no normal pixels to calibrate the anomaly scores on")
    normal = np.concatenate(normal_px)
    levels = {f: image_levels([s[j] for s in per_image]) for j, f in enumerate(TOP_FRACTIONS)}
    return {
        **scoring,
        "kind": kind,
        "center": float(np.median(normal)),
        "threshold": float(np.percentile(normal, PIXEL_PERCENTILE)),
        **levels[TOP_FRACTION],
        **({"image_levels": levels} if all_levels else {}),
        **contrast_scoring(np.concatenate(contrast_px)),
        **(_line_scoring(line_px, line_tops) if lines else {}),
    }


def _line_scoring(normal_px: list[np.ndarray], tops: list[float]) -> dict[str, float]:
    return {**cue_scoring("line_", np.concatenate(normal_px)),
            **{f"line_{k}": v for k, v in image_levels(tops).items()}}  # fmt: skip


def image_levels(scores: list[float]) -> dict[str, float]:
    """The image-score calibration from the scores of normal images: ``image_center``
    (their median) and ``image_threshold`` (their highest)."""
    center = float(np.median(scores))
    return {"image_center": center, "image_threshold": max(float(np.max(scores)), center + 1e-6)}


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
