"""Training tiles: milliseconds per random tile, the product's sampler (normalised images
kept within a byte budget, each tile's window rasterised) beside drawing each tile from
scratch (read, normalise, rasterise the tile's window), in the same process.

Two datasets are written to a temporary folder: many small images that all fit the
budget (NEU-Seg's shape: 600 of 200 px, a few regions each), and brightfield-sized images
that do not (120 of 1080 px, 16-bit, ``--regions`` regions each), where many tiles miss
the cache. Tiles are drawn uniformly in both (no oversampling of regions).

With ``--dataset FOLDER`` (a folder of ``benchmarks/real/prepare_*.py``) the sampler
draws tiles from its training images as training does (tile fitted to the images,
regions oversampled, half of them turned and zoomed), beside the same tiles with none
turned; the turn itself is timed beside scipy transforming the image and each mask on
its own (the reference, and what the product did before 2026-12-05; both must agree); and
the masks of as many random tile windows are drawn twice: by the product (every region that reaches into the window in one vectorised pass) and one region
at a time (the reference, and what the product did before 2026-12-04); both must agree. Outlines traced
from masks along pixel edges, as the real datasets' are, have hundreds of vertices.

    python benchmarks/bench_tile_sampling.py [--tiles 400] [--regions 30] [--dataset FOLDER]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.geometry import rasterise_window
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region
from napari_bioanomaly.core.paths import resolve_image
from napari_bioanomaly.ml import data
from napari_bioanomaly.ml.config import TrainConfig


def blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random star-shaped polygon of radius 5-40 px inside an image of ``size``."""
    centre = rng.uniform(20, size - 20, 2)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 24))
    radius = rng.uniform(5, 40) * rng.uniform(0.6, 1.0, 24)
    return centre + np.stack([radius * np.sin(angles), radius * np.cos(angles)], axis=1)


def write(folder: Path, n: int, size: int, regions: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        name = f"im{i:04d}.tif"
        tifffile.imwrite(folder / name, rng.integers(500, 4000, (size, size), dtype=np.uint16))
        k = regions if i % 3 else 0  # a third of the images are normal
        images.append(
            ImageRecord(
                name, (size, size), regions=[Region(blob(rng, size), "dust") for _ in range(k)]
            )
        )
    return Dataset(images=images, root=folder, classes=["dust"])


def from_scratch(dataset: Dataset, config: TrainConfig, tiles: int) -> float:
    """The reference: every tile reads, normalises and rasterises its own window."""
    rng = np.random.default_rng(1)
    root = dataset.root or Path(".")
    start = time.perf_counter()
    for _ in range(tiles):
        im = dataset.images[int(rng.integers(len(dataset.images)))]
        norm = data.normalise(read_image(resolve_image(root, im.filename)), config.low,
                              config.high)  # fmt: skip
        r, c = (int(rng.integers(0, max(1, s - config.tile + 1))) for s in norm.shape)
        data.crop(norm, r, c, config.tile)
        data.rasterise(im, ["dust"], (config.tile, config.tile), (r, c))
    return (time.perf_counter() - start) / tiles


def ours(dataset: Dataset, config: TrainConfig, tiles: int) -> tuple[float, float, str]:
    """The sampler's ms/tile while its caches fill (first pass) and once they are full."""
    sampler = data.TileSampler(dataset, list(range(len(dataset.images))), ["dust"], config)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(2 * tiles):
        t0 = time.perf_counter()
        sampler.sample(rng)
        times.append(time.perf_counter() - t0)
    kept = f"{len(sampler.cache)} images ({sampler.cache.nbytes >> 20} MB) kept"
    return float(np.mean(times[:tiles])), float(np.mean(times[tiles:])), kept


def one_at_a_time(
    image: ImageRecord, classes: list[str], shape: tuple[int, int], origin: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The reference for the masks: ``data.rasterise`` with one call per region."""
    cls = np.zeros(shape, dtype=np.int64)
    inst = np.zeros(shape, dtype=np.int32)
    r0, c0 = origin
    for i, region in enumerate(image.regions, start=1):
        br0, bc0, br1, bc1 = region.bbox
        if br1 <= r0 or bc1 <= c0 or br0 >= r0 + shape[0] or bc0 >= c0 + shape[1]:
            continue
        if region.label not in classes:
            continue
        wr, wc, window = rasterise_window(region.polygon - (r0, c0), shape)
        h, w = window.shape
        if h and w:
            cls[wr : wr + h, wc : wc + w][window] = classes.index(region.label) + 1
            inst[wr : wr + h, wc : wc + w][window] = i
    return cls, inst


def turn_each(
    angle: float, zoom: float, image: np.ndarray, cls: np.ndarray, inst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference for ``data.turn``: scipy's transform of the image and of each mask."""
    matrix, offset = data.turn_matrix(angle, zoom, image.shape)
    return tuple(ndimage.affine_transform(a, matrix, offset, order=o, mode="reflect")
                 for a, o in ((image, 1), (cls, 0), (inst, 0)))  # fmt: skip


def turns(sampler: data.TileSampler, tiles: int) -> tuple[float, float, bool]:
    """Seconds per turn of the product and of the reference, and whether they agree (the
    same image and class mask; instance ids the same up to the ids of mirrored copies)."""
    rng = np.random.default_rng(3)
    drawn = [sampler.sample(np.random.default_rng([4, k])) for k in range(tiles)]
    angles = [(np.deg2rad(rng.uniform(-data.MAX_TURN, data.MAX_TURN)),
               float(np.exp(rng.uniform(-np.log(data.ZOOM), np.log(data.ZOOM)))))
              for _ in drawn]  # fmt: skip
    seconds, results = [], []
    for way in (data.turn, turn_each):
        t0 = time.perf_counter()
        results.append([way(a, z, *tile) for (a, z), tile in zip(angles, drawn, strict=True)])
        seconds.append((time.perf_counter() - t0) / tiles)
    same = all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        and np.array_equal(np.where(a[2] > 0, (a[2] - 1) % max(b[2].max(), 1) + 1, 0), b[2])
        for a, b in zip(*results, strict=True)
    )  # fmt: skip
    return seconds[0], seconds[1], same


def timed(sampler: data.TileSampler, tiles: int) -> float:
    """Seconds per tile the sampler takes to draw ``tiles`` tiles (the same ones each call)."""
    t0 = time.perf_counter()
    for k in range(tiles):
        sampler.sample(np.random.default_rng([1, k]))
    return (time.perf_counter() - t0) / tiles


def real(folder: Path, tiles: int) -> None:
    """Tiles of a real dataset's training images: the sampler, and its masks two ways."""
    dataset, _ = annotations.load(folder / "train.json")
    indices = list(range(len(dataset.images)))
    data.check_images(dataset, indices)
    classes = data.class_names(dataset)
    config = data.fit_tile(TrainConfig(), dataset, indices)
    sampler = data.TileSampler(dataset, indices, classes, config)
    for i in indices:  # the cache filled: the steady state of a run
        sampler.cache(i)
    windows = []  # tile windows anywhere in the images, some reaching past their edges
    per_tile = timed(sampler, tiles)
    share, data.TURN_SHARE = data.TURN_SHARE, 0.0  # the reference: every tile upright
    try:
        upright = timed(sampler, tiles)
        turn, turn_ref, turn_same = turns(sampler, tiles)
    finally:
        data.TURN_SHARE = share
    rng = np.random.default_rng(2)
    for _ in range(tiles):
        index = int(rng.integers(len(indices)))
        rows, cols = sampler.cache(index).shape
        origin = (
            int(rng.integers(min(0, rows - config.tile), max(1, rows - config.tile + 1))),
            int(rng.integers(min(0, cols - config.tile), max(1, cols - config.tile + 1))),
        )
        windows.append((dataset.images[index], origin))
    shape = (config.tile, config.tile)
    ways = {"one pass": data.rasterise, "one region at a time": one_at_a_time}
    same = all(  # and the warm-up: first calls fill lazily computed region boxes
        all(np.array_equal(a, b) for a, b in zip(data.rasterise(im, classes, shape, origin),
                                                 one_at_a_time(im, classes, shape, origin), strict=True))
        for im, origin in windows
    )  # fmt: skip
    timings = {}
    for name, draw in ways.items():  # nothing kept: 1000 masks of 256 px are 0.8 GB
        t0 = time.perf_counter()
        for im, origin in windows:
            draw(im, classes, shape, origin)
        timings[name] = (time.perf_counter() - t0) / tiles
    vertices = np.mean([len(r.polygon) for im in dataset.images for r in im.regions])
    ours, ref = timings["one pass"], timings["one region at a time"]
    print(
        f"{folder.name}: {len(indices)} training images, {config.tile} px tiles, "
        f"{vertices:.0f} vertices per region: sampler {per_tile * 1e3:.2f} ms/tile "
        f"({upright * 1e3:.2f} with no tile turned, ratio {per_tile / upright:.2f}); a turn "
        f"{turn * 1e3:.2f} ms, scipy on each array {turn_ref * 1e3:.2f} ms (ratio "
        f"{turn_ref / turn:.2f}x, {'identical' if turn_same else 'DIFFERENT'}); masks "
        f"in one pass {ours * 1e3:.2f} ms/tile, one region at a time {ref * 1e3:.2f} ms/tile "
        f"(ratio {ref / ours:.1f}x, {'identical' if same else 'DIFFERENT'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=400)
    parser.add_argument("--regions", type=int, default=30)
    parser.add_argument("--dataset", type=Path, help="a real dataset folder (see above)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; budget "
          f"{data.TILE_CACHE_BYTES >> 20} MB of images")  # fmt: skip
    cases = [
        ("600 images of 200 px, 3 regions", 600, 200, 3, 128),
        (f"120 images of 1080 px, {args.regions} regions", 120, 1080, args.regions, 256),
    ]
    if args.dataset:
        real(args.dataset, args.tiles)
        return
    for name, n, size, regions, tile in cases:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = write(Path(tmp), n, size, regions)
            config = TrainConfig(
                tile=tile, augment=False, anomaly_fraction=0.0
            )  # uniform, as the reference
            first, full, kept = ours(dataset, config, args.tiles)
            ref = from_scratch(dataset, config, args.tiles)
        print(
            f"{name}, {tile} px tiles: ours {first * 1e3:.2f} ms/tile while filling, "
            f"{full * 1e3:.2f} ms/tile after ({kept}); from scratch {ref * 1e3:.2f} ms/tile; "
            f"ratio {ref / full:.1f}x"
        )


if __name__ == "__main__":
    main()
