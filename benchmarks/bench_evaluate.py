"""Evaluation speed: 500 images of 1080x1080, ~20 ground-truth and ~25 predicted regions each.

Prints seconds per image for ``core.evaluate.score_image`` (matching, pixel IoU and the
study scoring included) and, in the same process, for pycocotools computing the IoU
matrix from the same polygons (polygon -> RLE -> IoU), and their ratio.
Target: faster than pycocotools from polygons.

    python benchmarks/bench_evaluate.py [--images 500]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core.evaluate import score_image
from napari_bioanomaly.core.model import ImageRecord, Region

SIZE = 1080


def regions(rng: np.random.Generator, n: int, near: list[Region] | None = None) -> list[Region]:
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    out = []
    for i in range(n):
        if near and i < len(near):
            c = near[i].polygon.mean(axis=0) + rng.normal(0, 3, 2)
        else:
            c = rng.uniform(40, SIZE - 40, 2)
        r = rng.uniform(8, 30) * rng.uniform(0.75, 1.0, 40)
        out.append(
            Region(np.column_stack([c[0] + r * np.sin(t), c[1] + r * np.cos(t)]), "dust", score=0.9)
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(args.images):
        gt = regions(rng, 20)
        pred = regions(rng, 25, near=gt[:18])
        pairs.append(
            (
                ImageRecord(f"{i}.tif", (SIZE, SIZE), regions=gt),
                ImageRecord(f"{i}.tif", (SIZE, SIZE), regions=pred),
            )
        )

    start = time.perf_counter()
    for gt, pred in pairs:
        score_image(gt, pred)
    ours = (time.perf_counter() - start) / len(pairs)

    from napari_bioanomaly.core.evaluate import ImageCache, Spans, iou_matrix

    start = time.perf_counter()
    for gt, pred in pairs:
        iou_matrix(Spans.of(gt.regions, gt.shape), Spans.of(pred.regions, gt.shape))
    iou_only = (time.perf_counter() - start) / len(pairs)

    start = time.perf_counter()
    caches = [ImageCache(gt, pred) for gt, pred in pairs]
    build = time.perf_counter() - start
    start = time.perf_counter()
    for cache in caches:
        cache.score(0.4, 0.5)
    rescore = time.perf_counter() - start

    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        print("pycocotools is not installed: no reference")
        return
    start = time.perf_counter()
    for gt, pred in pairs:
        g = mask_utils.frPyObjects(
            [r.polygon[:, ::-1].ravel().tolist() for r in gt.regions], SIZE, SIZE
        )
        p = mask_utils.frPyObjects(
            [r.polygon[:, ::-1].ravel().tolist() for r in pred.regions], SIZE, SIZE
        )
        mask_utils.iou(p, g, [0] * len(g))
    ref = (time.perf_counter() - start) / len(pairs)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print(f"{args.images} images of {SIZE}x{SIZE}, 20 GT and 25 predicted regions each")
    print(
        f"napari-bioanomaly score_image (IoUs, matching, pixel IoU, study scoring): {ours * 1000:.2f} ms/image"
    )
    print(
        f"pycocotools polygon -> RLE -> IoU matrix only:                          {ref * 1000:.2f} ms/image"
    )
    print(
        f"napari-bioanomaly IoU matrix only (polygons -> runs -> IoU): {iou_only * 1000:.2f} ms/image"
    )
    print(
        f"ratio ours / pycocotools, IoU matrix: {iou_only / ref:.2f}x (target < 1); whole scoring: {ours / ref:.2f}x"
    )
    print(
        f"review table: building the cache {build:.2f} s once; rescoring all {len(pairs)} images "
        f"at new thresholds {rescore * 1000:.0f} ms (target < 1 s for 500)"
    )


if __name__ == "__main__":
    main()
