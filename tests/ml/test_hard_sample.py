"""Learning on the hard sample: the default U-Net must beat the no-learning reference.

The hard sample (faint anomalies among look-alike textures, uneven light,
out-of-focus patches, unannotated specks) is where a model that learns nothing
is caught: the reference filter scores well below 1 on it, unlike on the easy
sample. The U-Net here has the default architecture, loss, augmentation and
learning rate; only its length (2,000 steps, about 3 min on 2 cores) and tile (for
256 px images) are set for CI.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import Dataset
from napari_bioanomaly.core.reference import best_threshold, pixel_f1, reference_map
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.data import rasterise
from napari_bioanomaly.ml.predict import Predictor, predict_image, run
from napari_bioanomaly.ml.train import train

#: What the U-Net must add to the reference's pixel F1 on held-out hard images (measured
#: on the 2-core CPU after 2,000 steps: 0.17-0.29 against 0.004 with seeds 0-3). 1,000
#: steps were too few: seed 0 reached 0.17 there, but seed 1, or seed 0 with other noise
#: draws, learnt nothing yet (0.002-0.008); 375 steps learn nothing with any.
MARGIN = 0.10


def truth(im, shape):
    return rasterise(im, sorted({r.label for r in im.regions}), shape)[0] > 0


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hard")
    write_sample(folder, SampleConfig(n_images=24, size=256, seed=4, difficulty="hard"))
    ds, _ = annotations.load(folder / "annotations.json")
    return folder, ds.images[:18], ds.images[18:], ds


def test_hard_sample_is_hard_for_the_reference(hard):
    folder, train_images, test_images, _ = hard
    maps = [reference_map(read_image(folder / im.filename)) for im in train_images]
    t = best_threshold(maps, [truth(im, m.shape) for im, m in zip(train_images, maps, strict=True)])
    scores = []
    for im in test_images:
        m = reference_map(read_image(folder / im.filename))
        scores.append(pixel_f1(m > t, truth(im, m.shape)))
    assert np.mean(scores) < 0.5  # a fixed filter finds the faint anomalies badly
    raw = read_image(folder / test_images[0].filename)
    assert raw.dtype == np.uint16 and raw.max() > 4096  # full 16-bit range, not 12 bits


def test_default_unet_beats_the_reference_on_the_hard_sample(hard, tmp_path):
    folder, train_images, test_images, ds = hard
    train_ds = Dataset(images=train_images, root=folder, classes=list(ds.classes),
                       class_attribute="class")  # fmt: skip
    config = TrainConfig(epochs=80, steps_per_epoch=25, tile=128, seed=0, patience=0)
    result = run(train(train_ds, config, tmp_path / "hard.pt"))
    predictor = Predictor.load(result.best, "cpu")
    point = predictor.operating_point
    maps = [reference_map(read_image(folder / im.filename)) for im in train_images]
    t = best_threshold(maps, [truth(im, m.shape) for im, m in zip(train_images, maps, strict=True)])
    ours, ref = [], []
    for im in test_images:
        image = read_image(folder / im.filename)
        gt = truth(im, image.shape)
        heat = 1.0 - predict_image(predictor, image)[0][0]
        ours.append(pixel_f1(heat > point.threshold, gt))
        ref.append(pixel_f1(reference_map(image) > t, gt))
    assert np.mean(ours) > np.mean(ref) + MARGIN, (np.mean(ours), np.mean(ref))


#: What the default unsupervised model (memory bank, default descriptors) must add to the
#: reference's pixel AUROC on held-out hard images (measured on the 2-core CPU: 0.692
#: against 0.593 with the line cue joined by the root mean square since the twenty-fifth
#: session, 0.675 without since the sixth, 0.642 before; CPU runs are reproducible, the
#: margin leaves room for BLAS noise only).
#: Small, as on real data: the faint hard anomalies are hard to find without annotations.
UNSUPERVISED_MARGIN = 0.03


def test_default_memory_bank_beats_the_reference_on_the_hard_sample(tmp_path_factory):
    """Trained on the normal images only, with the defaults (nothing set but the
    validation split: all training images are normal)."""
    from napari_bioanomaly.core.imagemetrics import roc_auc

    folder = tmp_path_factory.mktemp("hard-unsupervised")
    write_sample(folder, SampleConfig(n_images=24, size=256, seed=6, difficulty="hard",
                                      normal_fraction=0.5))  # fmt: skip
    ds, _ = annotations.load(folder / "annotations.json")
    train_images = [im for im in ds.images[:18] if not im.regions]
    test_images = ds.images[18:]
    train_ds = Dataset(images=train_images, root=folder, classes=list(ds.classes),
                       class_attribute="class")  # fmt: skip
    config = TrainConfig(model="memory", seed=0, val_fraction=0.0)
    result = run(train(train_ds, config, tmp_path_factory.mktemp("m") / "memory.pt"))
    predictor = Predictor.load(result.best, "cpu")
    # no annotated validation image: auto keeps the filter bank, the better one here, and
    # joins the line cue by the root mean square
    scoring = predictor.extra["scoring"]
    assert scoring["descriptors"] == "filters"
    assert scoring["lines"] and scoring["line_join"] == "rms"
    truths, ours, ref = [], [], []
    for im in test_images:
        image = read_image(folder / im.filename)
        truths.append(truth(im, image.shape).ravel())
        ours.append((1.0 - predict_image(predictor, image)[0][0]).ravel())
        ref.append(reference_map(image).ravel())
    gt = np.concatenate(truths)
    assert 0 < gt.sum() < gt.size
    ours_auc, ref_auc = roc_auc(gt, np.concatenate(ours)), roc_auc(gt, np.concatenate(ref))
    assert ours_auc > ref_auc + UNSUPERVISED_MARGIN, (ours_auc, ref_auc)
