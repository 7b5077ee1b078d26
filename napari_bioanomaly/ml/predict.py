"""Prediction: tiled inference with overlap blending, and masks back to polygons.

How it works: the image is normalised as in training, cut into overlapping tiles
(a quarter of a tile by default), and each tile's class probabilities are
weighted by a window that falls off towards the tile border before they are
summed; dividing by the summed weights blends the tiles without seams. A pixel
is an anomaly where ``1 - p(background)`` exceeds the threshold, of its most
probable class. Connected anomalies become regions: the outline of each component
(holes filled: VIA and COCO polygons have none), simplified within a tolerance,
specks below a minimum area dropped, with the component's mean probability as
score and ``model`` as source.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.fileio import resolve_image
from ..core.images import read_image
from ..core.model import BioAnomalyError, Dataset, ImageRecord, Region
from . import models
from .config import TrainConfig
from .data import normalise
from .train import load_checkpoint, model_from_checkpoint, pick_device


@dataclass
class Predictor:
    """A trained model ready to predict, with what it needs from its checkpoint."""

    model: torch.nn.Module
    kind: str
    classes: list[str]
    config: TrainConfig
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Predictor:
        ckpt = load_checkpoint(path)
        dev = pick_device(device)
        config = TrainConfig.from_dict(ckpt["config"])
        return cls(
            model_from_checkpoint(ckpt, dev), config.model, list(ckpt["classes"]), config, dev
        )


def _window(tile: int) -> np.ndarray:
    """Blending weights of a tile: 1 in the middle, falling to near 0 at the border."""
    ramp = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1) / (tile / 4)
    w = np.clip(ramp, 0.02, 1.0)
    return np.outer(w, w).astype(np.float32)


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@torch.no_grad()
def class_probabilities(
    predictor: Predictor,
    image: np.ndarray,
    tile: int | None = None,
    overlap: float = 0.25,
    batch: int = 4,
) -> np.ndarray:
    """Per-class probabilities ``(n_classes + 1, rows, cols)`` of an image (0 = background)."""
    model, kind = predictor.model, predictor.kind
    tile = tile or predictor.config.tile
    norm = normalise(image, predictor.config.low, predictor.config.high)
    rows, cols = norm.shape
    # pad to at least one tile, and to a multiple of 16 (the U-Net halves four times)
    pr, pc = max(tile, -(-rows // 16) * 16), max(tile, -(-cols // 16) * 16)
    padded = np.pad(norm, ((0, pr - rows), (0, pc - cols)), mode="reflect" if rows > 1 else "edge")
    n_out = len(predictor.classes) + 1
    acc = np.zeros((n_out, pr, pc), dtype=np.float32)
    weight = np.zeros((pr, pc), dtype=np.float32)
    window = _window(tile)
    stride = max(16, int(tile * (1 - overlap)))
    origins = [(r, c) for r in _starts(pr, tile, stride) for c in _starts(pc, tile, stride)]
    model.eval()
    for k in range(0, len(origins), batch):
        chunk = origins[k : k + batch]
        x = torch.from_numpy(
            np.stack([padded[r : r + tile, c : c + tile] for r, c in chunk])[:, None]
        )
        x = x.to(predictor.device)
        if kind == "unet":
            probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        else:
            cls_map, fg = models.predict_classes(kind, model, x)
            cls_map, fg = cls_map.cpu().numpy(), fg.cpu().numpy()
            probs = np.zeros((len(chunk), n_out, tile, tile), dtype=np.float32)
            probs[:, 0] = 1.0 - fg
            for i in range(len(chunk)):
                for c in range(1, n_out):
                    probs[i, c] = np.where(cls_map[i] == c, fg[i], 0.0)
        for (r, c), p in zip(chunk, probs, strict=True):
            acc[:, r : r + tile, c : c + tile] += p * window
            weight[r : r + tile, c : c + tile] += window
    return (acc / np.maximum(weight, 1e-6))[:, :rows, :cols]


def regions_from_probabilities(
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float = 0.5,
    min_area: float = 16.0,
    tolerance: float = 0.5,
) -> list[Region]:
    """Regions of the connected anomalies of a probability map."""
    import shapely
    from scipy import ndimage
    from shapely.geometry import Polygon
    from skimage.measure import find_contours

    fg = 1.0 - probs[0]
    labels, _ = ndimage.label(fg > threshold)
    out = []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == index
        if comp.sum() < min_area:
            continue
        filled = ndimage.binary_fill_holes(comp)
        contour = max(find_contours(np.pad(filled, 1).astype(np.float32), 0.5), key=len)
        # contour points are pixel centres of the padded crop: back to model coordinates
        contour = contour - 1 + (sl[0].start, sl[1].start) + 0.5
        poly = shapely.simplify(Polygon(contour), tolerance)
        if not isinstance(poly, Polygon) or poly.is_empty or poly.area < min_area:
            continue
        ring = np.asarray(poly.exterior.coords)[:-1]
        if len(ring) < 3:
            continue
        class_scores = probs[1:, sl[0], sl[1]][:, comp].sum(axis=1)
        label = classes[int(np.argmax(class_scores))]
        score = float(fg[sl][comp].mean())
        out.append(Region(ring, label, score=round(score, 4), source="model", shape="polygon"))
    return out


@dataclass(frozen=True)
class PredictEvent:
    """Progress of a prediction run: ``index`` of ``total`` images done."""

    index: int
    total: int
    image: str
    regions: int
    message: str = ""
    record: ImageRecord | None = None
    skipped: bool = False


def predict_dataset(
    predictor: Predictor,
    dataset: Dataset,
    threshold: float = 0.5,
    min_area: float = 16.0,
    tolerance: float = 0.5,
    done: dict[str, ImageRecord] | None = None,
) -> Generator[PredictEvent, None, Dataset]:
    """Predict every image of ``dataset``; yields progress, returns the predictions.

    The returned dataset has the same images (file names, file attributes, order)
    with predicted regions. Images in ``done`` (from an interrupted run) are taken
    from there, not predicted again. Unreadable images are reported in an event
    and keep no regions. Each event carries the image's finished record, so a
    caller can keep a manifest of the work done.
    """
    root = dataset.root or Path(".")
    done = done or {}
    out = Dataset(root=dataset.root, classes=list(predictor.classes))
    for i, im in enumerate(dataset.images):
        if im.filename in done:
            out.images.append(done[im.filename])
            yield PredictEvent(
                i + 1, len(dataset.images), im.filename, len(done[im.filename].regions),
                record=done[im.filename], skipped=True,
            )  # fmt: skip
            continue
        record = ImageRecord(im.filename, im.shape, dict(im.file_attributes), size=im.size)
        out.images.append(record)
        try:
            pixels = read_image(resolve_image(root, im.filename))
        except BioAnomalyError as exc:
            yield PredictEvent(i + 1, len(dataset.images), im.filename, 0, str(exc), record)
            continue
        record.shape = pixels.shape[:2]
        probs = class_probabilities(predictor, pixels)
        record.regions = regions_from_probabilities(
            probs, predictor.classes, threshold, min_area, tolerance
        )
        yield PredictEvent(i + 1, len(dataset.images), im.filename, len(record.regions), "", record)
    return out


def shard(dataset: Dataset, index: int, count: int) -> Dataset:
    """Images ``index, index + count, ...`` (0-based): a deterministic 1/``count`` of them."""
    if not 0 <= index < count:
        raise BioAnomalyError(f"shard {index}/{count}: need 0 <= index < count")
    return Dataset(
        images=dataset.images[index::count],
        root=dataset.root,
        classes=list(dataset.classes),
        class_attribute=dataset.class_attribute,
    )


def run(gen: Generator[Any, None, Any]) -> Any:
    """Drain a generator and return its value (for callers that need no progress)."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value
