"""Which descriptors should the memory bank compare? The same bank, several descriptors.

    .venv/bin/python benchmarks/real/bench_descriptors.py DATASET [--learn-min 6]
        [--random-seeds 0,1,2] [--ensembles 0,1]

``DATASET`` is a folder written by ``prepare_*.py``. One memory bank (4,096 coreset rows
chosen from descriptors of the normal training images, or, in a dataset without normal
images, of the training pixels more than 8 px from an annotation; nearest-neighbour
distance, Gaussian sigma 4, top-0.1% image score: what ``train --model memory`` builds)
is built from:

- ``filters``: multi-scale filter responses (``descriptors="filters"``);
- ``random s``: one U-Net encoder of :mod:`napari_bioanomaly.ml.descriptors` with
  random weights drawn from seed ``s`` (one row per ``--random-seeds``);
- ``random xK s``: the :class:`EncoderEnsemble` of ``descriptors="random"`` (K =
  ``ENCODERS`` encoders drawn from seed ``s``, descriptors concatenated; one row per
  ``--ensembles``);
- ``learnt``: one encoder after ``--learn-min`` minutes of masked-image
  reconstruction on the normal training images (``descriptors="learned"``; 0: skip);
- and the no-learning reference ``|x - median_31(x)|``.

Printed: image ROC-AUC (where the test set has normal and defective images) and pixel
AUROC on the test images, all in the same process.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.imagemetrics import roc_auc
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.reference import reference_map
from napari_bioanomaly.ml import data
from napari_bioanomaly.ml.anomaly import BANK_SIZE, coreset, smooth, top_k
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.descriptors import ENCODERS, EncoderEnsemble, PatchEncoder, describe
from napari_bioanomaly.ml.features import features
from napari_bioanomaly.ml.pretrain import learn_images


def load(folder: Path, split: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(raw image, normalised image, truth mask) of each image of a split."""
    ds, _ = annotations.load(folder / f"{split}.json")
    out = []
    for im in ds.images:
        raw = read_image(folder / im.filename)
        norm = data.normalise(raw)
        cls, _ = data.rasterise(im, sorted({r.label for r in im.regions}), norm.shape)
        out.append((raw, norm, cls > 0))
    return out


def score(name: str, maps: list[np.ndarray], test: list, seconds: float) -> None:
    rng = np.random.default_rng(0)
    labels, scores, px_labels, px_scores = [], [], [], []
    for heat, (_, _, truth) in zip(maps, test, strict=True):
        labels.append(int(truth.any()))
        scores.append(top_k(heat))
        pick = rng.choice(heat.size, min(heat.size, 20_000), replace=False)
        px_labels.append(truth.ravel()[pick])
        px_scores.append(heat.ravel()[pick])
    image_auc = roc_auc(labels, scores) if 0 < sum(labels) < len(labels) else float("nan")
    pixel_auc = roc_auc(np.concatenate(px_labels), np.concatenate(px_scores))
    print(f"{name:12s} image_auc {image_auc:.3f}  pixel_auc {pixel_auc:.3f}  "
          f"fit+predict {seconds / 60:.1f} min", flush=True)  # fmt: skip


def bank_maps(describe_image, train: list, test: list, seed: int = 0) -> list[np.ndarray]:
    """The memory bank of ``describe_image(norm, stride)`` over the normal training
    images, and its smoothed raw maps of the test images."""
    rng = np.random.default_rng(seed)
    candidates = []
    any_normal = any(not truth.any() for _, _, truth in train)
    for _, norm, truth in train:
        if truth.any() and any_normal:
            continue
        feats = describe_image(norm, 4)
        near = ndimage.binary_dilation(truth, iterations=8)[::4, ::4]
        feats = feats[~near]
        if not len(feats):
            continue
        candidates.append(feats[rng.choice(len(feats), min(len(feats), 1000), replace=False)])
    pool = np.concatenate(candidates)
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-6
    bank = coreset(torch.from_numpy((pool - mean) / std), BANK_SIZE, seed)
    maps = []
    for _, norm, _ in test:
        feats = describe_image(norm, 2)
        h, w, d = feats.shape
        query = torch.from_numpy((feats.reshape(-1, d) - mean) / std)
        nearest = torch.cat([torch.cdist(q, bank).min(dim=1).values for q in query.split(8192)])
        small = nearest.reshape(1, 1, h, w)
        full = torch.nn.functional.interpolate(small, size=(2 * h, 2 * w), mode="bilinear",
                                               align_corners=False)  # fmt: skip
        maps.append(smooth("memory", full[0, 0, : norm.shape[0], : norm.shape[1]].numpy()))
    return maps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--learn-min", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the learnt encoder")
    p.add_argument("--random-seeds", default="0", help="one random encoder per seed")
    p.add_argument("--ensembles", default="", help=f"one ensemble of {ENCODERS} random "
                   "encoders per seed")  # fmt: skip
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")  # fmt: skip
    train, test = load(args.dataset, "train"), load(args.dataset, "test")
    normal = sum(not t.any() for _, _, t in train)
    print(f"{args.dataset.name}: {len(train)} training images ({normal} normal), {len(test)} "
          f"test images ({sum(t.any() for _, _, t in test)} with defects)")  # fmt: skip

    t0 = time.perf_counter()
    score("reference", [reference_map(raw) for raw, _, _ in test], test, time.perf_counter() - t0)
    t0 = time.perf_counter()
    score("filters", bank_maps(lambda n, s: features(n)[::s, ::s], train, test), test,
          time.perf_counter() - t0)  # fmt: skip
    networks = []
    for seed in seeds(args.random_seeds):
        torch.manual_seed(seed)
        networks.append((f"random {seed}", PatchEncoder(16).eval()))
    networks += [(f"random x{ENCODERS} {seed}", EncoderEnsemble(16, ENCODERS, seed).eval())
                 for seed in seeds(args.ensembles)]  # fmt: skip
    for name, network in networks:
        t0 = time.perf_counter()
        score(name, bank_maps(described_by(network), train, test), test,
              time.perf_counter() - t0)  # fmt: skip
    if not args.learn_min:
        return

    ds, _ = annotations.load(args.dataset / "train.json")
    indices = [i for i, im in enumerate(ds.images) if not im.regions]
    config = TrainConfig(budget_min=args.learn_min, seed=args.seed)
    t0 = time.perf_counter()
    gen = learn_images(ds, indices, config)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        unet, history, _ = stop.value
    encoder = PatchEncoder.from_unet(unet, 16).eval()
    print(f"learnt {len(history)} epochs in {args.learn_min:g} min, reconstruction loss "
          f"{history[-1]:.4f}")  # fmt: skip
    score("learnt", bank_maps(lambda n, s: describe(n, encoder, s), train, test), test,
          time.perf_counter() - t0)  # fmt: skip


def described_by(network: torch.nn.Module):
    return lambda norm, stride: describe(norm, network, stride)


def seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


if __name__ == "__main__":
    main()
