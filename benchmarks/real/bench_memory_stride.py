"""Memory-bank prediction: every how many pixels to score, speed against quality.

    .venv/bin/python benchmarks/real/bench_memory_stride.py DATASET CHECKPOINT [--strides 4,2]

One trained memory bank (``CHECKPOINT``, e.g. from ``bench_real.py --models memory``)
predicts the test images of ``DATASET`` (a folder written by ``prepare_*.py``) at its
stored operating point, once per stride of :data:`~napari_bioanomaly.ml.anomaly.QUERY_STRIDE`
(the pixels between are interpolated). Printed per stride, in one process: seconds per
image and its ratio to the last stride given (the reference run), and the quality
figures of ``bench_real.py`` (instance F1, recall at IoU 0.25, pixel IoU and F1, image
ROC-AUC, pixel AUROC), each with its difference to that reference.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real import line, score

from napari_bioanomaly.core import annotations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--strides", default="4,2", help="strides to compare; the last is the reference")
    args = p.parse_args()

    import torch

    from napari_bioanomaly.ml import anomaly
    from napari_bioanomaly.ml.predict import Predictor, predict_image

    test = annotations.load(args.dataset / "test.json")[0].images
    predictor = Predictor.load(args.checkpoint, "cpu")
    point = predictor.operating_point
    scoring = predictor.extra["scoring"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}"
    )
    print(
        f"{args.dataset.name}: {len(test)} test images; {args.checkpoint.name}: "
        f"{scoring.get('descriptors', 'filters')} descriptors, "
        f"{'sharpened' if scoring.get('sharpen') else 'not sharpened'}, {point.describe()}"
    )
    strides = [int(s) for s in args.strides.split(",")]
    figures = {}
    for stride in reversed(strides):  # the reference first, so the others compare with it
        anomaly.QUERY_STRIDE = stride
        figures[stride] = score(test, args.dataset, lambda im: predict_image(predictor, im),
                                point, ["anomaly"])  # fmt: skip
    ref = figures[strides[-1]]
    for stride in strides:
        s = figures[stride]
        ratio = s["predict_s_per_image"] / ref["predict_s_per_image"]
        print(
            line(f"stride {stride}", s, None if stride == strides[-1] else ref)
            + f"  ({ratio:.2f}x the time of stride {strides[-1]})"
        )


if __name__ == "__main__":
    main()
