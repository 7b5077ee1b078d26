"""Prediction cost of the forest's feature sets, one process.

    .venv/bin/python benchmarks/bench_forest_features.py [--repeat 3]

The forest describes each pixel by ``context`` features by default (the 20 multi-scale
filters, the line cue along 21 and 61 px, the local contrast; :mod:`napari_bioanomaly.ml.features`)
or by the ``filters`` alone. A forest of each set is fitted on the same pixels of a small
scene (64 trees, as the trainer grows them), and a second ``context`` forest on top of
the first (the default two stages: it also sees the first's probabilities,
:mod:`napari_bioanomaly.ml.forest`); all predict the same images. Printed per image size:
the median time (after a warm-up) of the ``filters`` forest (the reference), of the
others, their ratio to it and megapixels per second. How good each set is on real
images: ``benchmarks/real/bench_real.py`` (docs/benchmarks.md, "Context for the forest").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_line_cue import scene, timed

from napari_bioanomaly.ml.features import FEATURE_SETS
from napari_bioanomaly.ml.forest import Forest, sample_index, sample_pixels, stage_features

SIZES = ((256, 256), (512, 512), (1080, 1080))


def fitted(feature_set: str, stages: int = 1) -> Forest:
    """A forest of ``feature_set`` learnt from the scratch of a 256 px scene; with two
    ``stages`` a second forest on top that also sees the first one's probabilities."""
    image = scene((256, 256), seed=1).astype(np.float32)
    cls = (image < np.percentile(image, 2)).astype(np.int64)  # the darkest pixels
    rng = np.random.default_rng(0)
    x, y = sample_pixels(image, cls, rng, 4000, feature_set=feature_set)
    first = Forest.fit(x, y, 2, seed=0, feature_set=feature_set)
    if stages == 1:
        return first
    feats = stage_features(image, feature_set, first)
    index = sample_index(cls, rng, 4000)
    x2, y2 = feats.reshape(-1, feats.shape[-1])[index], cls.ravel()[index]
    return Forest.fit(x2, y2, 2, seed=1, feature_set=feature_set, first=first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"feature sets {FEATURE_SETS}")  # fmt: skip
    forests = {"filters": fitted("filters"), "context": fitted("context"),
               "context, two stages": fitted("context", 2)}  # fmt: skip
    for shape in SIZES:
        image = scene(shape).astype(np.float32)
        mp = shape[0] * shape[1] / 1e6
        ref = timed(forests["filters"].probabilities, image, args.repeat)
        row = f"{shape[0]}x{shape[1]}: filters (reference) {ref:.2f} s ({mp / ref:.2f} MP/s)"
        for name in ("context", "context, two stages"):
            t = timed(forests[name].probabilities, image, args.repeat)
            row += f"  {name} {t:.2f} s ({mp / t:.2f} MP/s, {t / ref:.1f}x)"
        print(row)


if __name__ == "__main__":
    main()
