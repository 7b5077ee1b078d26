"""Outliers left out of the memory bank, on folders learnt from as they are.

A lab's folder of images, trained on with one click and no annotation, holds its anomalies:
the bank learns from every pixel. Written samples of that kind (every image may hold dust,
spots and hairs) are trained on without their annotations at each share of candidate
patches left out as outliers (``--shares``; ``TrainConfig.bank_outliers``), then scored on
the same images against their annotations: pixel AUROC, image ROC-AUC, regions found at
IoU >= 0.25 and proposals at the calibrated 0.5 (16 px). The reference, in the same
process on the same images, is the no-learning map of :mod:`napari_bioanomaly.core.reference`.
The real sets are measured by ``benchmarks/real/bench_real.py --unannotated --set
bank_outliers=SHARE``.

    python benchmarks/bench_outliers.py [--shares 0,0.01,0.05] [--lines no]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code
sys.path.insert(0, str(Path(__file__).resolve().parent / "real"))

from bench_real import score

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.imagemetrics import roc_auc
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import Dataset, ImageRecord
from napari_bioanomaly.core.operating import OperatingPoint
from napari_bioanomaly.core.reference import reference_map
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import data
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.predict import Predictor, predict_image
from napari_bioanomaly.ml.train import train

#: The folders: the napari one-click test's sample, a larger one, the hard sample.
SAMPLES = {
    "6 x 128 px (the one-click test's)": SampleConfig(n_images=6, size=128, seed=3),
    "24 x 256 px": SampleConfig(n_images=24, size=256, seed=6),
    "24 x 256 px, hard, half normal": SampleConfig(
        n_images=24, size=256, seed=6, difficulty="hard", normal_fraction=0.5
    ),
}


def trained(bare: Dataset, config: TrainConfig, out: Path) -> Predictor:
    gen = train(bare, config, out)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return Predictor.load(stop.value.best, "cpu")


def reference_auc(ds: Dataset, folder: Path) -> float:
    truths, maps = [], []
    for im in ds.images:
        image = read_image(folder / im.filename)
        cls, _ = data.rasterise(im, ds.class_names(), image.shape[:2])
        truths.append(cls.ravel() > 0)
        maps.append(reference_map(image).ravel())
    return roc_auc(np.concatenate(truths), np.concatenate(maps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shares", default="0,0.01,0.05")
    p.add_argument("--lines", default="no", choices=("auto", "yes", "no"))
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")  # fmt: skip
    for name, sample in SAMPLES.items():
        folder = Path(tempfile.mkdtemp())
        write_sample(folder, sample)
        ds, _ = annotations.load(folder / "annotations.json")
        bare = Dataset(images=[ImageRecord(im.filename, im.shape) for im in ds.images],
                       root=folder, classes=list(ds.classes), class_attribute="class")  # fmt: skip
        ref = reference_auc(ds, folder)
        print(f"{name}: {len(ds.images)} images, {sum(len(im.regions) for im in ds.images)} "
              f"anomalies; reference pixel AUROC {ref:.3f}")  # fmt: skip
        for share in (float(s) for s in args.shares.split(",")):
            config = TrainConfig(model="memory", seed=0, lines=args.lines, bank_outliers=share)
            predictor = trained(bare, config, folder / f"memory-{share}.pt")
            s = score(ds.images, folder, lambda x, pr=predictor: predict_image(pr, x),
                      OperatingPoint(0.5, 16), ds.class_names())  # fmt: skip
            image_auc = "n/a" if s["image_auc"] is None else f"{s['image_auc']:.3f}"
            print(f"  outliers {share:<5g} pixel AUROC {s['pixel_auc']:.3f} "
                  f"({s['pixel_auc'] - ref:+.3f} vs reference)  image ROC-AUC {image_auc}  "
                  f"recall@0.25 {s['recall_25']:.3f}  proposals {s['n_pred']}/{s['n_gt']}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
