"""Unsupervised anomaly maps and the random-forest baseline, on the sample dataset (CPU).

The floors below were measured on this dataset (24 images of 256 px, seed 5, 40%
normal; trained on the first 16, scored on the 8 held out): memory bank image
ROC-AUC 1.0 and pixel AUROC 0.98, forest 1.0 and 0.998. CPU runs are reproducible, so the floors leave room only for BLAS noise.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import tifffile
import torch

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.imagemetrics import roc_auc
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord
from napari_bioanomaly.core.review import ReviewSession
from napari_bioanomaly.core.session import AnnotationSession
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import anomaly, data, models, train_memory
from napari_bioanomaly.ml.config import NO_LINES_CHOICE, NO_LINES_CHOICE_CLI, TrainConfig
from napari_bioanomaly.ml.descriptors import (
    ENCODERS,
    EncoderEnsemble,
    PatchEncoder,
    descriptor_dims,
)
from napari_bioanomaly.ml.features import features
from napari_bioanomaly.ml.forest import Forest
from napari_bioanomaly.ml.predict import Predictor, predict_image
from napari_bioanomaly.ml.train import load_checkpoint

from .test_train import drain

BASE = TrainConfig(
    epochs=4, steps_per_epoch=20, tile=128, batch=4, base_channels=16, lr=2e-3, device="cpu"
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    write_sample(folder, SampleConfig(n_images=24, size=256, seed=5, normal_fraction=0.4))
    ds, _ = annotations.load(folder / "annotations.json")
    return folder, ds


def _part(ds, images):
    return Dataset(images=images, root=ds.root, classes=list(ds.classes), class_attribute="class")


@pytest.fixture(scope="module")
def trained(study, tmp_path_factory):
    """One model of each kind, trained on the first 16 images; and how often the memory
    bank's training derived the line cue of each image (by the image's content)."""
    from napari_bioanomaly.ml.train import train

    _, ds = study
    out = tmp_path_factory.mktemp("models")
    paths, events, line_calls = {}, {}, Counter()
    real = train_memory.line_map

    def counted(norm, **kwargs):
        line_calls[hashlib.sha1(norm.tobytes()).hexdigest()] += 1
        return real(norm, **kwargs)

    train_memory.line_map = counted
    try:
        for kind in ("memory", "forest"):
            events[kind], result = drain(
                train(_part(ds, ds.images[:16]), BASE.replace(model=kind), out / f"{kind}.pt")
            )
            paths[kind] = result.best
    finally:
        train_memory.line_map = real
    return paths, events, line_calls


def held_out_scores(study, path):
    folder, ds = study
    predictor = Predictor.load(path, "cpu")
    labels, scores, px_labels, px_scores = [], [], [], []
    for im in ds.images[16:]:
        probs, score = predict_image(predictor, read_image(folder / im.filename))
        heat = 1.0 - probs[0]
        cls, _ = data.rasterise(im, ds.class_names(), heat.shape)
        labels.append(int(bool(im.regions)))
        scores.append(score if score is not None else float(heat.max()))
        px_labels.append(cls.ravel() > 0)
        px_scores.append(heat.ravel())
    return roc_auc(labels, scores), roc_auc(np.concatenate(px_labels), np.concatenate(px_scores))


@pytest.mark.parametrize(
    ("kind", "image_floor", "pixel_floor"),
    [("memory", 0.9, 0.95), ("forest", 0.9, 0.95)],
)
def test_held_out_images_are_told_apart(study, trained, kind, image_floor, pixel_floor):
    image_auc, pixel_auc = held_out_scores(study, trained[0][kind])
    assert image_auc >= image_floor, image_auc
    assert pixel_auc >= pixel_floor, pixel_auc


def test_unsupervised_checkpoints_hold_calibration_and_report_separation(study, trained):
    paths, events, _ = trained
    ckpt = load_checkpoint(paths["memory"])
    scoring = ckpt["scoring"]
    assert ckpt["classes"] == ["anomaly"]
    assert scoring["center"] < scoring["threshold"]
    assert scoring["image_center"] < scoring["image_threshold"]
    epochs = [e for e in events["memory"] if e.kind == "epoch"]
    assert epochs and all(e.val_pixel_auc is not None for e in epochs)
    assert any(e.kind == "status" and "calibrat" in e.message for e in events["memory"])
    # the default (auto) built a bank of each kind, reported both, kept one
    said = [e.message for e in events["memory"] if e.kind == "status"]
    part = _part(study[1], study[1].images[:16])
    learn, val = data.split(part, BASE.replace(model="memory"))
    annotated = sum(1 for i in val if part.images[i].regions)
    assert annotated and said[0] == (
        f"{len(learn)} images to learn from, {len(val)} to validate on ({annotated} annotated)"
    )
    for kind in train_memory.AUTO:
        assert any(m.startswith(f"{kind} descriptors: image ROC-AUC ") for m in said), said
    kept = load_checkpoint(paths["memory"])["scoring"]["descriptors"]
    assert f"keeping the {kept} descriptors" in said
    # and said whether sharpening pays on the validation images, and kept that
    scoring = load_checkpoint(paths["memory"])["scoring"]
    assert isinstance(scoring["sharpen"], bool)
    assert 0 <= scoring["contrast_center"] < scoring["contrast_threshold"]
    assert scoring["image_top"] in anomaly.TOP_FRACTIONS and "image_levels" not in scoring
    assert any(m.startswith("image score: mean of the top ") for m in said), said
    verdict = "sharpening" if scoring["sharpen"] else "not sharpening"
    assert any("sharpened by local contrast" in m and m.endswith(verdict) for m in said), said
    # and whether the line cue pays, with its calibration only where it is used
    assert isinstance(scoring["lines"], bool)
    joined = [m for m in said if m.startswith("line cue: image ROC-AUC ")]
    assert len(joined) == 1 and joined[0].endswith("; joining it" if scoring["lines"]
                                                   else "; not joining it"), said  # fmt: skip
    assert any(k.startswith("line_") for k in scoring) == scoring["lines"]


def _thin_scene(seed=0):
    """A textured background with a 2 px dark line, and a calibrated map that finds the
    line as a patch method does: a blob about five times its width, its crest a few
    pixels off the line."""
    rng = np.random.default_rng(seed)
    texture = 0.5 + 0.05 * rng.standard_normal((128, 128)).astype(np.float32)
    line = np.zeros((128, 128), bool)
    line[63:65, 20:108] = True
    image = np.where(line, 0.2, texture).astype(np.float32)
    from scipy import ndimage

    blob = ndimage.gaussian_filter(ndimage.binary_dilation(line, iterations=4).astype(
        np.float32), 2.0)  # fmt: skip
    heat = np.roll(0.02 + 0.9 * blob / blob.max(), 3, axis=0).astype(np.float32)
    normal = anomaly.contrast_map(0.5 + 0.05 * rng.standard_normal((128, 128)).astype(np.float32))
    return image, line, heat, anomaly.contrast_scoring(normal.ravel())


def _iou(a, b):
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def test_sharpening_outlines_thin_anomalies_the_map_only_points_at():
    image, line, heat, scoring = _thin_scene()
    sharp = anomaly.sharpen(heat, image, scoring)
    assert sharp.dtype == np.float32 and sharp.shape == heat.shape
    blob_iou, sharp_iou = _iou(heat > 0.5, line), _iou(sharp > 0.5, line)
    assert blob_iou < 0.25  # the blob around the line (measured 0.19)
    assert sharp_iou > 0.35 and sharp_iou > 2 * blob_iou, sharp_iou  # the line (0.43)
    # texture of a normal neighbourhood stays low however much it stands out locally
    assert float(sharp[~ndimage_dilate(heat > 0.1)].max()) < 0.3


def ndimage_dilate(mask):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=2)


def _chooser(maps, truths):
    from napari_bioanomaly.core.chooser import PointChooser

    chooser = PointChooser(classes=["anomaly"])
    for m, t in zip(maps, truths, strict=True):
        chooser.add(m, t)
    return chooser


def test_sharpening_is_kept_where_validation_says_it_pays():
    from napari_bioanomaly.core.operating import OperatingPoint

    image, line, heat, scoring = _thin_scene()
    sharp = anomaly.sharpen(heat, image, scoring)
    truth = line.astype(np.int32)
    bank = train_memory._Maps(0.9, 0.9, {})
    bank.points = {"plain": _chooser([heat], [truth]), "sharp": _chooser([sharp], [truth])}
    point, sharpened = train_memory._choose_point(bank, "auto")
    assert sharpened and point.source == "validation" and point.pixel_f1 > 0.6
    assert train_memory._choose_point(bank, "no")[1] is False
    said = train_memory._point_messages(bank, "auto", point, sharpened)
    assert said[0].startswith("validation pixel F1: ") and said[0].endswith("; sharpening")
    # a large uniform anomaly has no contrast inside: the sharpened map is hollow there
    blob = np.zeros((128, 128), np.int32)
    blob[30:100, 30:100] = 1
    hollow = np.where(blob > 0, 0.2, 0.02).astype(np.float32)
    hollow[30:100, 30:33] = 0.9
    filled = np.where(blob > 0, 0.9, 0.02).astype(np.float32)
    bank.points = {"plain": _chooser([filled], [blob]), "sharp": _chooser([hollow], [blob])}
    assert train_memory._choose_point(bank, "auto")[1] is False
    assert train_memory._choose_point(bank, "yes")[1] is True
    # nothing annotated to judge by: the default point, sharpened only when asked
    empty = np.zeros((128, 128), np.int32)
    bank.points = {"plain": _chooser([heat], [empty]), "sharp": _chooser([sharp], [empty])}
    assert train_memory._choose_point(bank, "auto") == (OperatingPoint(), False)
    assert train_memory._choose_point(bank, "yes") == (OperatingPoint(), True)


def test_the_line_cue_is_derived_once_per_image_for_both_banks_and_their_calibration(trained):
    """Calibration and validation of the filter and the random-encoder banks visit the
    same validation images: each image's line cue is derived once."""
    said = [e.message for e in trained[1]["memory"] if e.message]
    assert sum(" descriptors: image ROC-AUC " in m for m in said) == 2, said  # both banks
    calls = trained[2]
    assert calls and set(calls.values()) == {1}, calls


def test_derived_maps_are_kept_up_to_their_budget():
    derived = []

    def derive(norm):
        derived.append(norm)
        return norm * 2

    image = np.ones((8, 8), np.float32)
    cache = data.DerivedCache(derive, budget=image.nbytes)
    np.testing.assert_array_equal(cache(0, image), image * 2)
    assert cache(0, image) is cache(0, image) and len(derived) == 1  # kept
    np.testing.assert_array_equal(cache(1, image + 1), (image + 1) * 2)
    cache(1, image + 1)
    assert len(derived) == 3  # past the budget: derived again, still right


def test_line_cue_joins_where_validation_images_are_told_apart_better():
    alone = train_memory._Maps(0.80, 0.90, {})
    bank = train_memory._Bank("filters", {}, None, 1, alone, train_memory._Maps(0.88, 0.93, {}))
    assert train_memory._choose_lines(bank, "auto")
    assert not train_memory._choose_lines(bank, "no")
    assert "; joining it" in train_memory._lines_message(bank, "auto", True)
    bank.lined = train_memory._Maps(0.80, 0.915, {})  # mean within MARGIN: not worth it
    assert not train_memory._choose_lines(bank, "auto") and train_memory._choose_lines(bank, "yes")
    bank.lined = None  # not tried (lines "no"): never
    assert not train_memory._choose_lines(bank, "yes")
    # no annotated validation image to tell: joined (by the root mean square, below)
    bank.alone, bank.lined = train_memory._Maps(None, None, {}), train_memory._Maps(None, None, {})
    assert train_memory._choose_lines(bank, "auto") and not train_memory._choose_lines(bank, "no")


def test_without_a_chosen_point_the_line_cue_joins_by_the_root_mean_square():
    """The mean of map and cue needs a bank map of 1.0 for a spot the cue does not see to
    reach the calibrated 0.5; their root mean square keeps it above 0.5 from about 0.71."""
    scoring = {"line_center": 0.0, "line_threshold": 1.0}
    heat = np.array([[0.8, 0.6, 0.5, 0.3]], np.float32)  # a spot, a faint one, ...
    lines = np.full_like(heat, -1.0)  # the cue sees nothing there (calibrated ~0.02)
    cue = anomaly.calibrate(lines, 0.0, 1.0)
    mean = anomaly.with_lines(heat, lines, scoring)
    np.testing.assert_allclose(mean, (heat + cue) / 2, rtol=1e-6)
    rms = anomaly.with_lines(heat, lines, {**scoring, "line_join": "rms"})
    np.testing.assert_allclose(rms, np.sqrt((heat**2 + cue**2) / 2), rtol=1e-6)
    assert rms.dtype == np.float32
    assert (mean < 0.5).all() and rms[0, 0] > 0.5 and (rms[0, 1:] < 0.5).all()
    both = anomaly.with_lines(np.array([0.6], np.float32), np.array([1.0], np.float32),
                              {**scoring, "line_join": "rms"})  # fmt: skip
    assert both[0] > 0.5  # where both see it, as with the mean


@pytest.mark.parametrize("stored", [True, False])
def test_predictions_with_the_line_cue_are_joined(study, trained, stored):
    """A bank whose scoring asks for the line cue: its map is the mean of the bank's
    calibrated map and the calibrated cue, its image score standardises both. The cue is
    relative to its surroundings as the checkpoint says (``line_window``, which new banks
    store); a checkpoint without it (trained before) gets the cue as it is."""
    from napari_bioanomaly.core.reference import line_map

    folder, ds = study
    predictor = Predictor.load(trained[0]["memory"], "cpu")
    kept = predictor.extra["scoring"]
    # a bank keeps the window with the cue's calibration, where the cue joined
    assert kept.get("line_window") == (anomaly.LINE_WINDOW if kept["lines"] else None)
    kept.pop("line_window", None)
    if stored:
        kept["line_window"] = anomaly.LINE_WINDOW
    image = read_image(folder / next(im for im in ds.images[16:] if im.regions).filename)
    norm = data.normalise(image, predictor.config.low, predictor.config.high)
    cue = line_map(norm, window=anomaly.LINE_WINDOW if stored else None)
    assert not np.allclose(cue, line_map(norm, window=None if stored else anomaly.LINE_WINDOW))
    scoring = {**predictor.extra["scoring"], "sharpen": False, "lines": False}
    levels = {
        **anomaly.cue_scoring("line_", cue.ravel()),
        "line_image_center": 0.5 * float(cue.max()),
        "line_image_threshold": float(cue.max()),
    }
    predictor.extra["scoring"] = scoring
    plain = predict_image(predictor, image)
    predictor.extra["scoring"] = {**scoring, **levels, "lines": True}
    joined = predict_image(predictor, image)
    expected = anomaly.with_lines(1.0 - plain[0][0], cue, predictor.extra["scoring"])
    np.testing.assert_allclose(1.0 - joined[0][0], expected, atol=1e-6)
    raw = anomaly.raw_map("memory", norm, predictor.model, scoring)
    raw_score = anomaly.top_k(raw, fraction=scoring.get("image_top", anomaly.TOP_FRACTION))
    z = anomaly.image_z(raw_score, predictor.extra["scoring"], anomaly.line_top(cue))
    assert z == pytest.approx((anomaly.image_z(raw_score, scoring)
                               + (float(np.sort(cue.ravel())[-max(64, cue.size // 1000):].mean())
                                  - levels["line_image_threshold"])
                               / max(levels["line_image_threshold"] - levels["line_image_center"],
                                     levels["line_threshold"] - levels["line_center"])) / 2,
                              rel=1e-4)  # fmt: skip
    assert joined[1] == anomaly.image_score(raw_score, predictor.extra["scoring"],
                                            anomaly.line_top(cue))  # fmt: skip


def test_image_score_pooling_is_chosen_on_validation_images():
    labels = [0, 0, 0, 1, 1]
    # the default share ranks them badly, 1% well: chosen; a share within MARGIN is not
    tops = [[0.9, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2], [0.3, 0.3, 0.3, 0.3],
            [0.5, 0.25, 0.8, 0.25], [0.6, 0.6, 0.9, 0.6]]  # fmt: skip
    pooling = train_memory._choose_pooling(labels, tops)
    assert pooling.fraction == 0.01
    assert pooling.aucs == pytest.approx((4 / 6, 5 / 6, 1.0, 5 / 6))
    assert "1% of the map (validation image ROC-AUC" in pooling.describe()
    tied = [[t[0]] * 4 for t in tops]
    assert train_memory._choose_pooling(labels, tied).fraction == anomaly.TOP_FRACTION
    # nothing to rank (no normal, or no annotated, validation image): the default
    assert train_memory._choose_pooling([1, 1], tops[:2]) == train_memory._Pooling(0.001)
    assert train_memory._choose_pooling([], []).fraction == anomaly.TOP_FRACTION


def test_without_annotated_validation_images_the_image_score_is_the_top_of_the_map():
    scoring = {"image_top": 0.01, "image_center": 0.30, "image_threshold": 0.40}
    heat = np.full((100, 100), 0.2, np.float32)
    heat[:10, :10] = 0.4  # the top 1% of 10,000 pixels
    assert anomaly.map_image_score(heat, scoring) == 0.5  # as high as the highest normal
    brighter = heat.copy()
    brighter[:10, :10] = 0.9
    # the slope: the spread of the calibration images' scores, at least MAP_SPREAD
    z = (0.9 - 0.4) / anomaly.MAP_SPREAD
    assert anomaly.map_image_score(brighter, scoring) == round(1 / (1 + np.exp(-z)), 6)
    assert anomaly.map_z(0.9, {**scoring, "image_center": -1.0}) == pytest.approx(0.5 / 1.4)
    # a few bright pixels move it less than a bright top 1%
    speck = heat.copy()
    speck[:2, :2] = 0.9
    score = anomaly.map_image_score(speck, scoring)
    assert 0.5 < score < anomaly.map_image_score(brighter, scoring)


def test_top_ks_agree_with_top_k():
    rng = np.random.default_rng(1)
    scores = rng.random((300, 200)).astype(np.float32)
    valid = rng.random((300, 200)) > 0.3
    many = anomaly.top_ks(scores, valid)
    for f, value in zip(anomaly.TOP_FRACTIONS, many, strict=True):
        k = max(64, int(f * np.count_nonzero(valid)))
        assert value == pytest.approx(np.sort(scores[valid])[-k:].mean(), rel=1e-6)
        assert anomaly.top_k(scores, valid, f) == pytest.approx(value, rel=1e-6)
    assert anomaly.top_ks(scores, np.zeros_like(valid)) == [0.0] * len(anomaly.TOP_FRACTIONS)


def test_predictions_of_a_sharpened_bank_are_sharpened(study, trained):
    folder, ds = study
    predictor = Predictor.load(trained[0]["memory"], "cpu")
    image = read_image(folder / next(im for im in ds.images[16:] if im.regions).filename)
    scoring = predictor.extra["scoring"]
    maps = {}
    for sharp in (False, True):
        predictor.extra["scoring"] = {**scoring, "sharpen": sharp}
        maps[sharp] = predict_image(predictor, image)
    norm = data.normalise(image, predictor.config.low, predictor.config.high)
    expected = anomaly.sharpen(1.0 - maps[False][0][0], norm, scoring)
    np.testing.assert_allclose(1.0 - maps[True][0][0], expected, atol=1e-6)
    assert not np.allclose(maps[True][0], maps[False][0])
    assert maps[True][1] == maps[False][1]  # the image score is the unsharpened map's


def test_a_bank_joined_by_the_line_cue_keeps_it_relative_to_its_surroundings(study, tmp_path):
    """``lines="yes"``: the cue is calibrated and predicted relative to its surroundings
    (:data:`.anomaly.LINE_WINDOW`, stored with the calibration), the same way both times."""
    from napari_bioanomaly.core.reference import line_map
    from napari_bioanomaly.ml.train import train

    folder, ds = study
    config = BASE.replace(model="memory", descriptors="filters", lines="yes")
    _, result = drain(train(_part(ds, ds.images[:16]), config, tmp_path / "lines.pt"))
    scoring = load_checkpoint(result.best)["scoring"]
    assert scoring["lines"] is True and scoring["line_window"] == anomaly.LINE_WINDOW
    predictor = Predictor.load(result.best, "cpu")
    image = read_image(folder / ds.images[0].filename)
    norm = data.normalise(image, config.low, config.high)
    # calibrated on the cue as predicted: its normal median sits near its calibrated centre
    cue = line_map(norm, window=anomaly.LINE_WINDOW)
    assert scoring["line_center"] == pytest.approx(float(np.median(cue)), rel=0.5)
    assert not scoring["line_center"] == pytest.approx(float(np.median(line_map(norm))), rel=0.5)
    heat = anomaly.calibrate(anomaly.raw_map("memory", norm, None, scoring),
                             scoring["center"], scoring["threshold"])  # fmt: skip
    expected = anomaly.with_lines(heat, cue, scoring)
    if scoring["sharpen"]:
        expected = anomaly.sharpen(expected, norm, scoring)
    np.testing.assert_allclose(1.0 - predict_image(predictor, image)[0][0], expected, atol=1e-6)


def test_filter_descriptors_need_no_network(study, tmp_path):
    """``descriptors="filters"``: the bank holds filter responses and nothing else."""
    from napari_bioanomaly.ml.train import train

    _, ds = study
    config = BASE.replace(model="memory", descriptors="filters")
    _, result = drain(train(_part(ds, ds.images[:16]), config, tmp_path / "filters.pt"))
    ckpt = load_checkpoint(result.best)
    assert "state_dict" not in ckpt and ckpt["scoring"]["descriptors"] == "filters"
    assert ckpt["scoring"]["bank"].shape == (anomaly.BANK_SIZE, 20)
    assert Predictor.load(result.best, "cpu").model is None
    image_auc, pixel_auc = held_out_scores(study, result.best)
    assert image_auc >= 0.9 and pixel_auc >= 0.95, (image_auc, pixel_auc)


def test_random_encoder_descriptors_are_saved_with_their_encoders(study, tmp_path):
    """``descriptors="random"``: the bank of several random-weight encoders' descriptors,
    and the encoders, which prediction uses."""
    from napari_bioanomaly.ml.train import train

    _, ds = study
    config = BASE.replace(model="memory", descriptors="random")
    _, result = drain(train(_part(ds, ds.images[:16]), config, tmp_path / "random.pt"))
    ckpt = load_checkpoint(result.best)
    scoring = ckpt["scoring"]
    assert scoring["descriptors"] == "random" and scoring["encoders"] == ENCODERS
    assert scoring["bank"].shape == (anomaly.BANK_SIZE, ENCODERS * descriptor_dims(16))
    assert set(ckpt["state_dict"]) == set(EncoderEnsemble(16).state_dict())
    assert isinstance(Predictor.load(result.best, "cpu").model, EncoderEnsemble)
    image_auc, pixel_auc = held_out_scores(study, result.best)
    assert image_auc >= 0.9 and pixel_auc >= 0.9, (image_auc, pixel_auc)


def _bank(kind, image_auc, pixel_auc):
    return train_memory._Bank(kind, {}, None, 1, train_memory._Maps(image_auc, pixel_auc, {}))


def test_auto_keeps_the_cheaper_bank_unless_validation_prefers_the_other():
    filters = _bank("filters", 0.80, 0.90)
    assert train_memory._better(_bank("random", 0.90, 0.95), filters)
    assert not train_memory._better(_bank("random", 0.80, 0.905), filters)  # within MARGIN
    assert not train_memory._better(_bank("random", 0.70, 0.95), filters)  # mean 0.825 < 0.85
    # only pixel AUROC known (every validation image annotated): it decides alone
    assert train_memory._better(_bank("random", None, 0.95), _bank("filters", None, 0.90))
    # nothing annotated to judge by: the cheaper, first kind stays
    assert not train_memory._better(_bank("random", None, None), _bank("filters", None, None))


def test_random_encoders_are_seeded_apart_and_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, again = EncoderEnsemble(4, 3, seed=7), EncoderEnsemble(4, 3, seed=7)
    assert torch.equal(torch.rand(3), expected)  # the global random state is untouched
    weights = [m.down[0][0].weight for m in first.members]
    assert torch.equal(weights[0], again.members[0].down[0][0].weight)
    assert not torch.equal(weights[0], weights[1])  # each member draws its own weights
    assert not torch.equal(weights[0], EncoderEnsemble(4, 3, seed=8).members[0].down[0][0].weight)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        out = first(x, 2)
        assert out.shape == (1, first.dims, 16, 16) and first.dims == 3 * descriptor_dims(4)
        assert torch.equal(out[:, descriptor_dims(4) : 2 * descriptor_dims(4)],
                           first.members[1](x, 2))  # fmt: skip


def test_learnt_descriptors_train_a_network_without_annotations(study, tmp_path):
    """``descriptors="learned"``: a U-Net learns the normal images (masked-image
    reconstruction) first; the file holds its encoder, which prediction uses."""
    from napari_bioanomaly.ml.train import train

    _, ds = study
    config = BASE.replace(model="memory", descriptors="learned")
    events, result = drain(train(_part(ds, ds.images[:16]), config, tmp_path / "learnt.pt"))
    ckpt = load_checkpoint(result.best)
    assert ckpt["scoring"]["descriptors"] == "learned"
    assert ckpt["scoring"]["bank"].shape == (anomaly.BANK_SIZE, descriptor_dims(16))
    assert set(ckpt["state_dict"]) == set(PatchEncoder(16).state_dict())
    learning = [e.message for e in events if e.kind == "status"]
    assert any("learning descriptors from" in m and "reconstruction loss" in m for m in learning)
    assert isinstance(Predictor.load(result.best, "cpu").model, PatchEncoder)
    image_auc, pixel_auc = held_out_scores(study, result.best)
    assert image_auc >= 0.9 and pixel_auc >= 0.9, (image_auc, pixel_auc)


def test_descriptors_are_the_same_in_windows_and_whole():
    """Big images are described in windows; inside, the descriptors are those of the whole
    image up to GroupNorm's statistics of each window (a few percent)."""
    from napari_bioanomaly.ml import descriptors

    torch.manual_seed(0)
    encoder = descriptors.PatchEncoder(4)
    image = np.random.default_rng(0).random((900, 130)).astype(np.float32)
    windows = descriptors.describe(image, encoder, 2)
    assert windows.shape == (450, 65, descriptor_dims(4)) == (450, 65, 24)
    whole = descriptors.describe(image, encoder, 2, window=4096)
    assert np.abs(windows - whole).mean() < 0.02 * np.abs(whole).mean()
    assert descriptors.describe(image[:21, :37], encoder, 4).shape == (6, 10, 24)


def test_encoder_of_a_unet_computes_its_first_levels():
    from napari_bioanomaly.ml.descriptors import PatchEncoder

    unet = models.UNet(1, base=4)
    encoder = PatchEncoder.from_unet(unet, 4)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.down[0](x), unet.down[0](x))
        assert torch.equal(encoder.down[2][0].weight, unet.down[2][0].weight)


def test_calibration_puts_normal_pixels_below_half(study, trained):
    folder, ds = study
    predictor = Predictor.load(trained[0]["memory"], "cpu")
    normal = [im for im in ds.images[16:] if not im.regions]
    probs, score = predict_image(predictor, read_image(folder / normal[0].filename))
    heat = 1.0 - probs[0]
    assert heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    assert np.mean(heat > 0.5) < 0.01  # at most a few normal pixels above the threshold
    assert 0 < score < 1


def test_coreset_covers_the_candidates():
    gen = torch.Generator().manual_seed(0)
    clusters = torch.randn(5, 8, generator=gen) * 20
    points = clusters.repeat_interleave(200, 0) + torch.randn(1000, 8, generator=gen) * 0.1
    chosen = anomaly.coreset(points, 5)
    # greedy k-center picks one point of each well-separated cluster
    nearest = torch.cdist(chosen, clusters).argmin(dim=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3, 4]


def test_outliers_are_what_other_images_do_not_hold():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen) * 5
    # 10 images of 200 normal patches each, around 4 shared kinds of texture
    kinds = torch.randint(4, (2000,), generator=gen)
    normal = centres[kinds] + torch.randn(2000, 16, generator=gen)
    owners = np.repeat(np.arange(10), 200)
    # image 3 also holds a stain: 30 patches alike, and like nothing elsewhere
    stain = torch.randn(16, generator=gen) * 5 + torch.randn(30, 16, generator=gen) * 0.5
    # a kind of texture only images 5-9 hold, 10 patches each: not an outlier
    shared = torch.randn(16, generator=gen) * 5 + torch.randn(50, 16, generator=gen)
    feats = torch.cat([normal, stain, shared])
    owner = np.concatenate([owners, np.full(30, 3), np.repeat(np.arange(5, 10), 10)])
    out = anomaly.outliers(feats, owner, share=30 / len(feats))
    assert out.dtype == torch.bool and out.shape == (len(feats),)
    assert out[2000:2030].all()  # the stain, though its patches are alike each other
    assert not out[2030:].any() and int(out.sum()) == 30
    assert not anomaly.outliers(feats, owner, share=0.0).any()
    # one image alone: nothing to compare with, nothing left out
    assert not anomaly.outliers(feats, np.zeros(len(feats), int), share=0.1).any()
    with pytest.raises(BioAnomalyError, match=r"bank_outliers must be in \[0, 0\.5\]"):
        TrainConfig(model="memory", bank_outliers=0.7)


def test_outliers_left_out_keep_unannotated_anomalies_out_of_the_bank(tmp_path):
    """A folder learnt from as it is (no annotation, anomalies in most images): leaving
    out the candidates least like other images' makes the map find the anomalies (on this
    sample pixel AUROC 0.94 against 0.22 with none left out)."""
    from napari_bioanomaly.ml.train import train

    write_sample(tmp_path, SampleConfig(n_images=6, size=128, seed=3))
    ds, _ = annotations.load(tmp_path / "annotations.json")
    bare = Dataset(images=[ImageRecord(im.filename, im.shape) for im in ds.images],
                   root=tmp_path, classes=list(ds.classes), class_attribute="class")  # fmt: skip
    aucs = {}
    for share in (0.0, 0.05):
        config = TrainConfig(model="memory", seed=0, lines="no", bank_outliers=share)
        events, result = drain(train(bare, config, tmp_path / f"m{share}.pt"))
        predictor = Predictor.load(result.best, "cpu")
        truth, heat = [], []
        for im in ds.images:
            probs, _ = predict_image(predictor, read_image(tmp_path / im.filename))
            truth.append(data.rasterise(im, ds.class_names(), probs.shape[1:])[0].ravel() > 0)
            heat.append(1.0 - probs[0].ravel())
        aucs[share] = roc_auc(np.concatenate(truth), np.concatenate(heat))
        said = [e.message for e in events if "left out" in (e.message or "")]
        assert bool(said) == bool(share), said
    assert aucs[0.05] > 0.9 and aucs[0.05] > aucs[0.0] + 0.3, aucs
    assert TrainConfig().bank_outliers == 0.0  # not the default: on real sets it cost (docs)


def test_calibrate_maps_threshold_to_half_and_keeps_order():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    out = anomaly.calibrate(values, center=1.0, threshold=2.0)
    assert out[2] == pytest.approx(0.5)
    assert out[1] == pytest.approx(1 / (1 + np.exp(4)), rel=1e-4)
    assert np.all(np.diff(out) > 0)
    strong = anomaly.calibrate(np.array([50.0, 60.0, 1e4]), center=1.0, threshold=2.0)
    assert np.all(np.diff(strong) > 0) and strong[-1] < 1.0  # strong anomalies keep their order
    scoring = {"center": 0.0, "threshold": 1.0, "image_center": 1.0, "image_threshold": 2.0}
    far = [anomaly.image_score(v, scoring) for v in (10.0, 11.0, 12.0)]
    assert far[0] < far[1] < far[2] < 1.0  # no saturation: ranking (ROC) survives


def test_forest_checkpoint_is_plain_arrays_and_predicts_like_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 20)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0.3).astype(int) + (x[:, 5] > 1.2)
    forest = Forest.fit(x, y, 3, seed=0)
    state = forest.state()
    assert all(isinstance(v, torch.Tensor | int | str) for v in state.values())
    assert state["feature_set"] == "filters"  # what 20 features per pixel are
    again = Forest.from_state(state, 3)
    reference = RandomForestClassifier(
        n_estimators=64, max_depth=16, min_samples_leaf=2, n_jobs=-1, random_state=0
    ).fit(x, y)
    test = rng.normal(size=(200, 20)).astype(np.float32)
    np.testing.assert_allclose(
        again.predict_features(test), reference.predict_proba(test), atol=1e-5
    )


def test_forest_context_features_mark_long_lines_not_specks():
    from napari_bioanomaly.ml.features import FEATURE_SETS, forest_features

    image = np.full((96, 96), 0.6, np.float32)
    image[48, 10:86] = 0.2  # a dark hair, 76 px long
    image[20:23, 20:23] = 0.2  # a speck as dark
    for kind, n in FEATURE_SETS.items():
        assert forest_features(image, kind).shape == (96, 96, n)
    ctx = forest_features(image, "context")
    np.testing.assert_array_equal(ctx[..., :20], forest_features(image, "filters"))
    # the line cue: the hair over the speck, 1.5x along 21 px segments, 5x along 61 px
    assert ctx[48, 48, 20] > 1.5 * ctx[21, 21, 20] > 0
    assert ctx[48, 48, 21] > 5 * ctx[21, 21, 21] > 0
    assert ctx[21, 21, 22] > 0.1 > ctx[80, 80, 22]  # local contrast: the speck, not the field
    with pytest.raises(ValueError, match="feature set"):
        forest_features(image, "deep")


def test_joined_forests_predict_the_mean_of_their_parts():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 20)).astype(np.float32)
    y = (x[:, 1] > 0.2).astype(int) + (x[:, 4] > 1.0)
    halves = [Forest.fit(x[k::2], y[k::2], 3, seed=k) for k in (0, 1)]
    joined = Forest.join(halves)
    assert joined.left.shape[0] == 128 and joined.n_features == 20
    test = rng.normal(size=(100, 20)).astype(np.float32)
    mean = (halves[0].predict_features(test) + halves[1].predict_features(test)) / 2
    np.testing.assert_allclose(joined.predict_features(test), mean, atol=1e-6)
    again = Forest.from_state(joined.state(), 3)  # padded trees still pass the checks
    np.testing.assert_allclose(again.predict_features(test), mean, atol=1e-6)


def test_probability_features_see_a_crack_found_in_pieces():
    from napari_bioanomaly.ml.features import PROBABILITY_FEATURES, probability_features

    prob = np.zeros((96, 96), np.float32)
    prob[48, 10:86:6] = 0.9  # a crack the first forest found in pieces
    prob[20, 20] = 0.9  # a lone speck as strong
    f = probability_features(prob)
    assert f.shape == (96, 96, PROBABILITY_FEATURES) and np.isfinite(f).all()
    np.testing.assert_array_equal(f[..., 0], prob)
    assert f[48, 12, 1] == pytest.approx(0.9)  # the maximum within 2 px widens the pieces
    assert f[48, 12, 0] == 0
    # the line cue along 61 px: between the pieces more than on the speck
    assert f[48, 49, -1] > 2 * f[20, 20, -1]


def test_forest_features_are_multiscale():
    image = np.zeros((64, 64), np.float32)
    image[20:40, 20:40] = 1
    f = features(image)
    assert f.shape == (64, 64, 20) and f.dtype == np.float32
    assert np.isfinite(f).all()


def test_forest_class_weights_are_recorded(study, tmp_path):
    from napari_bioanomaly.ml.train import train

    _, ds = study
    config = BASE.replace(model="forest", class_weights="balanced")
    _, result = drain(train(_part(ds, ds.images[:6]), config, tmp_path / "f.pt"))
    ckpt = load_checkpoint(result.best)
    assert ckpt["config"]["class_weights"] == "balanced"
    weights = np.asarray(ckpt["class_weights"])
    assert weights.shape == (len(ckpt["classes"]) + 1,)
    assert weights[0] < weights[1:].max()  # background is the common class
    assert "state_dict" not in ckpt


def predictions_first(ann: str) -> str:
    """The first image file name of an annotation file."""
    dataset, _ = annotations.load(ann, read_images=False)
    return dataset.images[0].filename


def test_cli_unsupervised_train_predict_heatmaps_and_evaluate(study, tmp_path, capsys):
    folder, _ = study
    model = tmp_path / "mem.pt"
    ann = str(folder / "annotations.json")
    assert main(["train", "--annotations", ann, "--out", str(model), "--model", "memory"]) == 0
    assert "image ROC-AUC" in capsys.readouterr().out
    pred = tmp_path / "pred.json"
    argv = ["predict", "--model", str(model), "--images", ann, "--out", str(pred)]
    assert main([*argv, "--heatmaps"]) == 0  # no folder: beside pred.json, where Review looks
    heat = tmp_path / "pred.heatmaps"
    maps = sorted(heat.glob("*.tif"))
    assert len(maps) == 24
    # the image folder as the maps' folder: a TIFF's map has its name, it would replace it
    image = folder / predictions_first(ann)
    kept = image.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--heatmaps", str(folder)]) == 2
    assert "would be written over the image itself" in capsys.readouterr().err
    assert image.read_bytes() == kept and not image.with_name(image.name + ".bak").exists()
    review = ReviewSession.open(AnnotationSession.open(ann), pred)
    shown = review.heatmap(review.predictions.images[0].filename)
    assert shown is not None and shown.shape == (256, 256)
    first = tifffile.imread(maps[0])
    assert first.dtype == np.float32 and first.shape == (256, 256)
    predictions, _ = annotations.load(pred, folder, read_images=False)
    assert all("anomaly_score" in im.file_attributes for im in predictions.images)
    assert {r.label for r in predictions.regions} == {"anomaly"}
    plot = tmp_path / "curves.png"
    capsys.readouterr()
    assert main(["evaluate", "--gt", ann, "--pred", str(pred), "--plot", str(plot), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_level"]["roc_auc"] >= 0.9  # scored by anomaly_score, not regions
    assert result["class_agreement"]["kappa"] is None  # one predicted class: nothing to agree
    assert set(result["classes"]) >= {"dust", "anomaly"}
    assert read_image(plot).shape[2] == 4
    # flips and rotations are for the networks: asked for here, they are said not to apply
    assert main([*argv, "--tta"]) == 0
    err = capsys.readouterr().err
    assert "--tta: flips and rotations apply to U-Net and Mask R-CNN, not to memory" in err


def test_unsupervised_checkpoint_without_calibration_is_explained(trained, tmp_path):
    from napari_bioanomaly.ml.train import save_checkpoint

    ckpt = load_checkpoint(trained[0]["memory"])
    del ckpt["scoring"]
    path = save_checkpoint(tmp_path / "raw.pt", ckpt)
    with pytest.raises(BioAnomalyError, match="not calibrated"):
        Predictor.load(path, "cpu")


def test_class_weights_refused_for_models_without_them():
    with pytest.raises(BioAnomalyError, match="class weights apply"):
        TrainConfig(model="maskrcnn", class_weights="balanced")
    with pytest.raises(BioAnomalyError, match="model must be one of"):
        TrainConfig(model="svm")


def test_cli_trains_on_a_folder_of_images_without_annotations(study, tmp_path, capsys):
    import shutil

    folder, ds = study
    bare = tmp_path / "bare"
    bare.mkdir()
    for im in ds.images[:6]:
        shutil.copy(folder / im.filename, bare / im.filename)
    out = tmp_path / "m.pt"
    assert main(["train", "--annotations", str(bare), "--out", str(out), "--model", "memory"]) == 0
    assert load_checkpoint(out)["classes"] == ["anomaly"]
    # nothing to choose the line cue by: it joins by the root mean square, the log says
    # so, and what spots and pits want
    scoring = load_checkpoint(out)["scoring"]
    assert scoring["lines"] and scoring["line_join"] == "rms"
    said = " ".join(capsys.readouterr().err.split())
    # in the CLI's words: its option, not the Train widget's field
    assert NO_LINES_CHOICE_CLI in said and "train with --lines no)" in said
    assert NO_LINES_CHOICE not in said and "line cue: no)" not in said
    # nor the image score's pooling: the top 1% of the joined map, the one proposals come
    # from, 0.5 at the highest validation image's
    assert scoring["image_from"] == "map" and scoring["image_top"] == anomaly.MAP_TOP_FRACTION
    assert scoring["image_center"] <= scoring["image_threshold"] <= 1.0
    assert train_memory.MAP_SCORE_TEXT in said
    predictor = Predictor.load(out, "cpu")
    probs, score = predict_image(predictor, read_image(bare / ds.images[0].filename))
    assert score == anomaly.map_image_score(probs[1], scoring)
    assert main(["train", "--annotations", str(bare), "--out", str(tmp_path / "u.pt")]) == 2
    assert "no annotated anomalies" in capsys.readouterr().err


def test_memory_bank_out_of_gpu_memory_falls_back_to_the_cpu(monkeypatch):
    scoring = {
        "mean": [0.0] * 20, "std": [1.0] * 20,
        "bank": torch.zeros((8, 20)),
    }  # fmt: skip
    reference = anomaly.memory_raw(np.zeros((32, 32), np.float32), scoring, "cpu")
    real_cdist = torch.cdist

    def cdist(a, b):
        if a.device.type == "meta":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_cdist(a, b)

    monkeypatch.setattr(torch, "cdist", cdist)
    again = anomaly.memory_raw(np.zeros((32, 32), np.float32), scoring, "meta")
    np.testing.assert_allclose(again, reference)


def test_encoder_descriptors_out_of_gpu_memory_fall_back_to_the_cpu(monkeypatch):
    encoder = EncoderEnsemble(4, 2, seed=0)
    image = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    reference = anomaly.memory_descriptors(image, 2, encoder, "cpu")
    real_describe, devices = anomaly.describe, []

    def describe(norm, network, stride, device="cpu"):
        devices.append(str(device))
        if str(device) != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_describe(norm, network, stride, device)

    monkeypatch.setattr(anomaly, "describe", describe)
    again = anomaly.memory_descriptors(image, 2, encoder, "cuda")
    assert devices == ["cuda", "cpu"]
    np.testing.assert_allclose(again, reference)
    monkeypatch.setattr(anomaly, "describe", lambda *a: (_ for _ in ()).throw(
        RuntimeError("cuDNN error: not supported")))  # fmt: skip
    with pytest.raises(RuntimeError, match="cuDNN"):  # other errors are not hidden
        anomaly.memory_descriptors(image, 2, encoder, "cuda")


@pytest.mark.parametrize("stride", [2, 4])
def test_sampled_maps_are_interpolated_back_onto_their_pixels(stride):
    rows, cols = np.mgrid[0:37, 0:50].astype(np.float32)
    ramp = 3 * rows + cols  # bilinear interpolation reproduces a plane exactly
    # filter responses sampled at pixels stride * i ...
    up = anomaly.upsample(torch.from_numpy(ramp[::stride, ::stride].copy()), stride,
                          ramp.shape, centred=False)  # fmt: skip
    last_r, last_c = (np.array(ramp.shape) - 1) // stride * stride
    np.testing.assert_allclose(up[: last_r + 1, : last_c + 1], ramp[: last_r + 1, : last_c + 1],
                               atol=1e-4)  # fmt: skip
    assert up.shape == ramp.shape
    # ... and encoder descriptors of blocks, at their centres stride * i + (stride - 1) / 2
    h, w = 36 // stride, 48 // stride
    centres = ramp[:36, :48].reshape(h, stride, w, stride).mean(axis=(1, 3))
    up = anomaly.upsample(torch.from_numpy(centres), stride, (36, 48), centred=True)
    inner = slice(stride, -stride)
    np.testing.assert_allclose(up[inner, inner], ramp[:36, :48][inner, inner], atol=1e-4)
