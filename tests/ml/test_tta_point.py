"""The operating point for test-time augmentation: chosen on averaged validation maps by
training (when asked, or cheap) and by ``choose-point --tta``, stored in the checkpoint,
and used by ``predict --tta``, ensembles and the Review widget's flips-and-rotations
choice; by default (``auto``) where it gained on the model's validation images."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.operating import OperatingPoint
from napari_bioanomaly.core.text import counted
from napari_bioanomaly.ml.checkpoint import load_checkpoint
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.predict import Ensemble, Predictor, predict_dataset, run
from napari_bioanomaly.ml.train import train
from napari_bioanomaly.ml.validation import tta_point_wanted

TINY = TrainConfig(epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_dir):
    """A tiny U-Net trained with ``tta_point yes``, and its training result."""
    out = tmp_path_factory.mktemp("tta") / "m.pt"
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    result = run(train(dataset, TINY.replace(tta_point="yes"), out))
    return out, result


def test_auto_chooses_the_tta_point_when_it_costs_a_tenth_of_the_training_at_most():
    # 8 passes of 1 s against 100 s of training: 8 <= 10
    assert tta_point_wanted("auto", 1.0, 100.0)
    assert not tta_point_wanted("auto", 1.0, 50.0)
    assert tta_point_wanted("yes", 100.0, 1.0) and not tta_point_wanted("no", 0.0, 100.0)
    with pytest.raises(Exception, match=r"tta_point must be one of auto, yes, no"):
        TrainConfig(tta_point="always")


def test_training_stores_a_point_chosen_on_averaged_maps_beside_the_plain_one(
    trained, sample_dir, tmp_path
):
    path, result = trained
    ckpt = load_checkpoint(path)
    assert ckpt["operating_point"]["source"] == "validation"
    tta = OperatingPoint.from_dict(ckpt["operating_point_tta"])
    assert tta.source == "validation" and tta.f1 is not None
    assert result.tta_point == tta  # what the Train widget and the CLI report
    predictor = Predictor.load(path, "cpu")
    assert predictor.tta_point == tta
    assert predictor.point(tta=True) == tta
    assert predictor.point() == predictor.operating_point == result.operating_point
    # chosen under the plain point's criterion; on the sample's few validation regions it
    # is the plain point (see chooser.choose_against), with its F1s on the averaged maps
    assert tta.criterion == predictor.operating_point.criterion
    assert tta.describe(scores=False) == predictor.operating_point.describe(scores=False)
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    plain = tmp_path / "plain.pt"
    run(train(dataset, TINY.replace(tta_point="no"), plain))
    assert "operating_point_tta" not in load_checkpoint(plain)
    assert Predictor.load(plain, "cpu").lacks_tta_point(True)


def test_choose_point_finds_the_training_s_validation_images_again(
    trained, sample_dir, tmp_path, capsys
):
    """``choose-point --tta`` on the model's own annotation file picks the validation
    images of its run again (settings and seed), so it chooses what training chose; the
    model file is rewritten with the previous one kept as .bak."""
    path, _ = trained
    model = tmp_path / "m.pt"
    shutil.copy(path, model)
    ckpt = load_checkpoint(model)
    del ckpt["operating_point_tta"]
    torch.save(ckpt, model)
    before = model.read_bytes()
    assert Predictor.load(model, "cpu").tta_point is None
    ann = str(sample_dir / "annotations.json")
    assert main(["choose-point", str(model), "--annotations", ann, "--tta", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "operating point for test-time augmentation chosen on" in out and "before: none" in out
    # the sample's validation images hold under 20 regions: too few to choose a second point
    assert "(the plain one: no other beats it on the averaged maps" in out
    assert "predict does not use --tta by default: validation score " in out
    # the plain point (training's, on the same images) kept its scores: not measured again
    assert load_checkpoint(model)["operating_point"] == ckpt["operating_point"]
    assert "(it needs a gain of 0.01 or more, on 20 regions or more)" in out
    assert (tmp_path / "m.pt.bak").read_bytes() == before
    again = load_checkpoint(model)
    assert again["operating_point_tta"] == load_checkpoint(path)["operating_point_tta"]
    assert again["operating_point"] == load_checkpoint(path)["operating_point"]  # kept
    # --on all: the plain point chosen on every annotated image, into another file
    other, kept = tmp_path / "all.pt", model.read_bytes()
    assert main(["choose-point", str(model), "--annotations", ann, "--on", "all", "--out",
                 str(other), "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    annotated = sum(1 for im in annotations.load(ann)[0].images if im.regions)
    assert f"operating point chosen on {counted(annotated, 'image')}" in out
    assert f"written to {other}" in out and model.read_bytes() == kept
    # the point for TTA was judged against the old plain point: it goes with it
    assert "is dropped: choose it again with --tta" in out
    assert "operating_point_tta" not in load_checkpoint(other)
    assert Predictor.load(other, "cpu").lacks_tta_point(True)


def test_choose_point_for_tta_chooses_the_plain_point_on_the_same_images(
    trained, sample_dir, tmp_path, capsys
):
    """Whether TTA pays compares both points chosen on the same images: a plain point
    without a count of regions (from before) is chosen again on the run's validation
    images (as training chose it: the same point), and with --on all both are chosen on
    every annotated image."""
    from napari_bioanomaly.ml.points import choose_point

    path, _ = trained
    model = tmp_path / "m.pt"
    ckpt = load_checkpoint(path)
    plain = OperatingPoint.from_dict(ckpt["operating_point"])
    ckpt["operating_point"] = replace(plain, regions=None).to_dict()
    torch.save(ckpt, model)
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    steps = []
    change = choose_point(model, dataset, tta=True, device="cpu",
                          progress=lambda *step: steps.append(step))  # fmt: skip
    again = OperatingPoint.from_dict(load_checkpoint(model)["operating_point"])
    assert again == change.plain == plain  # training's point, with its count of regions
    assert again.regions == change.after.regions > 0
    assert len(steps) == 2 * change.images  # plain maps, then averaged ones
    assert change.plain_before == replace(plain, regions=None)
    ann = str(sample_dir / "annotations.json")
    argv = ["choose-point", str(model), "--annotations", ann, "--tta", "--on", "all",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert (
        "plain operating point chosen again on the same images, so that the two compare"
        in capsys.readouterr().out
    )
    saved = load_checkpoint(model)
    both = [OperatingPoint.from_dict(saved[k]) for k in ("operating_point", "operating_point_tta")]
    assert both[0].regions == both[1].regions > plain.regions


def test_choose_point_refuses_what_it_cannot_do(sample_dir, tmp_path, capsys):
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    forest = tmp_path / "f.pt"
    run(train(dataset, TINY.replace(model="forest"), forest))
    ann = str(sample_dir / "annotations.json")
    assert main(["choose-point", str(forest), "--annotations", ann, "--tta"]) == 2
    err = capsys.readouterr().err
    assert "a forest model; test-time augmentation applies to unet, maskrcnn only" in err
    assert not (tmp_path / "f.pt.bak").exists()
    bare = json.loads((sample_dir / "annotations.json").read_text())
    for entry in bare["_via_img_metadata"].values():
        entry["regions"] = []
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    argv = ["choose-point", str(forest), "--annotations", str(tmp_path / "bare.json"),
            "--images", str(sample_dir), "--on", "all"]  # fmt: skip
    assert main(argv) == 2
    assert "no annotated image among the dataset: nothing to choose on" in capsys.readouterr().err
    other = json.loads((sample_dir / "annotations.json").read_text())  # another study's classes
    for entry in other["_via_img_metadata"].values():
        for region in entry["regions"]:
            region["region_attributes"] = {"class": "mitotic cell"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    argv = ["choose-point", str(forest), "--annotations", str(tmp_path / "other.json"),
            "--images", str(sample_dir), "--on", "all"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a region of the model's classes" in err and "theirs: mitotic cell" in err
    assert not (tmp_path / "f.pt.bak").exists()  # the model is left as it was
    assert main(["choose-point", str(tmp_path / "missing.pt"), "--annotations", ann]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err


def test_predict_with_tta_cuts_at_the_tta_point(trained, sample_dir, tmp_path, capsys):
    """A TTA point that keeps nothing: predict --tta finds no region, plain predict does,
    and a model without a TTA point says it falls back on its plain point."""
    path, _ = trained
    model = tmp_path / "m.pt"
    ckpt = load_checkpoint(path)
    ckpt["operating_point"] = OperatingPoint(0.05, 0.0, source="validation").to_dict()
    ckpt["operating_point_tta"] = OperatingPoint(0.999, 1e9, source="validation").to_dict()
    torch.save(ckpt, model)
    predictor = Predictor.load(model, "cpu")
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    with_tta = run(predict_dataset(predictor, dataset, tta=True))
    assert sum(len(im.regions) for im in with_tta.images) == 0
    plain = run(predict_dataset(predictor, dataset))
    assert sum(len(im.regions) for im in plain.images) > 0
    out = tmp_path / "pred.json"
    argv = ["predict", "--model", str(model), "--images", str(sample_dir), "--out", str(out),
            "--tta", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "threshold 0.999, min area 1e+09 px (the model's, chosen on validation on averaged "
        "maps, for test-time augmentation)" in err
    )
    # a user's threshold overrides it, as it does the plain point
    user = tmp_path / "user.json"
    assert main([*argv, "--threshold", "0.05", "--min-area", "0", "--out", str(user)]) == 0
    assert sum(len(im.regions) for im in annotations.load(user)[0].images) > 0
    capsys.readouterr()
    del ckpt["operating_point_tta"]
    torch.save(ckpt, model)
    assert main(argv) == 0
    assert (
        "--tta: no operating point chosen on averaged maps in the model, so the plain one "
        "is used" in capsys.readouterr().err
    )


def test_points_for_tta_apply_to_networks_and_average_in_an_ensemble():
    plain, tta = OperatingPoint(0.4, 16.0), OperatingPoint(0.2, 64.0)
    cpu = torch.device("cpu")
    forest = Predictor(None, "forest", ["dust"], TrainConfig(model="forest"), cpu,
                       operating_point=plain, tta_point=tta)  # fmt: skip
    assert forest.point(tta=True) == plain and not forest.lacks_tta_point(True)
    unet = Predictor(None, "unet", ["dust"], TrainConfig(), cpu, operating_point=plain,
                     tta_point=tta)  # fmt: skip
    bare = Predictor(None, "unet", ["dust"], TrainConfig(), cpu, operating_point=plain)
    assert unet.point(tta=True) == tta and unet.point() == plain
    assert bare.point(tta=True) == plain and bare.lacks_tta_point(True)
    assert not bare.lacks_tta_point(False)
    ens = Ensemble([unet, bare])
    assert ens.point(tta=True).threshold == pytest.approx(0.3)
    assert ens.point(tta=True).min_area == pytest.approx(40.0)
    assert ens.point().threshold == pytest.approx(0.4) == ens.operating_point.threshold
    assert ens.lacks_tta_point(True) and not Ensemble([unet, unet]).lacks_tta_point(True)


def _scored(f1: float, regions: int | None = 40, **kw) -> OperatingPoint:
    """A validation point whose mean score is ``f1`` (instance and pixel F1 both ``f1``)."""
    return OperatingPoint(kw.pop("threshold", 0.4), 16.0, f1, f1, "validation",
                          regions=regions, **kw)  # fmt: skip


def test_tta_is_used_by_default_only_where_it_paid_on_enough_validation_regions():
    from napari_bioanomaly.core.chooser import TTA_GAIN, tta_pays

    plain = _scored(0.70)
    assert tta_pays(plain, _scored(0.70 + TTA_GAIN, threshold=0.2))
    assert not tta_pays(_scored(0.70, regions=None), _scored(0.72))  # scored on which images?
    assert not tta_pays(plain, _scored(0.705))  # under the gain
    assert not tta_pays(plain, _scored(0.7094))  # shown as 0.709 against 0.700
    assert tta_pays(plain, _scored(0.7096))  # shown as 0.710 against 0.700: as said
    assert not tta_pays(plain, _scored(0.80, regions=19))  # too few validation regions
    assert not tta_pays(plain, _scored(0.80, regions=None))  # chosen before regions were kept
    assert not tta_pays(plain, _scored(0.80, regions=41))  # other images than the plain point's
    assert not tta_pays(plain, None)
    assert not tta_pays(plain, _scored(0.80, criterion="pixel"))
    assert not tta_pays(plain, _scored(0.80).overridden(threshold=0.3))  # typed in
    assert not tta_pays(OperatingPoint(0.4, 16.0, source="validation"), _scored(0.80))


def test_predictors_and_ensembles_say_whether_they_use_tta_by_default():
    from napari_bioanomaly.ml.predict import tta_note, use_tta

    cpu = torch.device("cpu")
    plain, tta = _scored(0.65), _scored(0.67, threshold=0.2)

    def unet(t):
        return Predictor(None, "unet", ["dust"], TrainConfig(), cpu, operating_point=plain,
                         tta_point=t)  # fmt: skip

    forest = Predictor(None, "forest", ["dust"], TrainConfig(model="forest"), cpu,
                       operating_point=plain, tta_point=tta)  # fmt: skip
    gains, bare = unet(tta), unet(None)
    assert gains.tta_by_default and not bare.tta_by_default and not forest.tta_by_default
    assert use_tta(gains, "auto") and not use_tta(gains, "no") and use_tta(bare, "yes")
    assert not use_tta(bare, "auto")
    assert tta_note(gains, "auto") == (
        "test-time augmentation on, as the model chose (validation score 0.670 with flips and "
        "rotations against 0.650 without, on 40 regions: at least 0.01 better; 8x the "
        "prediction time)"
    )
    assert tta_note(bare, "auto") == tta_note(gains, "yes") == ""
    assert Ensemble([gains, forest]).tta_by_default  # the forest ignores TTA
    assert not Ensemble([gains, bare]).tta_by_default
    assert not Ensemble([forest, forest]).tta_by_default
    with pytest.raises(Exception, match=r"test-time augmentation: 'maybe' is not one of auto"):
        use_tta(gains, "maybe")


def test_predict_uses_tta_by_default_where_the_model_gained_by_it(
    trained, sample_dir, tmp_path, capsys
):
    """predict (no --tta) predicts with TTA and cuts at its point where the checkpoint's
    validation scores show a gain; --tta no and a model without the gain do not."""
    path, _ = trained
    model = tmp_path / "m.pt"
    ckpt = load_checkpoint(path)
    ckpt["operating_point"] = _scored(0.60, threshold=0.05, min_peak=None).to_dict()
    ckpt["operating_point_tta"] = replace(_scored(0.62), threshold=0.999, min_area=1e9).to_dict()
    torch.save(ckpt, model)
    out = tmp_path / "pred.json"
    argv = ["predict", "--model", str(model), "--images", str(sample_dir), "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "test-time augmentation on, as the model chose (validation score 0.620" in err
    assert "--tta no predicts without" in err
    assert sum(len(im.regions) for im in annotations.load(out)[0].images) == 0
    assert main([*argv, "--tta", "no"]) == 0
    assert "test-time augmentation on" not in capsys.readouterr().err
    assert sum(len(im.regions) for im in annotations.load(out)[0].images) > 0
    ckpt["operating_point_tta"] = replace(_scored(0.605), threshold=0.999, min_area=1e9).to_dict()
    torch.save(ckpt, model)
    assert main(argv) == 0  # a gain under 0.01: without TTA
    assert "test-time augmentation on" not in capsys.readouterr().err
    assert sum(len(im.regions) for im in annotations.load(out)[0].images) > 0
    with pytest.raises(SystemExit):
        main([*argv, "--tta", "sometimes"])


def test_train_s_last_line_says_when_predict_will_use_tta(
    sample_dir, tmp_path, monkeypatch, capsys
):
    from napari_bioanomaly.ml import train as train_module
    from napari_bioanomaly.ml.events import TrainResult

    model = tmp_path / "m.pt"
    plain, tta = _scored(0.60), _scored(0.65, threshold=0.2)

    def trained(dataset, config, out, resume=None, cancel=None):
        yield from ()
        return TrainResult(model, model, best_f1=0.6, operating_point=plain, tta_point=tta)

    monkeypatch.setattr(train_module, "train", trained)
    argv = ["train", "--annotations", str(sample_dir / "annotations.json"), "--out", str(model)]
    assert main(argv) == 0
    assert (
        "predict uses --tta by default (validation score 0.650 with flips and rotations "
        "against 0.600 without, on 40 regions)" in capsys.readouterr().out
    )
    tta = _scored(0.605, threshold=0.2)
    assert main(argv) == 0
    assert "by default" not in capsys.readouterr().out
