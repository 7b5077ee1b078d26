"""Cost of the line cue (``core.reference.line_map``) beside the reference map, one process.

    .venv/bin/python benchmarks/bench_line_cue.py [--repeat 3]

The memory bank computes the line cue once per image it predicts where the cue joined
its map (and once per validation image while training), relative to its surroundings
(``window=LINE_WINDOW``) since 2026-12-04. Printed per image size: the median time of that
cue, of the cue as it is (the forest's context features, older banks) and of the
no-learning reference map (``reference_map``: ``|x - median_31(x)|``, smoothed; what
sharpening also computes) on the same image, the relative cue's ratio to the reference,
and the peak memory it allocates (tracemalloc, numpy and scipy buffers).
The images are synthetic brightfield-like backgrounds with a faint scratch; the cost
does not depend on the content.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_bioanomaly.core.reference import LINE_ANGLES, LINE_LENGTH, line_map, reference_map
from napari_bioanomaly.ml.anomaly import LINE_WINDOW

SIZES = ((256, 256), (250, 625), (512, 512), (1080, 1080))


def scene(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A textured background with one faint straight scratch, in [0, 1]."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(0.5, 0.1, shape), 2.0)
    rr = np.arange(shape[0] // 4, 3 * shape[0] // 4)
    image[rr, np.clip(rr + shape[1] // 4 - shape[0] // 4, 0, shape[1] - 1)] -= 0.08
    return image.astype(np.float32)


def timed(fn, image: np.ndarray, repeat: int) -> float:
    fn(image)  # warm-up (FFT plans, imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; line cue: {LINE_LENGTH} px "
        f"segments at {LINE_ANGLES} orientations"
    )
    print(
        f"{'image':>11s}  {'relative':>9s}  {'as it is':>9s}  {'reference':>9s}  "
        f"{'ratio':>6s}  {'MP/s':>5s}  {'peak memory':>11s}"
    )

    def relative(image: np.ndarray) -> np.ndarray:
        return line_map(image, window=LINE_WINDOW)

    for shape in SIZES:
        image = scene(shape)
        cue = timed(relative, image, args.repeat)
        plain = timed(line_map, image, args.repeat)
        ref = timed(reference_map, image, args.repeat)
        tracemalloc.start()
        relative(image)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = f"{shape[0]}x{shape[1]}"
        print(
            f"{size:>11s}  {cue:8.3f}s  {plain:8.3f}s  {ref:8.3f}s  {cue / ref:5.1f}x  "
            f"{image.size / cue / 1e6:5.2f}  {peak / 2**20:8.0f} MiB"
        )


if __name__ == "__main__":
    main()
