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

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.chooser import TTA_GAIN, tta_gain_text, tta_pays
from ..core.evaluate import ANOMALY_SCORE
from ..core.images import non_finite, read_image, stack_note
from ..core.maps import check_heatmap_folder, heatmap_path, regions_from_probabilities
from ..core.model import BioAnomalyError, Dataset, ImageRecord
from ..core.operating import OperatingPoint
from ..core.paths import resolve_image
from . import anomaly, models
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import ANOMALY_MODELS, REGISTRY, TTA_MODELS, TTA_SETTINGS, TrainConfig
from .data import normalise
from .device import pick_device
from .events import PredictEvent
from .forest import Forest
from .tiling import blend_tiles


@dataclass
class Predictor:
    """A trained model ready to predict, with what it needs from its checkpoint."""

    model: torch.nn.Module | None
    kind: str
    classes: list[str]
    config: TrainConfig
    device: torch.device
    #: ``scoring`` (calibration and memory bank) of the unsupervised models, ``forest``
    extra: dict[str, Any] = field(default_factory=dict)
    #: threshold and minimum area chosen on the validation images after training
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    #: the point chosen on validation maps averaged over the flips and rotations of
    #: test-time augmentation (``None``: not chosen; see :meth:`point`)
    tta_point: OperatingPoint | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Predictor:
        return cls.from_checkpoint(path, load_checkpoint(path), device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, ckpt: dict[str, Any], device: str) -> Predictor:
        """The predictor of a checkpoint already read (and checked) from ``path``."""
        try:
            point = OperatingPoint.from_dict(ckpt.get("operating_point"))
            tta = ckpt.get("operating_point_tta")
            tta_point = None if tta is None else OperatingPoint.from_dict(tta)
        except BioAnomalyError as exc:
            raise BioAnomalyError(f"{path}: {exc}") from None
        predictor = cls._load(path, ckpt, device)
        predictor.operating_point = point
        predictor.tta_point = tta_point
        return predictor

    def point(self, tta: bool = False) -> OperatingPoint:
        """The operating point to predict with: with ``tta``, the one chosen on averaged
        maps where the model has one (TTA's maps peak lower: a point tuned to plain maps
        can lose what the averaging gains; ``docs/benchmarks.md``)."""
        if tta and self.kind in TTA_MODELS and self.tta_point is not None:
            return self.tta_point
        return self.operating_point

    def lacks_tta_point(self, tta: bool) -> bool:
        """Whether predicting with ``tta`` falls back on the plain point."""
        return tta and self.kind in TTA_MODELS and self.tta_point is None

    @property
    def tta_by_default(self) -> bool:
        """Whether predicting uses test-time augmentation unless told otherwise: where it
        paid on the model's own validation images (:func:`~..core.chooser.tta_pays`)."""
        return self.kind in TTA_MODELS and tta_pays(self.operating_point, self.tta_point)

    def tta_gain(self) -> str:
        """What test-time augmentation gained on validation, in words (for a model whose
        :attr:`tta_by_default` holds)."""
        return tta_gain_text(self.operating_point, self.tta_point)

    @classmethod
    def _load(cls, path: str | Path, ckpt: dict[str, Any], device: str) -> Predictor:
        dev = pick_device(device)
        config = TrainConfig.from_dict(ckpt["config"])
        classes = list(ckpt["classes"])
        trainer = REGISTRY[config.model].trainer
        if trainer == "forest":
            if "forest" not in ckpt:
                raise BioAnomalyError(f"{path}: forest checkpoint without its trees")
            try:
                forest = Forest.from_state(ckpt["forest"], len(classes) + 1)
            except BioAnomalyError as exc:
                raise BioAnomalyError(f"{path}: {exc}") from None
            return cls(None, config.model, classes, config, dev, {"forest": forest})
        extra = {}
        if config.unsupervised:
            if "scoring" not in ckpt:
                raise BioAnomalyError(
                    f"{path}: anomaly scores not calibrated (a .last.pt file, or training "
                    "stopped early): use the best checkpoint, or resume the training to its end"
                )
            extra["scoring"] = ckpt["scoring"]
            filters = extra["scoring"].get("descriptors", "filters") == "filters"
            if trainer == "memory" and filters:  # no network: the bank, its calibration
                return cls(None, config.model, classes, config, dev, extra)
        try:
            model = model_from_checkpoint(ckpt, dev)
        except BioAnomalyError as exc:
            raise BioAnomalyError(f"{path}: {exc}") from None
        return cls(model, config.model, classes, config, dev, extra)


def _mean_min_peak(points: list[OperatingPoint]) -> float | None:
    """The minimum peak of an ensemble: the mean of its members' (a member without one
    counts its threshold, which is what it keeps), ``None`` when no member has one."""
    if all(p.min_peak is None for p in points):
        return None
    peak = float(np.mean([p.threshold if p.min_peak is None else p.min_peak for p in points]))
    threshold = float(np.mean([p.threshold for p in points]))
    return peak if threshold < peak < 1 else None


def _mean_vote_weights(points: list[OperatingPoint]) -> dict[str, float]:
    """The vote weights of an ensemble: each class's geometric mean over the members (a
    member that does not weight a class counts 1 for it)."""
    named = {name for p in points for name in p.vote_weights}
    means = {name: float(np.exp(np.mean([np.log(p.vote_weights.get(name, 1.0)) for p in points])))
             for name in sorted(named)}  # fmt: skip
    return {name: w for name, w in means.items() if w != 1.0}


@dataclass
class Ensemble:
    """Several trained models that predict as one: their anomaly probabilities averaged.

    As the brightfield study recommended (a U-Net with a Mask R-CNN), or the fold
    models of a cross-validation. Members that learned the classes (all the
    same; other classes are refused) average their class probabilities too, so
    each region's class is their vote; unsupervised anomaly maps add to
    "anomaly or not" only. The operating point is the members' mean threshold
    and minimum areas.
    """

    members: list[Predictor]

    @classmethod
    def load(cls, paths: Sequence[str | Path], device: str = "auto") -> Ensemble | Predictor:
        """One model as a :class:`Predictor`, several as an ensemble."""
        if not paths:
            raise BioAnomalyError("no model given")
        members = [Predictor.load(p, device) for p in paths]
        if len(members) == 1:
            return members[0]
        # a model that learned classes names them, if any does
        named = sorted(zip(paths, members, strict=True), key=lambda p: p[1].classes == ["anomaly"])
        first_path, first = named[0]
        for path, m in named[1:]:
            if m.classes not in (first.classes, ["anomaly"]):
                raise BioAnomalyError(
                    f"{path} learned the classes {m.classes}, {first_path} {first.classes}: "
                    "the models of an ensemble need the same classes (or be anomaly maps)"
                )
        return cls([m for _, m in named])

    @property
    def classes(self) -> list[str]:
        return self.members[0].classes

    def lacks_tta_point(self, tta: bool) -> bool:
        return any(m.lacks_tta_point(tta) for m in self.members)

    @property
    def tta_by_default(self) -> bool:
        """Where every member that test-time augmentation applies to gains by it (and
        one does)."""
        networks = [m for m in self.members if m.kind in TTA_MODELS]
        return bool(networks) and all(m.tta_by_default for m in networks)

    def tta_gain(self) -> str:
        return "; ".join(m.tta_gain() for m in self.members if m.kind in TTA_MODELS)

    @property
    def operating_point(self) -> OperatingPoint:
        return self.point()

    def point(self, tta: bool = False) -> OperatingPoint:
        """The members' points (for ``tta``, see :meth:`Predictor.point`), averaged."""
        points = [m.point(tta) for m in self.members]
        own = {name for p in points for name in p.class_min_area}
        return OperatingPoint(
            float(np.mean([p.threshold for p in points])),
            float(np.mean([p.min_area for p in points])),
            source="validation" if all(p.source == "validation" for p in points) else "default",
            class_min_area={c: float(np.mean([p.min_area_of(c) for p in points])) for c in own},
            criterion=points[0].criterion if len({p.criterion for p in points}) == 1 else "mean",
            min_peak=_mean_min_peak(points),
            vote_weights=_mean_vote_weights(points),
        )

    def probabilities(
        self, image: np.ndarray, tta: bool = False
    ) -> tuple[np.ndarray, float | None]:
        """Mean class probabilities and mean image score (of members that give one)."""
        n_out = len(self.classes) + 1
        fg = None
        classes = np.zeros((n_out - 1, *image.shape[:2]), dtype=np.float32)
        scores = []
        for m in self.members:
            probs, score = predict_image(m, image, tta=tta)
            fg = (1.0 - probs[0]) if fg is None else fg + (1.0 - probs[0])
            if m.classes == self.classes:
                classes += probs[1:]
            if score is not None:
                scores.append(score)
        assert fg is not None
        fg /= len(self.members)
        share = classes / np.maximum(classes.sum(axis=0, keepdims=True), 1e-12)
        out = np.concatenate([(1.0 - fg)[None], share * fg[None]]).astype(np.float32)
        return out, (float(np.mean(scores)) if scores else None)


@torch.no_grad()
def class_probabilities(
    predictor: Predictor,
    image: np.ndarray,
    tile: int | None = None,
    overlap: float = 0.25,
    batch: int = 4,
) -> np.ndarray:
    """Per-class probabilities ``(n_classes + 1, rows, cols)`` of an image (0 = background).

    For the unsupervised models the classes are background and ``anomaly``, and
    the anomaly "probability" is the calibrated anomaly map (see :mod:`.anomaly`).
    """
    return predict_image(predictor, image, tile, overlap, batch)[0]


#: The eight flips and 90-degree rotations of test-time augmentation: (rotations, flip).
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def _transform(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` quarter turns, then flip left-right."""
    a = np.rot90(a, k, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)


def _untransform(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`_transform`."""
    a = a[..., ::-1] if flip else a
    return np.ascontiguousarray(np.rot90(a, -k, axes=(-2, -1)))


#: :data:`~.config.TTA_MODELS`: the models test-time augmentation applies to (the
#: networks); others ignore ``tta``, which the CLI and the Review widget say with this.
TTA_APPLIES = "flips and rotations apply to U-Net and Mask R-CNN"


def use_tta(predictor: Predictor | Ensemble, setting: str) -> bool:
    """Whether to predict with test-time augmentation under ``setting`` (one of
    :data:`~.config.TTA_SETTINGS`: ``auto`` where the model's validation shows it pays,
    :attr:`Predictor.tta_by_default`)."""
    if setting not in TTA_SETTINGS:
        raise BioAnomalyError(f"test-time augmentation: {setting!r} is not one of "
                              f"{', '.join(TTA_SETTINGS)}")  # fmt: skip
    return setting == "yes" or (setting == "auto" and predictor.tta_by_default)


def tta_note(predictor: Predictor | Ensemble, setting: str) -> str:
    """What ``setting`` decided and why, for the CLI and the Review widget; empty where
    there is nothing to say (``auto`` and a model without a gain on validation)."""
    if setting == "auto" and use_tta(predictor, setting):
        return ("test-time augmentation on, as the model chose (" + predictor.tta_gain()
                + f": at least {TTA_GAIN:g} better; 8x the prediction time)")  # fmt: skip
    return ""


@torch.no_grad()
def predict_image(
    predictor: Predictor,
    image: np.ndarray,
    tile: int | None = None,
    overlap: float = 0.25,
    batch: int = 4,
    tta: bool = False,
) -> tuple[np.ndarray, float | None]:
    """Class probabilities of an image and, for the unsupervised models, its image score.

    With ``tta`` (networks only: U-Net, Mask R-CNN) the probabilities are the mean
    over the eight flips and 90-degree rotations of the image, each mapped back.
    """
    if tta and predictor.kind in TTA_MODELS:
        norm = normalise(image, predictor.config.low, predictor.config.high)
        total: np.ndarray | None = None  # summed as they come: one map held at a time
        for k, f in DIHEDRAL:
            probs = _network_probabilities(predictor, _transform(norm, k, f), tile, overlap, batch)
            probs = _untransform(probs, k, f)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(DIHEDRAL), None
    kind = predictor.kind
    norm = normalise(image, predictor.config.low, predictor.config.high)
    if kind == "forest":
        return predictor.extra["forest"].probabilities(norm), None

    if kind in ANOMALY_MODELS:
        heat, score = anomaly.image_map(
            kind,
            norm,
            predictor.model,
            predictor.extra["scoring"],
            predictor.device,
        )
        return np.stack([1.0 - heat, heat]), score
    return _network_probabilities(predictor, norm, tile, overlap, batch), None


def _network_probabilities(
    predictor: Predictor, norm: np.ndarray, tile: int | None, overlap: float, batch: int
) -> np.ndarray:
    """Blended tile probabilities of a normalised image through the predictor's network."""
    model, kind = predictor.model, predictor.kind
    tile = tile or predictor.config.tile
    assert model is not None
    model.eval()
    n_out = len(predictor.classes) + 1

    def probabilities(x: torch.Tensor) -> np.ndarray:
        if kind == "unet":
            return torch.softmax(model(x).float(), dim=1).cpu().numpy()
        classes, foreground = models.predict_classes(kind, model, x)
        cls_map, fg = classes.cpu().numpy(), foreground.cpu().numpy()
        probs = np.zeros((len(x), n_out, *x.shape[-2:]), dtype=np.float32)
        probs[:, 0] = 1.0 - fg
        for c in range(1, n_out):
            probs[:, c] = np.where(cls_map == c, fg, 0.0)
        return probs

    return blend_tiles(norm, tile, probabilities, predictor.device, overlap, batch)


def predict_dataset(
    predictor: Predictor | Ensemble,
    dataset: Dataset,
    threshold: float | None = None,
    min_area: float | None = None,
    tolerance: float = 0.5,
    done: dict[str, ImageRecord] | None = None,
    heatmaps: str | Path | None = None,
    tta: bool = False,
    min_peak: float | None = None,
) -> Generator[PredictEvent, None, Dataset]:
    """Predict every image of ``dataset``; yields progress, returns the predictions.

    The returned dataset has the images predicted (file names, file attributes, order)
    with their regions. Images in ``done`` (from an interrupted run) are taken
    from there, not predicted again. An unreadable image is reported in an event whose
    ``message`` names it and says why, without a record, and is left out of the returned
    dataset (not kept as an image without regions, which would read as a clean negative).
    Each other event carries the image's finished record, so a
    caller can keep a manifest of the work done. The unsupervised models also
    give each image its anomaly score (file attribute :data:`ANOMALY_SCORE`);
    with ``heatmaps`` a folder, each image's anomaly map (``1 - p(background)``,
    float32 TIFF) is written there (:func:`~..core.maps.heatmap_name`). An image whose
    prediction fails (a library's limit met by an odd image) is reported and left out the
    same way, and the others are predicted. ``threshold`` and
    ``min_area`` default to the model's operating point (chosen on validation), and so
    does ``min_peak`` (regions kept only where the map exceeds it) unless ``threshold`` is
    given.
    ``tta``: test-time augmentation (see :func:`predict_image`), with the point chosen on
    averaged maps where the model has one (:meth:`Predictor.point`). An
    :class:`Ensemble` predicts as one model.
    """
    point = predictor.point(tta).overridden(threshold, min_area, min_peak)
    root = dataset.root or Path(".")
    if heatmaps is not None:
        check_heatmap_folder(heatmaps, root, [im.filename for im in dataset.images])
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
        try:
            path = resolve_image(root, im.filename)
            planes = check_predictable(path, len(predictor.classes) + 1)
            pixels = read_image(path)
        except BioAnomalyError as exc:
            message = f"{exc}; not predicted, left out of the predictions"
            yield PredictEvent(i + 1, len(dataset.images), im.filename, 0, message)
            continue
        record.shape = pixels.shape[:2]
        try:
            if isinstance(predictor, Ensemble):
                probs, image_score = predictor.probabilities(pixels, tta)
            else:
                probs, image_score = predict_image(predictor, pixels, tta=tta)
        except BioAnomalyError:
            raise
        except Exception as exc:  # this image defeats a library: said, and the others go on
            message = (f"{im.filename}: not predicted ({type(exc).__name__}: {exc}); left out "
                       "of the predictions")  # fmt: skip
            yield PredictEvent(i + 1, len(dataset.images), im.filename, 0, message)
            continue
        wrong = _not_finite(probs, image_score)
        if wrong:  # never written: JSON has no NaN, and a NaN map outlines nothing
            message = f"{im.filename}: not predicted ({wrong}); left out of the predictions"
            yield PredictEvent(i + 1, len(dataset.images), im.filename, 0, message)
            continue
        if image_score is not None:
            record.file_attributes[ANOMALY_SCORE] = image_score
        if heatmaps is not None:
            write_heatmap(heatmap_path(heatmaps, im.filename), 1.0 - probs[0])
        out.images.append(record)
        record.regions = regions_from_probabilities(
            probs,
            predictor.classes,
            point.threshold,
            point.min_area,
            tolerance,
            point.class_min_area,
            point.min_peak,
            point.vote_weights,
        )
        note = _image_note(im.filename, planes, pixels)
        yield PredictEvent(i + 1, len(dataset.images), im.filename, len(record.regions), "", record,
                           note=note)  # fmt: skip
    return out


def _not_finite(probs: np.ndarray, score: float | None) -> str:
    """What of a prediction is NaN or infinite, in words ("" when nothing is)."""
    if score is not None and not math.isfinite(score):
        return f"its anomaly score is {score}, not a finite number"
    if not np.isfinite(probs).all():
        return "its map holds NaN or infinite values"
    return ""


def _image_note(filename: str, planes: int, pixels: np.ndarray) -> str:
    """What a user is told of an image predicted: a stack's first plane used, NaN or
    infinite pixels taken as the median grey (:data:`~..core.images.NON_FINITE`)."""
    said = [stack_note(planes)] if planes > 1 else []
    bad = non_finite(pixels)
    if bad is not None:
        count = int(bad.any(axis=-1).sum()) if bad.ndim == 3 else int(bad.sum())
        said.append(f"{count} NaN or infinite pixels, predicted as the median of the others")
    return f"{filename}: {'; '.join(said)}" if said else ""


#: Prediction refuses images whose maps would take more memory than this
#: (``BIOANOMALY_MAX_PREDICT_BYTES``), before reading them.
MAX_PREDICT_BYTES = int(os.environ.get("BIOANOMALY_MAX_PREDICT_BYTES", 8 << 30))


def check_predictable(path: Path, n_out: int) -> int:
    """Refuse, from its header, an image whose prediction would need more than
    :data:`MAX_PREDICT_BYTES`: the normalised image, the blended probabilities of
    ``n_out`` classes and their weights, all float32. Returns its number of planes (a
    stack: more than 1, of which the first is predicted)."""
    from ..core.images import ImageReadError, image_header

    (rows, cols), planes = image_header(path)
    need = rows * cols * 4 * (n_out + 2)
    if need > MAX_PREDICT_BYTES:
        raise ImageReadError(
            f"{path}: {rows}x{cols} px needs about {need / 2**30:.1f} GiB to predict "
            f"(more than {MAX_PREDICT_BYTES / 2**30:.1f} GiB, BIOANOMALY_MAX_PREDICT_BYTES): "
            "crop or tile it first; the other images are predicted"
        )
    return planes


def write_heatmap(path: Path, heat: np.ndarray) -> Path:
    """Write a float32 heatmap TIFF atomically (the previous file kept as ``.bak``)."""
    import io

    import tifffile

    from ..core.fileio import atomic_write

    buf = io.BytesIO()
    tifffile.imwrite(buf, heat.astype(np.float32), compression="zlib")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


def shard(dataset: Dataset, index: int, count: int) -> Dataset:
    """Images ``index, index + count, ...`` (0-based): a deterministic 1/``count`` of them."""
    if not 0 <= index < count:
        raise BioAnomalyError(f"shard {index}/{count}: need 0 <= index < count")
    return dataset.subset(range(index, len(dataset.images), count))


def run(gen: Generator[Any, None, Any]) -> Any:
    """Drain a generator and return its value (for callers that need no progress)."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value
