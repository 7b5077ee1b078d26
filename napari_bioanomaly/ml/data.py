"""Training data: normalised single-channel tiles with their class and instance masks.

Images are streamed from disk (a small cache of recently read images keeps memory
bounded whatever the number of images). Tiles are drawn at random; a set share
of them is centred on an annotated region, which oversamples the rare anomalous
images. Augmentations change image and masks together.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..core.geometry import rasterise_many
from ..core.images import (
    checked_shape,
    finite_median,
    non_finite,
    percentiles,
    read_image,
    to_grayscale,
)
from ..core.model import BioAnomalyError, Dataset, ImageRecord
from ..core.paths import resolve_image
from ..core.splits import validation_split
from ..core.text import counted
from .config import TrainConfig


def normalise(image: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """Grayscale float32 image scaled so the ``low``/``high`` percentiles map to 0 and 1.

    How it works: RGB becomes luminance; percentiles are taken on a subsample
    of at most about 1 M pixels; values are clipped to ``[-0.5, 1.5]`` so rare
    outliers (saturated dust, dead pixels) cannot dominate. NaN or infinite pixels of a
    float image (and values past float32's range) are left out of the percentiles and
    then take the median of the others, scaled alike (:data:`~..core.images.NON_FINITE`):
    the rest of the image is used as it is.
    """
    gray = to_grayscale(image)
    step = max(1, int(math.sqrt(gray.size / 1_000_000)))
    lo, hi = percentiles(gray[::step, ::step], [low, high])  # 8/16 bit: by histogram
    with np.errstate(over="ignore"):  # float64 past float32's range: inf, then filled
        out = gray.astype(np.float32)  # a copy: scaled in place, in float32
    bad = non_finite(out) if gray.dtype.kind in "fc" else None
    out -= np.float32(lo)
    out *= np.float32(1.0 / max(hi - lo, 1e-6))
    if bad is not None:
        out[bad] = finite_median(out, bad)
    return np.clip(out, -0.5, 1.5, out=out)


def class_names(dataset: Dataset) -> list[str]:
    """Classes the model learns: the dataset's classes that some region uses, in order."""
    used = set(dataset.class_counts())
    return [c for c in dataset.class_names() if c in used]


def rasterise(
    image: ImageRecord, classes: list[str], shape: tuple[int, int], origin: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Class mask (0 = background, i + 1 = ``classes[i]``) and instance mask of a window.

    The window has ``shape`` and starts at pixel ``origin`` of the image; only
    regions overlapping it are drawn, each within its own bounding box, so tiles
    and whole images of many regions stay cheap.
    """
    cls = np.zeros(shape, dtype=np.int64)
    inst = np.zeros(shape, dtype=np.int32)
    r0, c0 = origin
    drawn = []  # (instance, class) of the regions that reach into the window, in order
    for i, region in enumerate(image.regions, start=1):
        br0, bc0, br1, bc1 = region.bbox
        if br1 <= r0 or bc1 <= c0 or br0 >= r0 + shape[0] or bc0 >= c0 + shape[1]:
            continue
        if region.label in classes:
            drawn.append((i, classes.index(region.label) + 1))
    # all of them in one vectorised pass (traced outlines have hundreds of vertices: one
    # call per region cost most of a training tile)
    polygons = [image.regions[i - 1].polygon - (r0, c0) for i, _ in drawn]
    for (i, c), (wr, wc, window) in zip(drawn, rasterise_many(polygons, shape), strict=True):
        h, w = window.shape
        if h and w:
            cls[wr : wr + h, wc : wc + w][window] = c
            inst[wr : wr + h, wc : wc + w][window] = i
    return cls, inst


def split(dataset: Dataset, config: TrainConfig) -> tuple[list[int], list[int]]:
    """Training and validation image indices of a run (see
    :func:`~napari_bioanomaly.core.splits.validation_split`; the unsupervised models
    validate on every annotated image when most images are normal)."""
    return validation_split(
        dataset,
        config.val_fraction,
        config.val_attribute,
        config.val_values,
        config.seed,
        annotated_validate=config.unsupervised,
    )


def check_images(dataset: Dataset, indices: list[int]) -> None:
    """Check that every image is whole without decoding it (its header and its file's end,
    :func:`~napari_bioanomaly.core.images.checked_shape`); raise one error naming all
    missing, unreadable or cut-short images."""
    root = dataset.root or Path(".")
    bad = []
    for i in indices:
        im = dataset.images[i]
        try:
            shape = checked_shape(resolve_image(root, im.filename))
        except BioAnomalyError as exc:
            bad.append((im.filename, str(exc)))
            continue
        im.shape = im.shape or shape
    _raise_unreadable(bad)


def read_all(dataset: Dataset, indices: list[int]) -> None:
    """Decode every image (slow: for naming all that cannot be read once one could not be);
    raise one error naming all that cannot."""
    root = dataset.root or Path(".")
    bad = []
    for i in indices:
        name = dataset.images[i].filename
        try:
            read_image(resolve_image(root, name))
        except BioAnomalyError as exc:
            bad.append((name, str(exc)))
    _raise_unreadable(bad)


def _raise_unreadable(bad: list[tuple[str, str]]) -> None:
    """One error naming every image of ``bad`` (file name, why): the first five with why."""
    if bad:
        rest = [name for name, _ in bad[5:]]
        more = f"; and {len(rest)} more: {', '.join(rest)}" if rest else ""
        raise BioAnomalyError(f"{counted(len(bad), 'image')} cannot be read: "
                              + "; ".join(why for _, why in bad[:5]) + more)  # fmt: skip


#: Bytes of normalised images that a :class:`TileSampler` keeps (its data-loader workers
#: share them, each keeping its own images): every image of a dataset of small images
#: (600 NEU-Seg images of 200 px: 96 MB), ~55 of 1080 px. Random tiles otherwise re-read
#: and re-normalise an image for almost every tile. Masks are not kept: a tile's window is
#: rasterised from the regions that reach into it (0.1-0.5 ms), cheaper than drawing a
#: whole image's masks again whenever they have left a cache (bench_tile_sampling.py).
TILE_CACHE_BYTES = 256 << 20


class ImageCache:
    """Normalised images by index, so tiles do not re-read files: the most recently used
    kept, at least the last ``size`` and more while they take at most ``budget`` bytes, so
    memory stays bounded on any dataset. Least recently used goes first, which suits
    random tiles; :class:`DerivedCache` keeps the first maps instead, which suits passes
    over the same images in the same order."""

    def __init__(
        self, dataset: Dataset, config: TrainConfig, size: int = 8, budget: int = 0
    ) -> None:
        self.dataset = dataset
        self.root = dataset.root or Path(".")
        self.config = config
        self.size, self.budget = size, budget
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __call__(self, index: int) -> np.ndarray:
        if index in self._items:
            self._items.move_to_end(index)
            return self._items[index]
        im = self.dataset.images[index]
        value = normalise(read_image(resolve_image(self.root, im.filename)), self.config.low,
                          self.config.high)  # fmt: skip
        self._items[index] = value
        self._bytes += value.nbytes
        while len(self._items) > self.size and self._bytes > self.budget:
            self._bytes -= self._items.popitem(last=False)[1].nbytes
        return value

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of the images kept."""
        return self._bytes


class DerivedCache:
    """Maps derived from normalised images (``derive(norm)``, e.g. the line cue), kept by
    image index up to ``budget`` bytes, so that steps that visit the same images (a
    memory bank's calibration and validation, two banks) derive each map once. Maps past
    the budget are derived again each time: memory stays bounded on any dataset."""

    def __init__(self, derive: Callable[[np.ndarray], np.ndarray], budget: int = 256 << 20) -> None:
        self.derive = derive
        self.budget = budget
        self._items: dict[int, np.ndarray] = {}
        self._bytes = 0

    def __call__(self, index: int, norm: np.ndarray) -> np.ndarray:
        if index in self._items:
            return self._items[index]
        value = self.derive(norm)
        if self._bytes + value.nbytes <= self.budget:
            self._items[index] = value
            self._bytes += value.nbytes
        return value


def crop(array: np.ndarray, r0: int, c0: int, tile: int, fill: float = 0) -> np.ndarray:
    """A ``tile`` x ``tile`` window at ``(r0, c0)``, padded with ``fill`` outside the array."""
    out = np.full((tile, tile), fill, dtype=array.dtype)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + tile, array.shape[0]), min(c0 + tile, array.shape[1])
    if re > rs and ce > cs:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = array[rs:re, cs:ce]
    return out


#: Half the training tiles are also turned by any angle up to 45 degrees and zoomed by
#: x0.8-1.25 (on top of the 90-degree turns). With few annotated defects a network
#: otherwise learns those few by heart: on KolektorSDD (19 cracked images to learn
#: from) its validation IoU peaked at epoch 18 and fell; with these turns test pixel F1
#: went from 0.530 to 0.709 (docs/benchmarks.md).
TURN_SHARE, MAX_TURN, ZOOM = 0.5, 45.0, 1.25


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    cls: np.ndarray,
    inst: np.ndarray,
    turns: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flips and 90-degree rotations of all three; contrast, brightness, slight blur and
    noise of the image; then, with ``turns``, one tile in :data:`TURN_SHARE` turned and
    zoomed, all three."""
    k = int(rng.integers(4))
    arrays = [np.rot90(a, k) for a in (image, cls, inst)]
    if rng.random() < 0.5:
        arrays = [np.fliplr(a) for a in arrays]
    image, cls, inst = (np.ascontiguousarray(a) for a in arrays)
    image = image * np.float32(rng.uniform(0.8, 1.25)) + np.float32(rng.uniform(-0.1, 0.1))
    if rng.random() < 0.2:  # a little defocus; more would erase the thin and faint defects
        image = ndimage.gaussian_filter(image, rng.uniform(0.0, 1.0))
    if rng.random() < 0.5:  # (float32 draws would be faster, but change every run's tiles)
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), image.shape).astype(np.float32)
    # drawn last, so the draws above (and tiles without a turn) are as they were
    if turns and rng.random() < TURN_SHARE:
        angle = np.deg2rad(rng.uniform(-MAX_TURN, MAX_TURN))
        zoom = float(np.exp(rng.uniform(-np.log(ZOOM), np.log(ZOOM))))
        image, cls, inst = turn(angle, zoom, image, cls, inst)
    return image.astype(np.float32, copy=False), cls, inst


def turn_matrix(angle: float, zoom: float, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset that take an output pixel of :func:`turn` to its source
    coordinates (``ndimage.affine_transform``'s convention): turned by ``angle`` (radians)
    and zoomed by ``zoom`` about the centre of an array of ``shape``."""
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    matrix = np.array([[cos, -sin], [sin, cos]])
    centre = (np.array(shape[:2]) - 1) / 2.0
    return matrix, centre - matrix @ centre


def turn(
    angle: float, zoom: float, image: np.ndarray, cls: np.ndarray, inst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image`` (linear interpolation), class mask ``cls`` and instance mask ``inst``
    (nearest) turned by ``angle`` (radians) and zoomed by ``zoom`` about their centre,
    same shape. What the turn brings in from outside is the tile mirrored at its edges,
    masks too; a mirrored copy of a region is an instance of its own (its id plus a
    multiple of the tile's largest id), as it is in the image, so a detector's target box
    holds one piece, not a region and its mirror image at the far side of the tile.

    Both masks are looked up at the nearest source pixel with one set of source
    coordinates: what ``ndimage.affine_transform(order=0, mode="reflect")`` gives for each
    (tested over random turns; a coordinate exactly halfway between two pixels, which
    only special angles and zooms give, may round the other way).
    """
    shape = image.shape
    matrix, offset = turn_matrix(angle, zoom, shape)
    image = ndimage.affine_transform(image, matrix, offset, order=1, mode="reflect")
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    flat: np.ndarray = np.zeros(np.shape(rows))
    copies = []
    for axis, n in enumerate(shape):  # as scipy: mirror the coordinate, then round half up
        source = (matrix[axis, 0] * rows + matrix[axis, 1] * cols) + offset[axis] + 0.5
        copy = np.floor(source / n)  # ..., -1, 0, 1, ...: which copy of the tile
        source -= 2 * n * np.floor(copy / 2)  # the tile and its mirror image: [0, 2n)
        copies.append(copy)
        folded = n - np.abs(source - n)  # the mirror image's half folded back: [0, n]
        flat = flat * n + np.minimum(np.floor(folded), n - 1)
    flat = flat.astype(np.intp)
    cls, inst = cls.ravel()[flat], inst.ravel()[flat]
    mirrored = ((copies[0] != 0) | (copies[1] != 0)) & (inst > 0)
    if mirrored.any():
        _, index = np.unique(copies[0][mirrored] * 4096 + copies[1][mirrored], return_inverse=True)
        inst[mirrored] += (index.astype(inst.dtype) + 1) * max(int(inst.max()), 1)
    return image, cls, inst


def fit_tile(config: TrainConfig, dataset: Dataset, indices: list[int]) -> TrainConfig:
    """``config`` with a tile fitted to images no larger than it.

    A tile that holds whole images trains on padding (a 200 px image in a 256 px
    tile is 40% of it) and shows the network the same picture every time, only
    flipped. Then the tile becomes about two thirds of the images' smaller side
    (median; a multiple of 16, at least 64): tiles crop different parts of each
    image and a step costs less. On NEU-Seg (200 px images) this took the default
    U-Net from instance F1 0.49-0.53 (208 px tiles, 28-33 epochs) to 0.57 (128 px,
    44 epochs) in the same 15 minutes. Images larger than the tile are cropped
    already: the tile is kept.
    """
    shapes = [s for i in indices if (s := dataset.images[i].shape) is not None]
    if not shapes or len(shapes) < len(indices):
        return config
    if max(max(s[:2]) for s in shapes) > config.tile:
        return config
    smaller = float(np.median([min(s[:2]) for s in shapes]))
    tile = max(64, round(smaller * 2 / 3 / 16) * 16)
    return config.replace(tile=tile) if tile < config.tile else config


def balanced_weights(counts: np.ndarray) -> np.ndarray:
    """Class weights inverse to the square root of each class's count, mean 1 over the
    classes present (absent classes get 1): rare classes count more, without the
    instability of plain inverse frequencies."""
    counts = np.asarray(counts, dtype=float)
    present = counts > 0
    w = np.ones(len(counts))
    if present.any():
        w[present] = np.sqrt(counts[present].sum() / (present.sum() * counts[present]))
        w[present] /= w[present].mean()
    return w


def pixel_counts(dataset: Dataset, indices: list[int], classes: list[str]) -> np.ndarray:
    """Pixels of background and of each class in the images (from polygon areas)."""
    counts = np.zeros(len(classes) + 1)
    for i in indices:
        im = dataset.images[i]
        total = float(np.prod(im.shape)) if im.shape else 0.0
        used = 0.0
        for r in im.regions:
            if r.label in classes:
                counts[classes.index(r.label) + 1] += r.area
                used += r.area
        counts[0] += max(total - used, 0.0)
    return counts


def quality_filter(
    dataset: Dataset, indices: list[int]
) -> tuple[list[int], list[tuple[str, tuple[str, ...]]]]:
    """Images without quality flags, and the (file, flags) of those left out.

    Stored flags (the ``qc`` file attribute) are used; images never checked are
    checked now.
    """
    from ..core.quality import stored_or_checked

    root = dataset.root or Path(".")
    kept, dropped = [], []
    every = stored_or_checked(root, [dataset.images[i] for i in indices])
    for i, flags in zip(indices, every, strict=True):
        if flags:
            dropped.append((dataset.images[i].filename, flags))
        else:
            kept.append(i)
    return kept, dropped


class TileSampler:
    """Random training tiles of the given images, oversampling annotated regions.

    With ``config.class_balance`` an anomaly tile first draws a class uniformly,
    then one of its regions: rare classes are seen as often as common ones.
    """

    def __init__(
        self, dataset: Dataset, indices: list[int], classes: list[str], config: TrainConfig
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.classes = classes
        self.config = config
        self.cache = ImageCache(dataset, config, budget=TILE_CACHE_BYTES)
        self.regions = [
            (i, j)
            for i in self.indices
            for j, r in enumerate(dataset.images[i].regions)
            if r.label in classes
        ]
        self.by_class = [[(i, j) for i, j in self.regions
                          if dataset.images[i].regions[j].label == c] for c in classes]  # fmt: skip
        self.by_class = [group for group in self.by_class if group]
        self.anomaly_fraction = config.anomaly_fraction
        if not self.regions:
            raise BioAnomalyError(
                "no annotated anomalies in the training images: annotate some regions first"
            )

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One tile: normalised image (float32), class mask (int64), instance mask (int32)."""
        tile = self.config.tile
        if rng.random() < self.anomaly_fraction:
            if self.config.class_balance:
                group = self.by_class[int(rng.integers(len(self.by_class)))]
                index, j = group[int(rng.integers(len(group)))]
            else:
                index, j = self.regions[int(rng.integers(len(self.regions)))]
            image = self.cache(index)
            r0, c0, r1, c1 = self.dataset.images[index].regions[j].bbox
            centre = rng.uniform((r0, c0), (max(r1, r0 + 1), max(c1, c0 + 1)))
            origin = (centre - tile / 2 + rng.uniform(-tile / 4, tile / 4, 2)).astype(int)
        else:
            index = self.indices[int(rng.integers(len(self.indices)))]
            image = self.cache(index)
            origin = np.array(
                [int(rng.integers(0, max(1, s - tile + 1))) for s in image.shape], dtype=int
            )
        rows, cols = image.shape
        r, c = (
            int(np.clip(origin[0], min(0, rows - tile), max(0, rows - tile))),
            int(np.clip(origin[1], min(0, cols - tile), max(0, cols - tile))),
        )
        if rows < tile or cols < tile:  # small images: centred in the tile
            r, c = (
                (rows - tile) // 2 if rows < tile else r,
                (cols - tile) // 2 if cols < tile else c,
            )
        img = crop(image, r, c, tile)
        cls, inst = rasterise(self.dataset.images[index], self.classes, (tile, tile), (r, c))
        if r < 0 or c < 0 or r + tile > rows or c + tile > cols:  # nothing outside the image
            inside = np.zeros((tile, tile), dtype=bool)
            inside[max(0, -r) : rows - r, max(0, -c) : cols - c] = True
            cls[~inside], inst[~inside] = 0, 0
        if self.config.augment:
            img, cls, inst = augment(rng, img, cls, inst)
        return img, cls, inst


class TileStream(torch.utils.data.IterableDataset):
    """An endless stream of training batches that any number of processes can share.

    Tile ``k`` of the run is drawn from its own random stream ``(seed, k)``, so
    every split of the run gives the same tiles: process ``rank`` of ``world``
    (distributed training) takes ``k = start + rank, start + rank + world, ...``, in
    batches of ``batch`` of them, and its data loader worker ``w`` of ``W`` draws every
    ``W``-th batch. A global batch is therefore the same whether one process draws it or
    several share it, and each process oversamples anomalies at the configured rate.

    Each item is a whole batch, stacked where it was drawn: images ``(B, 1, T, T)``
    float32, class masks ``(B, T, T)`` int64, instance masks ``(B, T, T)`` int32. A loader
    worker hands over three arrays per batch, not per tile (one hand-over per tile cost
    more than it saved: four workers made GPU training slower, docs/benchmarks.md).
    """

    def __init__(
        self,
        sampler: TileSampler,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        batch: int = 1,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.seed = seed
        self.rank, self.world, self.start, self.batch = rank, world, start, batch
        self.budget = sampler.cache.budget

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.sampler.cache.budget = self.budget // workers  # each worker keeps its own images
        tile, n = self.sampler.config.tile, self.batch
        j = worker  # this worker's batches: j, j + workers, ...
        while True:
            images = np.empty((n, 1, tile, tile), dtype=np.float32)
            cls = np.empty((n, tile, tile), dtype=np.int64)
            inst = np.empty((n, tile, tile), dtype=np.int32)
            for i in range(n):
                k = self.start + self.rank + self.world * (j * n + i)
                images[i, 0], cls[i], inst[i] = self.sampler.sample(
                    np.random.default_rng([self.seed, k])
                )
            yield torch.from_numpy(images), torch.from_numpy(cls), torch.from_numpy(inst)
            j += workers


def validation_tiles(
    dataset: Dataset,
    indices: list[int],
    classes: list[str],
    config: TrainConfig,
    max_tiles: int = 64,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed validation tiles: a grid covering each validation image (tiles with anomalies
    first).

    Deterministic, so validation scores of different epochs compare. At most
    ``max_tiles`` tiles are kept (all anomalous ones first, then normal ones).
    """
    cache = ImageCache(dataset, config, size=1)
    tile = config.tile
    with_anomaly: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    without: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    from .tiling import starts

    for i in indices:
        image = cache(i)
        rows, cols = image.shape
        for r in starts(rows, tile, tile):  # the last row and column of tiles are flush
            for c in starts(cols, tile, tile):  # with the image's end: all of it is seen
                cls, inst = rasterise(dataset.images[i], classes, (tile, tile), (r, c))
                item = (crop(image, r, c, tile), cls, inst)
                (with_anomaly if cls.any() else without).append(item)
    return (with_anomaly + without)[:max_tiles]


def spread(indices: list[int], limit: int) -> list[int]:
    """At most ``limit`` of the indices, evenly spread."""
    if len(indices) <= limit:
        return list(indices)
    return [indices[int(i)] for i in np.linspace(0, len(indices) - 1, limit)]
