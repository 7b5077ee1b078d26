"""Validation counts of tiles without truth: ``operating.point_counts`` as each epoch of
training calls it (ten thresholds, specks under 16 px dropped), on normal tiles, beside
the same tiles counted through the matching (the reference: each tile given a one-pixel
truth that no threshold reaches, which is what every tile paid before), in one process.

Most validation tiles of a mostly normal dataset (KolektorSDD: 5 cracked validation images
among 40) hold no truth.

    python benchmarks/bench_validation_counts.py [--tiles 64] [--tile 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core import operating
from napari_bioanomaly.ml.validation import MIN_AREA, VAL_THRESHOLDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.tile, args.tile)
    # maps with blobs of every size above and below the thresholds, as a network's are
    heats = [np.clip(ndimage.gaussian_filter(rng.random(shape), 3) * 6 - 2.5, 0, 1)
             .astype(np.float32) for _ in range(args.tiles)]  # fmt: skip
    for h in heats:
        h[0, 0] = 0.0
    empty = np.zeros(shape, np.int32)
    unreachable = empty.copy()
    unreachable[0, 0] = 1
    timings, counts = {}, {}
    for name, truth in (("without matching (now)", empty), ("matched (reference)", unreachable)):
        t0 = time.perf_counter()
        counts[name] = sum(operating.point_counts(h, truth, VAL_THRESHOLDS, (MIN_AREA,))
                           for h in heats)  # fmt: skip
        timings[name] = (time.perf_counter() - t0) / args.tiles
    now, ref = timings["without matching (now)"], timings["matched (reference)"]
    same = np.array_equal(counts["without matching (now)"][..., [1, 4]],
                          counts["matched (reference)"][..., [1, 4]])  # fmt: skip
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.tiles} normal tiles of "
        f"{args.tile} px, {len(VAL_THRESHOLDS)} thresholds"
    )
    print(
        f"without matching {now * 1e3:.2f} ms/tile, matched {ref * 1e3:.2f} ms/tile "
        f"(ratio {ref / now:.2f}x; false positives and pixels "
        f"{'identical' if same else 'DIFFERENT'}); an epoch's {args.tiles} tiles: "
        f"{now * args.tiles:.2f} s against {ref * args.tiles:.2f} s"
    )


if __name__ == "__main__":
    main()
