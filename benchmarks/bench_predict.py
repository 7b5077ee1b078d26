"""Prediction throughput: megapixels per second of tiled, blended U-Net inference.

Reference in the same process: the bare model forward pass over the same number of
tiles (no normalisation, blending or polygon extraction). Both are warmed up on a
whole image first and then timed in alternating rounds; the best round of each is
printed (a shared VM's neighbours slow single rounds down), with where our time goes.
The network is untrained and calls most of each image one anomaly, the worst case for the
polygons; their time on a map like a trained model's (the hard sample's ground truth,
blurred) is printed beside.

    python benchmarks/bench_predict.py [--device auto] [--images 2] [--size 1080] [--rounds 3]
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.ml import models
from napari_bioanomaly.ml.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.data import normalise
from napari_bioanomaly.ml.device import pick_device
from napari_bioanomaly.ml.predict import Predictor, class_probabilities, regions_from_probabilities
from napari_bioanomaly.ml.tiling import starts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = pick_device(args.device)
    config = TrainConfig(tile=256)
    classes = ["dark spot", "scratch", "bacterial colony", "hair", "dust"]
    model = models.build("unet", len(classes), config.tile, config.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "config": config.to_dict(),
                "classes": classes,
                "state_dict": model.state_dict(),
            },
            path,
        )
        predictor = Predictor.load(path, args.device)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(500, 3000, (args.size, args.size)).astype(np.uint16)
        for _ in range(args.images)
    ]
    padded = -(-args.size // 16) * 16
    per_side = len(starts(padded, config.tile, int(config.tile * 0.75)))
    n_tiles = per_side**2 * len(images)
    x = torch.rand(4, 1, config.tile, config.tile, device=device)

    def ours() -> dict[str, float]:
        parts = {"normalise": 0.0, "network and blending": 0.0, "polygons": 0.0}
        for image in images:
            t0 = time.perf_counter()
            normalise(image, config.low, config.high)
            t1 = time.perf_counter()
            probs = class_probabilities(predictor, image)  # normalises again: subtracted
            _sync(device)
            t2 = time.perf_counter()
            regions_from_probabilities(probs, classes)
            t3 = time.perf_counter()
            parts["normalise"] += t1 - t0
            parts["network and blending"] += (t2 - t1) - (t1 - t0)
            parts["polygons"] += t3 - t2
        return parts

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(0, n_tiles, 4):
                predictor.model(x)
            _sync(device)
        return time.perf_counter() - start

    class_probabilities(predictor, images[0])  # warm up: every batch shape, allocations
    bare()
    rounds = [(ours(), bare()) for _ in range(args.rounds)]
    best = min(rounds, key=lambda r: sum(r[0].values()))[0]
    t_ours = sum(best.values())
    t_ref = min(r[1] for r in rounds)
    mp = args.images * args.size**2 / 1e6
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}, "
          f"torch {torch.__version__}, U-Net width {config.width}")  # fmt: skip
    print(
        f"{args.images} images of {args.size}x{args.size}, best of {args.rounds} rounds: "
        f"{mp / t_ours:.2f} MP/s ({t_ours / args.images:.2f} s/image) with blending and "
        f"polygons; bare forward over the same {n_tiles} tiles: {mp / t_ref:.2f} MP/s; "
        f"ratio {t_ref / t_ours:.2f}"
    )
    print("where our time goes: " + ", ".join(
        f"{k} {v / args.images:.3f} s/image ({v / t_ours:.0%})" for k, v in best.items()
    ))  # fmt: skip
    # the untrained network calls most of the image one anomaly, the worst case for
    # polygons; a trained one's map is mostly background with a few regions
    per_image, found, truth = realistic_polygons(args.size, args.images)
    print(
        f"polygons of a map like a trained model's (the hard sample's {truth} regions, "
        f"outlines blurred): {per_image:.3f} s/image ({found} regions found)"
    )


def realistic_polygons(size: int, n: int) -> tuple[float, int, int]:
    """Seconds per image of ``regions_from_probabilities`` on class maps made from the hard
    sample's ground truth (each class's mask blurred by 2 px), regions found and true."""
    from scipy import ndimage

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
    from napari_bioanomaly.ml.data import rasterise

    with tempfile.TemporaryDirectory() as tmp:
        write_sample(Path(tmp), SampleConfig(n_images=n, size=size, difficulty="hard"))
        dataset, _ = annotations.load(Path(tmp) / "annotations.json")
    classes = dataset.class_names()
    seconds, found = 0.0, 0
    for im in dataset.images:
        cls, _ = rasterise(im, classes, (size, size))
        probs = np.stack([ndimage.gaussian_filter((cls == c).astype(np.float32), 2)
                          for c in range(len(classes) + 1)])  # fmt: skip
        probs /= probs.sum(axis=0, keepdims=True)
        t0 = time.perf_counter()
        found += len(regions_from_probabilities(probs, classes))
        seconds += time.perf_counter() - t0
    return seconds / n, found, sum(len(im.regions) for im in dataset.images)


if __name__ == "__main__":
    main()
