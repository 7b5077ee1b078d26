"""Prediction throughput: megapixels per second of tiled, blended U-Net inference.

Reference in the same process: the bare model forward pass over the same number of
tiles (no normalisation, blending or polygon extraction).

    python benchmarks/bench_predict.py [--device auto] [--images 4] [--size 1080]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_bioanomaly.ml import models
from napari_bioanomaly.ml.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.device import pick_device
from napari_bioanomaly.ml.predict import Predictor, class_probabilities, regions_from_probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=1080)
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
    class_probabilities(predictor, images[0][:256, :256])  # warm up
    start = time.perf_counter()
    n_tiles = 0
    for image in images:
        probs = class_probabilities(predictor, image)
        regions_from_probabilities(probs, classes)
    ours = time.perf_counter() - start
    stride = int(config.tile * 0.75)
    per_side = len(range(0, args.size - config.tile + 1, stride)) + 1
    n_tiles = per_side**2 * len(images)
    x = torch.rand(4, 1, config.tile, config.tile, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(0, n_tiles, 4):
            predictor.model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    ref = time.perf_counter() - start
    mp = args.images * args.size**2 / 1e6
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}")
    print(
        f"{args.images} images of {args.size}x{args.size}: {mp / ours:.2f} MP/s ({ours / args.images:.2f} s/image) "
        f"with blending and polygons; bare forward over the same {n_tiles} tiles: {mp / ref:.2f} MP/s; ratio {ref / ours:.2f}"
    )


if __name__ == "__main__":
    main()
