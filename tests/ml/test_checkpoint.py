"""Checkpoints made elsewhere: every array and number is checked before it is used.

A data-only checkpoint (``weights_only=True``) can still crash scikit-learn
(tree indices out of range), hang it (a child pointing back to its parent) or
exhaust memory (``base_channels`` of a billion): ``predict`` must refuse each
with a message naming the file and the item, quickly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tifffile
import torch

from napari_bioanomaly.cli import main
from napari_bioanomaly.core.model import BioAnomalyError
from napari_bioanomaly.ml.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.forest import Forest
from napari_bioanomaly.ml.predict import Predictor, predict_image


def checkpoint(model: str, **extra) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": TrainConfig(model=model).to_dict(), "classes": ["dust", "hair"],
            **extra}  # fmt: skip


@pytest.fixture(scope="module")
def forest_ckpt() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(int) + (x[:, 5] > 1.2)
    return checkpoint("forest", forest=Forest.fit(x, y, 3, seed=0).state())


@pytest.fixture(scope="module")
def two_stage_ckpt() -> dict:
    from napari_bioanomaly.ml.features import PROBABILITY_FEATURES

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 20 + PROBABILITY_FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(int) + (x[:, 22] > 1.2)
    first = Forest.fit(x[:, :20], y, 3, seed=0, feature_set="filters")
    second = Forest.fit(x, y, 3, seed=1, feature_set="filters", first=first)
    return checkpoint("forest", forest=second.state())


@pytest.fixture(scope="module")
def unet_ckpt() -> dict:
    from napari_bioanomaly.ml import models

    net = models.build("unet", 2, 64, 4)
    config = TrainConfig(tile=64, base_channels=4).to_dict()
    return {**checkpoint("unet"), "config": config, "state_dict": net.state_dict()}


def refused(tmp_path, ckpt: dict, match: str) -> None:
    path = tmp_path / "hostile.pt"
    torch.save(ckpt, path)
    with pytest.raises(BioAnomalyError, match=match) as info:
        Predictor.load(path, "cpu")
    assert str(path) in str(info.value)


def test_well_formed_checkpoints_load(tmp_path, forest_ckpt, unet_ckpt):
    for name, ckpt in (("f.pt", forest_ckpt), ("u.pt", unet_ckpt)):
        torch.save(ckpt, tmp_path / name)
        predictor = Predictor.load(tmp_path / name, "cpu")
        probs = (
            predictor.extra["forest"].probabilities(np.zeros((16, 16), np.float32))
            if predictor.kind == "forest"
            else None
        )
        assert predictor.classes == ["dust", "hair"]
        assert probs is None or probs.shape == (3, 16, 16)


def test_a_checkpoint_peeked_at_says_its_run_and_stays_data(tmp_path, unet_ckpt):
    """Resume reads what a run was (config, epoch, history) on napari's thread: its
    weights are mapped, not read; the file is still refused where it is no checkpoint,
    holds code, or its config is wrong, naming it."""
    from napari_bioanomaly.ml.checkpoint import peek_checkpoint

    path = tmp_path / "u.last.pt"
    torch.save({**unet_ckpt, "epoch": 3, "history": [{"epoch": 0, "loss": 0.5}]}, path)
    peeked = peek_checkpoint(path)
    assert peeked["config"] == unet_ckpt["config"] and peeked["epoch"] == 3
    assert peeked["history"] == [{"epoch": 0, "loss": 0.5}]
    name, weights = next(iter(peeked["state_dict"].items()))
    assert torch.equal(weights, unet_ckpt["state_dict"][name])
    for bad, match in (
        ({**unet_ckpt, "config": {"model": "no such model"}}, "cannot be used: config"),
        ({"format": "something else"}, "not a napari-bioanomaly checkpoint"),
        ({**unet_ckpt, "hook": Forest}, "refused: it holds objects other than tensors"),
    ):
        torch.save(bad, path)
        with pytest.raises(BioAnomalyError, match=match) as info:
            peek_checkpoint(path)
        assert str(path) in str(info.value)
    path.write_text("not a model")
    with pytest.raises(BioAnomalyError, match="not a model file"):
        peek_checkpoint(path)
    # the format before zip archives (PyTorch < 1.6, or written so): read, not mapped
    torch.save(unet_ckpt, path, _use_new_zipfile_serialization=False)
    assert peek_checkpoint(path)["config"] == unet_ckpt["config"]


def test_forest_checkpoint_from_before_feature_sets_predicts_with_filters(tmp_path, forest_ckpt):
    ckpt = copy.deepcopy(forest_ckpt)
    del ckpt["forest"]["feature_set"]  # checkpoints before 2026-12-03 have none
    path = tmp_path / "old.pt"
    torch.save(ckpt, path)
    predictor = Predictor.load(path, "cpu")
    forest = predictor.extra["forest"]
    assert forest.feature_set == "filters" and forest.n_features == 20
    assert forest.probabilities(np.zeros((16, 16), np.float32)).shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # a child outside the tree: scikit-learn would read out of bounds (segfault)
        (lambda f: f["left"].__setitem__((0, 0), 10**6), r"tree 0 node 0: children 1000000"),
        # a child pointing back at its parent: prediction would loop for ever
        (
            lambda f: f["right"].__setitem__((1, 0), 0),
            r"tree 1 node 0: children .* must come after",
        ),
        (
            lambda f: f["feature"].__setitem__((2, 0), 99),
            r"tree 2 node 0: feature 99 outside 0..19",
        ),
        (lambda f: f["n_nodes"].__setitem__(3, 10**7), r"forest\.n_nodes"),
        (lambda f: f["threshold"].__setitem__((0, 0), float("nan")), r"forest\.threshold: .*NaN"),
        (lambda f: f.__setitem__("value", f["value"][..., :2]), r"forest\.value: shape"),
        (lambda f: f.__setitem__("left", f["left"].float()), r"forest\.left: a 2-D array"),
        (lambda f: f.__setitem__("n_features", "20"), r"forest\.n_features"),
        (lambda f: f.__setitem__("feature_set", "deep"), r"forest\.feature_set: one of"),
        (
            lambda f: f.__setitem__("feature_set", "context"),
            r"forest\.n_features: 20, but the context features give 23",
        ),
        (lambda f: f.pop("right"), r"forest\.right: not a tensor"),
    ],
)
def test_malformed_forests_are_refused_by_item(tmp_path, forest_ckpt, change, match):
    ckpt = copy.deepcopy(forest_ckpt)
    change(ckpt["forest"])
    refused(tmp_path, ckpt, match)


def test_two_stage_forest_loads_and_predicts_through_its_first_stage(tmp_path, two_stage_ckpt):
    from napari_bioanomaly.ml.features import forest_features, probability_features

    path = tmp_path / "two.pt"
    torch.save(two_stage_ckpt, path)
    forest = Predictor.load(path, "cpu").extra["forest"]
    assert forest.first is not None and forest.first.first is None
    image = np.random.default_rng(2).random((24, 24), dtype=np.float32)
    feats = forest_features(image, "filters")
    first = 1 - forest.first.predict_features(feats.reshape(-1, 20))[:, 0].reshape(24, 24)
    both = np.concatenate([feats, probability_features(first)], axis=-1)
    expected = forest.predict_features(both.reshape(-1, 28)).T.reshape(3, 24, 24)
    np.testing.assert_allclose(forest.probabilities(image), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda f: f["first"]["left"].__setitem__((0, 0), 10**6),
            r"forest\.first tree 0 node 0: children 1000000",
        ),
        (lambda f: f["first"].pop("threshold"), r"forest\.first\.threshold: not a tensor"),
        (
            lambda f: f["first"].__setitem__("first", copy.deepcopy(f["first"])),
            r"a first stage cannot have a first stage",
        ),
        (
            lambda f: f.__setitem__("n_features", 20),
            r"forest\.n_features: 20, but the filters features and the first stage's "
            r"probabilities give 28",
        ),
        (lambda f: f.__setitem__("first", "trees"), r"forest\.first: not a mapping"),
        (
            lambda f: f.update(feature_set="context", n_features=31),
            r"forest\.first\.feature_set: filters, but the second stage describes pixels by context",
        ),
    ],
)
def test_malformed_two_stage_forests_are_refused_by_item(tmp_path, two_stage_ckpt, change, match):
    ckpt = copy.deepcopy(two_stage_ckpt)
    change(ckpt["forest"])
    refused(tmp_path, ckpt, match)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda c: c["config"].__setitem__("base_channels", 10**9),
            r"base_channels must be at most",
        ),
        (lambda c: c["config"].__setitem__("tile", "256"), r"tile must be a whole number"),
        (lambda c: c["config"].__setitem__("lr", float("inf")), r"lr must be a finite number"),
        (lambda c: c.__setitem__("config", [1]), r"config: not a mapping"),
        (lambda c: c.__setitem__("classes", "dust"), r"classes: a list"),
        (lambda c: c.__setitem__("classes", ["dust", "dust"]), r"classes: names repeat"),
        (lambda c: c.__setitem__("classes", ["dust", 3]), r"classes\[1\]: not a class name"),
        (lambda c: c.__setitem__("best_f1", float("nan")), r"best_f1"),
        (
            lambda c: c.__setitem__("operating_point", {"threshold": 2, "min_area": 0}),
            r"operating_point: operating threshold",
        ),
        (
            lambda c: c.__setitem__("operating_point_tta", {"threshold": 0.5, "min_area": -1}),
            r"operating_point_tta: operating min_area must be >= 0",
        ),
        (
            lambda c: c.__setitem__("operating_point_tta", [0.5]),
            r"operating_point_tta: operating point must be a mapping",
        ),
        (
            lambda c: c["state_dict"].__setitem__("extra.weight", torch.zeros(3)),
            r"weights do not fit the network",
        ),
        (
            lambda c: next(v for v in c["state_dict"].values() if v.is_floating_point()).fill_(
                float("nan")
            ),
            r"NaN or infinite weights",
        ),
    ],
)
def test_malformed_networks_are_refused_by_item(tmp_path, unet_ckpt, change, match):
    ckpt = copy.deepcopy(unet_ckpt)
    change(ckpt)
    refused(tmp_path, ckpt, match)


def test_malformed_memory_banks_are_refused(tmp_path):
    scoring = {"center": 0.1, "threshold": 0.5, "image_center": 0.2, "image_threshold": 0.6,
               "mean": [0.0] * 20, "std": [1.0] * 20, "bank": torch.zeros(8, 20)}  # fmt: skip
    ok = checkpoint("memory", scoring=scoring, classes=["anomaly"])
    torch.save(ok, tmp_path / "ok.pt")
    assert Predictor.load(tmp_path / "ok.pt", "cpu").kind == "memory"
    for key, value, match in (
        ("bank", torch.zeros(8, 19), r"scoring\.bank: shape"),
        ("std", [0.0] * 20, r"scoring\.std"),
        ("mean", [float("nan")] * 20, r"scoring\.mean"),
        ("threshold", "high", r"scoring\.threshold: not a finite number"),
        ("sharpen", "yes", r"scoring\.sharpen: true or false"),
        ("image_top", 0.0, r"scoring\.image_top: a share of pixels"),
        ("image_top", float("nan"), r"scoring\.image_top: a share of pixels"),
        ("sharpen", True, r"scoring\.contrast_center, contrast_threshold"),  # no calibration
        ("lines", 1, r"scoring\.lines: true or false, not 1"),
        ("lines", True, r"scoring\.line_center, line_threshold \(the calibration of the line"),
        ("line_window", 0, r"scoring\.line_window: a window of 3 to 1025 px, not 0"),
        ("line_window", True, r"scoring\.line_window: a window of 3 to 1025 px, not True"),
        ("line_window", 61.5, r"scoring\.line_window: a window of 3 to 1025 px, not 61\.5"),
        ("line_join", "max", r"scoring\.line_join: one of mean, rms, not 'max'"),
        ("image_from", "pixels", r"scoring\.image_from: one of bank, map, not 'pixels'"),
    ):
        bad = copy.deepcopy(ok)
        bad["scoring"][key] = value
        refused(tmp_path, bad, match)
    sharpened = copy.deepcopy(ok)
    sharpened["scoring"].update(sharpen=True, contrast_center=0.02, contrast_threshold=0.2)
    torch.save(sharpened, tmp_path / "sharp.pt")
    assert Predictor.load(tmp_path / "sharp.pt", "cpu").extra["scoring"]["sharpen"] is True
    for center, threshold in ((0.3, 0.2), (float("nan"), 0.2), (0.02, float("inf"))):
        bad = copy.deepcopy(sharpened)
        bad["scoring"].update(contrast_center=center, contrast_threshold=threshold)
        refused(tmp_path, bad, r"scoring\.contrast_center, contrast_threshold")
    lined = copy.deepcopy(ok)
    lined["scoring"].update(lines=True, line_center=0.01, line_threshold=0.02,
                            line_image_center=0.03, line_image_threshold=0.05)  # fmt: skip
    torch.save(lined, tmp_path / "lined.pt")
    heat, score = predict_image(Predictor.load(tmp_path / "lined.pt", "cpu"),
                                np.zeros((40, 56), np.uint8))  # fmt: skip
    assert heat.shape == (2, 40, 56) and 0 < score < 1
    for key, value in (("line_image_center", 0.06), ("line_threshold", float("nan")),
                       ("line_center", -1.0)):  # fmt: skip
        bad = copy.deepcopy(lined)
        bad["scoring"][key] = value
        refused(tmp_path, bad, r"scoring\.line_(image_)?center, line_(image_)?threshold")


def test_checkpoints_of_the_removed_autoencoder_are_refused_saying_why(tmp_path, capsys):
    """An autoencoder trained by an earlier version is refused naming the file, why the
    model went, and what to train instead; so is asking to train one."""
    config = {**TrainConfig(model="memory").to_dict(), "model": "autoencoder"}
    old = {**checkpoint("memory"), "config": config, "classes": ["anomaly"],
           "state_dict": {"stem.0.weight": torch.zeros(16, 1, 3, 3)},
           "scoring": {"center": 0.1, "threshold": 0.5, "image_center": 0.2,
                       "image_threshold": 0.6}}  # fmt: skip
    refused(tmp_path, old, r"autoencoder was removed .*train model memory")
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", np.zeros((32, 32), np.uint8))
    assert main(["predict", "--model", str(tmp_path / "hostile.pt"), "--images", str(images),
                 "--out", str(tmp_path / "p.json")]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "hostile.pt" in err and "autoencoder was removed" in err
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(SystemExit):
        main(["train", "--annotations", str(tmp_path / "a.json"), "--out",
              str(tmp_path / "m.pt"), "--model", "autoencoder"])  # fmt: skip
    assert "autoencoder was removed" in capsys.readouterr().err
    with pytest.raises(BioAnomalyError, match="autoencoder was removed"):
        TrainConfig(model="autoencoder")


def test_memory_banks_of_learnt_descriptors_need_their_network(tmp_path):
    """A bank of learnt descriptors predicts through its encoder; without it, with one of
    another width, or with an unknown kind of descriptor, the file is refused by item."""
    from napari_bioanomaly.ml.descriptors import PatchEncoder, descriptor_dims

    dims = descriptor_dims(4)
    config = TrainConfig(model="memory", base_channels=4).to_dict()
    scoring = {"center": 0.1, "threshold": 0.5, "image_center": 0.2, "image_threshold": 0.6,
               "mean": [0.0] * dims, "std": [1.0] * dims, "bank": torch.zeros(8, dims),
               "descriptors": "learned"}  # fmt: skip
    ok = {**checkpoint("memory", scoring=scoring, classes=["anomaly"]), "config": config,
          "state_dict": PatchEncoder(4).state_dict()}  # fmt: skip
    torch.save(ok, tmp_path / "ok.pt")
    predictor = Predictor.load(tmp_path / "ok.pt", "cpu")
    assert isinstance(predictor.model, PatchEncoder)
    heat, score = predict_image(predictor, np.zeros((40, 56), np.uint8))
    assert heat.shape == (2, 40, 56) and 0 < score < 1

    no_net = copy.deepcopy(ok)
    del no_net["state_dict"]
    refused(tmp_path, no_net, "learned descriptors without its network")
    wider = copy.deepcopy(ok)
    wider["state_dict"] = PatchEncoder(8).state_dict()
    refused(tmp_path, wider, "weights do not fit the network")
    narrow = copy.deepcopy(ok)
    narrow["scoring"].update(mean=[0.0] * 20, std=[1.0] * 20, bank=torch.zeros(8, 20))
    refused(tmp_path, narrow, r"scoring\.bank: descriptors of 20 values, the network of width 4")
    unknown = copy.deepcopy(ok)
    unknown["scoring"]["descriptors"] = "imagenet"
    refused(tmp_path, unknown, r"scoring\.descriptors: one of filters, random, learned")


def test_memory_banks_of_random_encoders_need_them_all(tmp_path):
    """A bank of random-weight encoders' descriptors holds the encoders and their count;
    a count that is missing, absurd or does not match the bank's width is refused."""
    from napari_bioanomaly.ml.descriptors import EncoderEnsemble, descriptor_dims

    dims = 3 * descriptor_dims(4)
    config = TrainConfig(model="memory", base_channels=4).to_dict()
    scoring = {"center": 0.1, "threshold": 0.5, "image_center": 0.2, "image_threshold": 0.6,
               "mean": [0.0] * dims, "std": [1.0] * dims, "bank": torch.zeros(8, dims),
               "descriptors": "random", "encoders": 3}  # fmt: skip
    ok = {**checkpoint("memory", scoring=scoring, classes=["anomaly"]), "config": config,
          "state_dict": EncoderEnsemble(4, 3).state_dict()}  # fmt: skip
    torch.save(ok, tmp_path / "ok.pt")
    predictor = Predictor.load(tmp_path / "ok.pt", "cpu")
    assert isinstance(predictor.model, EncoderEnsemble) and len(predictor.model.members) == 3
    heat, score = predict_image(predictor, np.zeros((40, 56), np.uint8))
    assert heat.shape == (2, 40, 56) and 0 < score < 1

    for count, match in ((None, "scoring.encoders: a count of 1 to 64 encoders, not None"),
                         (True, "not True"), (10**9, "not 1000000000"),
                         (2, r"scoring\.bank: descriptors of 72 values, the network of "
                             "width 4 makes 48")):  # fmt: skip
        bad = copy.deepcopy(ok)
        bad["scoring"]["encoders"] = count
        refused(tmp_path, bad, match)
    fewer = copy.deepcopy(ok)
    fewer["state_dict"] = EncoderEnsemble(4, 2).state_dict()
    refused(tmp_path, fewer, "weights do not fit the network")
    no_net = copy.deepcopy(ok)
    del no_net["state_dict"]
    refused(tmp_path, no_net, "random descriptors without its network")


def test_predict_cli_names_the_checkpoint_and_item(tmp_path, forest_ckpt, capsys):
    ckpt = copy.deepcopy(forest_ckpt)
    ckpt["forest"]["left"][0, 0] = 0  # a cycle
    path = tmp_path / "cyclic.pt"
    torch.save(ckpt, path)
    images = tmp_path / "images"
    images.mkdir()
    from skimage.io import imsave

    imsave(images / "a.png", np.zeros((32, 32), np.uint8), check_contrast=False)
    code = main(["predict", "--model", str(path), "--images", str(images),
                 "--out", str(tmp_path / "p.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "cyclic.pt" in err and "tree 0 node 0" in err
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(BioAnomalyError, match=r"cyclic\.pt: cannot be used"):
        load_checkpoint(path)


def test_refused_checkpoints_say_so_in_one_line_without_unsafe_advice(tmp_path):
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "x", "call": copy.deepcopy}))  # a pickled function
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    text_file = tmp_path / "notes.pt"  # a text renamed: not a pickle of anything
    text_file.write_text('{"_via_img_metadata": {}}')
    for path, expected in ((evil, "refused: it holds objects other than tensors"),
                           (broken, "not a readable checkpoint"),
                           (text_file, "notes.pt: not a model file (PyTorch writes a zip")):  # fmt: skip
        with pytest.raises(BioAnomalyError) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert expected in text and "\n" not in text and "\x1b" not in text
        assert "weights_only" not in text


def test_a_model_that_cannot_be_written_is_named_not_its_temporary_file(tmp_path, monkeypatch):
    """A read-only folder failed the save with the hidden temporary file's name
    (``.bioanomaly-forest.pt.6igjfuk4.tmp``), as an unexpected error."""
    from napari_bioanomaly.ml import checkpoint

    def refused(path, raw, backup=True):
        raise PermissionError(13, "Permission denied", str(path.parent / f".{path.name}.x.tmp"))

    monkeypatch.setattr(checkpoint, "atomic_write", refused)
    model = tmp_path / "bioanomaly-forest.pt"
    with pytest.raises(BioAnomalyError) as info:
        checkpoint.save_checkpoint(model, {"format": 1})
    assert str(info.value) == f"cannot write the model {model}: Permission denied"
    # as atomic_write raises it: the model named once, with why and what it means
    from napari_bioanomaly.core.fileio import write_error

    def full(path, raw, backup=True):
        raise write_error(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    with pytest.raises(BioAnomalyError) as info:
        checkpoint.save_checkpoint(model, {"format": 1})
    assert str(info.value) == (
        f"{model}: cannot be written (No space left on device; the disk is full)"
    )
