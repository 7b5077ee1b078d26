"""Anomaly detection quality: image ROC-AUC and pixel AUROC of each method on held-out images.

The hard sample dataset (``--images`` images of ``--size`` px, 40% normal;
``--difficulty easy`` for the first-look sample) is split:
the first two thirds train, the last third is scored. Methods: the unsupervised
``memory`` bank (trained without looking at the annotations'
classes; annotated pixels are only left out of what is learned as normal), the
classic ``forest`` baseline and the supervised ``unet`` (image score of the
segmentation models: the same top-k mean of their ``1 - p(background)`` map). The reference, run in
the same process on the same images, is a naive map with no learning at all:
the absolute difference between each pixel and the median of its 31 px
disc (:mod:`napari_bioanomaly.core.reference`; image score: the same top-k mean). Prints each method's figures,
fit and prediction time, and its AUCs as a ratio to the reference; then how well
the regions of its map (class-agnostic) outline the anomalies, cut at the model's
operating point (threshold, minimum area and peak chosen on its validation images, what
``predict`` uses): recall at IoU >= 0.25, F1 at IoU >= 0.5 and the pixel IoU of their
union.

    python benchmarks/bench_anomaly.py [--images 36] [--size 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.evaluate import evaluate
from napari_bioanomaly.core.imagemetrics import roc_auc
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import Dataset, ImageRecord
from napari_bioanomaly.core.reference import reference_map
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import anomaly, data
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.predict import (
    Predictor,
    predict_image,
    regions_from_probabilities,
    run,
)
from napari_bioanomaly.ml.train import train

#: where the regions were cut before the models' own points were used: 0.5, 16 px
FIXED = (0.5, 16.0, None)


def scores(test: list, folder: Path, classes: list[str], heat_of, point: Any = None
           ) -> tuple[tuple[float, float, float], list[tuple[float, float, float]]]:  # fmt: skip
    """``(image ROC-AUC, pixel AUROC, seconds per image)`` and, for the regions of the map
    cut at :data:`FIXED` and (when given) at ``point``, an operating point: recall@0.25,
    F1@0.5 and the pixel IoU of their union."""
    cuts = [FIXED] + ([] if point is None else [(point.threshold, point.min_area,
                                                 point.min_peak)])  # fmt: skip
    labels, image_scores, px_labels, px_scores = [], [], [], []
    proposals = [Dataset(root=folder) for _ in cuts]
    rng = np.random.default_rng(0)
    seconds = 0.0
    for im in test:
        t0 = time.perf_counter()
        heat, score = heat_of(read_image(folder / im.filename))
        seconds += time.perf_counter() - t0
        for (threshold, min_area, min_peak), cut in zip(cuts, proposals, strict=True):
            regions = regions_from_probabilities(
                np.stack([1.0 - heat, heat]), ["anomaly"], threshold, min_area, min_peak=min_peak
            )
            cut.images.append(ImageRecord(im.filename, heat.shape, regions=regions))
        cls, _ = data.rasterise(im, classes, heat.shape)
        labels.append(int(bool(im.regions)))
        image_scores.append(score)
        pick = rng.choice(heat.size, min(heat.size, 50_000), replace=False)
        px_labels.append(cls.ravel()[pick] > 0)
        px_scores.append(heat.ravel()[pick])
    truth = Dataset(images=test, root=folder)
    regions = []
    for cut in proposals:
        loose, strict = evaluate(truth, cut, 0.25), evaluate(truth, cut, 0.5)
        regions.append((loose.recall, strict.f1, loose.pixel_iou))
    ranking = (
        roc_auc(labels, image_scores),
        roc_auc(np.concatenate(px_labels), np.concatenate(px_scores)),
        seconds / len(test),
    )
    return ranking, regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=36)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--methods", default="memory,forest,unet")
    parser.add_argument("--difficulty", default="hard", choices=("easy", "hard"))
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
        f" torch {torch.__version__}, device {args.device}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample(
            folder,
            SampleConfig(
                args.images, args.size, args.seed, normal_fraction=0.4, difficulty=args.difficulty
            ),
        )
        ds, _ = annotations.load(folder / "annotations.json")
        cut = 2 * len(ds.images) // 3
        train_part = Dataset(images=ds.images[:cut], root=folder, classes=list(ds.classes),
                             class_attribute="class")  # fmt: skip
        test = ds.images[cut:]
        classes = ds.class_names()
        n_anom = sum(1 for im in test if im.regions)
        print(f"{args.images} images of {args.size} px: {cut} train, {len(test)} test "
              f"({n_anom} anomalous)")  # fmt: skip

        def ref(image: np.ndarray) -> tuple[np.ndarray, float]:
            m = reference_map(image)
            return m, anomaly.top_k(m)

        (ref_image, ref_pixel, ref_time), _ = scores(test, folder, classes, ref)
        print(f"{'reference (|x - median31|)':28s} image ROC-AUC {ref_image:.3f}  pixel AUROC "
              f"{ref_pixel:.3f}  predict {ref_time:.2f} s/image")  # fmt: skip
        base = TrainConfig(epochs=args.epochs, steps_per_epoch=30, tile=128, batch=4,
                           device=args.device, seed=0)  # fmt: skip
        for kind in args.methods.split(","):
            t0 = time.perf_counter()
            result = run(train(train_part, base.replace(model=kind), folder / f"{kind}.pt"))
            fit = time.perf_counter() - t0
            predictor = Predictor.load(result.best, args.device)

            def heat_of(image: np.ndarray, p: Predictor = predictor) -> tuple[np.ndarray, float]:
                probs, score = predict_image(p, image)
                heat = 1.0 - probs[0]
                # segmentation models: the same top-k image score as the anomaly maps
                return heat, score if score is not None else anomaly.top_k(heat)

            point = predictor.operating_point
            (image_auc, pixel_auc, per_image), cuts = scores(test, folder, classes, heat_of,
                                                             point)  # fmt: skip
            print(f"{kind:28s} image ROC-AUC {image_auc:.3f} ({image_auc / ref_image:.2f}x ref)  "
                  f"pixel AUROC {pixel_auc:.3f} ({pixel_auc / ref_pixel:.2f}x ref)  "
                  f"fit {fit:.0f} s  predict {per_image:.2f} s/image")  # fmt: skip
            where = [
                f"{FIXED[0]:g}, min area {FIXED[1]:g} px (fixed)",
                f"{point.describe(scores=False)} (the model's, {point.source})",
            ]
            for text, (recall, f1, px_iou) in zip(where, cuts, strict=True):
                print(f"{'':28s} regions at {text}: recall@IoU0.25 {recall:.2f}  F1@IoU0.5 "
                      f"{f1:.2f}  pixel IoU {px_iou:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
