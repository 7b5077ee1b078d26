"""Class imbalance (rare-class oversampling, class weights), QC exclusion, cross-validation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations, history
from napari_bioanomaly.core.evaluate import evaluate
from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord, Region
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import crossval as cv
from napari_bioanomaly.ml import data
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.predict import predict_dataset, run
from napari_bioanomaly.ml.train import load_checkpoint, train

from .test_train import TINY, drain


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nine")
    write_sample(folder, SampleConfig(n_images=9, size=128, seed=2))
    return folder


def square(r, c, size, label):
    poly = np.array([[r, c], [r, c + size], [r + size, c + size], [r + size, c]], float)
    return Region(poly, label, shape="polygon")


def test_balanced_weights_by_hand():
    # counts 900, 90, 10: w ~ sqrt(1000 / (3 * n)) = 0.609, 1.925, 5.774; mean 2.769
    w = data.balanced_weights(np.array([900, 90, 10]))
    np.testing.assert_allclose(w, [0.2199, 0.6952, 2.0849], atol=1e-3)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(data.balanced_weights(np.array([5, 0, 5])), [1, 1, 1])


def test_unet_loss_gives_a_small_class_the_weight_of_a_large_one():
    """Calling a small class's pixels by a large class's name costs as much as a
    missing class (per-class Dice), not the pixel share (1.6%) cross-entropy gives it."""
    import torch
    import torch.nn.functional as F

    from napari_bioanomaly.ml.models import soft_dice, unet_loss

    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, :20, :20] = 1  # 400 px of a large class
    target[0, 25:29, 25:29] = 2  # 16 px of a small one
    right = torch.full((1, 3, 32, 32), -5.0)
    right[:, 0] = 5.0
    for c in (1, 2):
        right[:, c][target == c] = 10.0
    wrong = right.clone()
    wrong[:, 1][target == 2] = 10.0  # the small class called the large one
    wrong[:, 2][target == 2] = -5.0
    ce_gap = float(F.cross_entropy(wrong, target) - F.cross_entropy(right, target))
    gap = float(unet_loss(wrong, target) - unet_loss(right, target))
    assert ce_gap < 0.25  # cross-entropy alone barely notices
    assert gap > ce_gap + 0.2  # the small class's Dice (weight 1/4) is lost
    # one anomaly class: the loss is cross-entropy + BCE + Dice of "any anomaly"
    binary = target.clamp(max=1)
    logits = right[:, :2]
    fg_logit = logits[:, 1] - logits[:, 0]
    expected = (
        F.cross_entropy(logits, binary)
        + F.binary_cross_entropy_with_logits(fg_logit, binary.float())
        + soft_dice(torch.sigmoid(fg_logit), binary.float())
    )
    assert torch.isclose(unet_loss(logits, binary), expected)


def test_unet_loss_per_class_dice_is_the_mean_over_the_classes_present():
    """The masked mean (no host-side test per class) equals the mean over the classes
    that the batch holds, in value and gradient, also when some or all are absent."""
    import torch
    import torch.nn.functional as F

    from napari_bioanomaly.ml.models import soft_dice, unet_loss

    def by_list(logits, classes):  # the plain formulation: a test per class
        fg_logit = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
        fg = (classes > 0).float()
        dice = soft_dice(torch.sigmoid(fg_logit), fg)
        prob = torch.softmax(logits, dim=1)
        present = [c for c in range(1, logits.shape[1]) if bool((classes == c).any())]
        if present:
            per = torch.stack([soft_dice(prob[:, c], (classes == c).float()) for c in present])
            dice = 0.5 * dice + 0.5 * per.mean()
        return (
            F.cross_entropy(logits, classes)
            + F.binary_cross_entropy_with_logits(fg_logit, fg)
            + dice
        )

    gen = torch.Generator().manual_seed(0)
    for absent in ([], [2], [1, 3], [1, 2, 3]):
        logits = torch.randn(2, 4, 16, 16, generator=gen)
        classes = torch.randint(0, 4, (2, 16, 16), generator=gen)
        for c in absent:
            classes[classes == c] = 0
        ours, plain = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        a, b = unet_loss(ours, classes), by_list(plain, classes)
        a.backward()
        b.backward()
        assert torch.isclose(a, b), absent
        assert torch.allclose(ours.grad, plain.grad, atol=1e-7), absent


def test_pixel_counts_use_polygon_areas():
    im = ImageRecord(
        "a.tif", (100, 100), regions=[square(0, 0, 10, "dust"), square(50, 50, 20, "hair")]
    )
    counts = data.pixel_counts(Dataset(images=[im]), [0], ["dust", "hair"])
    np.testing.assert_allclose(counts, [10000 - 100 - 400, 100, 400])


def test_class_balance_oversamples_the_rare_class(tmp_path):
    # 19 dust regions, 1 hair region: without balance hair tiles are ~5% of anomaly tiles
    images = [
        ImageRecord(f"i{k}.tif", (128, 128), regions=[square(40, 40, 20, "dust")])
        for k in range(19)
    ]
    images.append(ImageRecord("h.tif", (128, 128), regions=[square(40, 40, 20, "hair")]))
    for im in images:
        tifffile.imwrite(tmp_path / im.filename, np.zeros((128, 128), np.uint16))
    ds = Dataset(images=images, root=tmp_path)
    classes = ["dust", "hair"]

    def hair_share(balance):
        config = TINY.replace(anomaly_fraction=1.0, class_balance=balance, augment=False)
        sampler = data.TileSampler(ds, list(range(20)), classes, config)
        rng = np.random.default_rng(0)
        tiles = [sampler.sample(rng)[1] for _ in range(400)]
        return np.mean([(t == 2).any() for t in tiles])

    assert hair_share(False) < 0.12
    assert 0.4 < hair_share(True) < 0.6


def test_unet_class_weights_are_used_and_recorded(nine, tmp_path):
    ds, _ = annotations.load(nine / "annotations.json")
    config = TINY.replace(epochs=1, steps_per_epoch=1, class_weights="balanced")
    _, result = drain(train(ds, config, tmp_path / "m.pt"))
    ckpt = load_checkpoint(result.last)
    weights = ckpt["class_weights"]
    assert len(weights) == len(ckpt["classes"]) + 1 and weights[0] == min(weights)
    assert load_checkpoint(result.last)["config"]["class_weights"] == "balanced"


def test_exclude_qc_leaves_flagged_images_out_with_a_warning(nine, tmp_path):
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(nine, folder)
    ds, _ = annotations.load(folder / "annotations.json")
    victim = next(im for im in ds.images if im.regions)
    tifffile.imwrite(folder / victim.filename, np.full((128, 128), 7, np.uint16))  # uniform
    config = TINY.replace(epochs=1, steps_per_epoch=1, val_fraction=0.0, exclude_qc=True)
    events, _ = drain(train(ds, config, tmp_path / "m.pt"))
    warnings = [e.message for e in events if e.kind == "warning"]
    assert warnings and victim.filename in warnings[0] and "uniform" in warnings[0]
    # stored flags are trusted: "ok" keeps an image in, whatever its pixels
    victim.file_attributes["qc"] = "ok"
    kept, dropped = data.quality_filter(ds, list(range(len(ds.images))))
    assert not dropped and len(kept) == len(ds.images)


def test_qc_save_keeps_flags_in_the_annotation_file(nine, tmp_path, capsys):
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(nine, folder)
    tifffile.imwrite(folder / "img_000.tif", np.zeros((128, 128), np.uint16))
    assert main(["qc", str(folder), "--save"]) == 0
    ds, _ = annotations.load(folder / "annotations.json", read_images=False)
    flags = {im.filename: im.file_attributes["qc"] for im in ds.images}
    assert flags["img_000.tif"] == "uniform; dim"
    assert all(v == "ok" for k, v in flags.items() if k != "img_000.tif")
    assert (folder / "annotations.json.bak").exists()  # the previous file is kept
    assert "now a VIA 2 project" not in capsys.readouterr().err  # it was one
    # a VIA 2 export is saved in place as a project (its flags need file attributes): said
    annotations.save(ds, folder / "annotations.json", "via")
    # ... with a point, which the import skips: the rewrite says so, and the file before
    # is kept among its versions (a second run replaces the .bak)
    export = json.loads((folder / "annotations.json").read_text())
    entry = next(iter(export.values()))
    point = {"shape_attributes": {"name": "point", "cx": 5, "cy": 6}, "region_attributes": {}}
    entry["regions"].append(point)
    (folder / "annotations.json").write_text(json.dumps(export))
    before = (folder / "annotations.json").read_bytes()
    assert main(["qc", str(folder), "--save"]) == 0
    err = capsys.readouterr().err
    assert "it was a via2-export file, now a VIA 2 project" in err
    assert "warning: " in err and "point skipped" in err
    assert main(["qc", str(folder), "--save"]) == 0
    assert before in [v.read_bytes() for v in history.versions(folder / "annotations.json")]


def test_grouped_folds_never_split_a_group():
    images = [
        ImageRecord(f"{line}{k}.tif", (8, 8), {"cell_line": line})
        for line, n in (("A", 5), ("B", 3), ("C", 3), ("D", 1), ("E", 2))
        for k in range(n)
    ]
    ds = Dataset(images=images)
    folds = cv.folds(ds, 3, "cell_line")
    assert sorted(i for f in folds for i in f) == list(range(len(images)))
    owners = {}
    for f, members in enumerate(folds):
        for i in members:
            owners.setdefault(images[i].file_attributes["cell_line"], set()).add(f)
    assert all(len(v) == 1 for v in owners.values())
    assert sorted(len(f) for f in folds) == [4, 5, 5]  # largest group first, to the smallest fold
    with pytest.raises(BioAnomalyError, match="cannot fill 6 folds"):
        cv.folds(ds, 6, "cell_line")


def test_stratified_folds_share_anomalous_images():
    images = [
        ImageRecord(f"{k}.tif", (8, 8), regions=[square(1, 1, 2, "dust")] if k < 6 else [])
        for k in range(9)
    ]
    folds = cv.folds(Dataset(images=images), 3)
    assert [sum(1 for i in f if images[i].regions) for f in folds] == [2, 2, 2]


def test_crossval_refuses_a_folder_holding_fold_models_it_would_not_replace(nine, tmp_path, capsys):
    out = tmp_path / "cv"
    out.mkdir()
    (out / "fold0.pt").write_bytes(b"an earlier run's")  # numbered from 0 before
    (out / "fold2.last.pt").write_bytes(b"replaced by this run")
    ann = str(nine / "annotations.json")
    argv = ["crossval", "--annotations", ann, "--out", str(out), "--folds", "2",
            "--model", "forest"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out}: holds fold0.pt of an earlier run" in err and "fold2" not in err
    assert sorted(p.name for p in out.iterdir()) == ["fold0.pt", "fold2.last.pt"]


def test_crossval_trains_on_other_groups_only(nine, tmp_path, monkeypatch, capsys):
    seen = []

    def spy(dataset, config, out, **kwargs):
        seen.append({im.file_attributes["cell_line"] for im in dataset.images})
        return train(dataset, config, out, **kwargs)

    monkeypatch.setattr(cv, "train", spy)
    ann = str(nine / "annotations.json")
    argv = ["crossval", "--annotations", ann, "--out", str(tmp_path / "cv"), "--folds", "3",
            "--group-by", "cell_line", "--model", "forest", "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    # a class found in the test cell line only: that fold's model never sees it, and says so
    ds, _ = annotations.load(nine / "annotations.json", read_images=False)
    every = {r.label for r in ds.regions}
    expected = []
    for f, train_groups in enumerate(seen):
        learnt = {r.label for im in ds.images if im.file_attributes["cell_line"] in train_groups
                  for r in im.regions}  # fmt: skip
        if every - learnt:
            missing = [c for c in ds.class_names() if c in every and c not in learnt]
            expected.append((f + 1, ", ".join(missing)))
    said = re.findall(r"warning: fold (\d) trains without ([^:]*): every region of", err)
    assert expected and [(int(f), c) for f, c in said] == expected
    # and crossval.json keeps it with the fold (the Train widget shows it there)
    without = [(f["fold"] + 1, ", ".join(f["trained_without"])) for f in result["folds"]]
    assert [w for w in without if w[1]] == expected
    assert len(result["folds"]) == 3 and len(seen) == 3
    for fold, train_groups in zip(result["folds"], seen, strict=True):
        assert len(fold["groups"]) == 1
        assert not set(fold["groups"]) & train_groups  # the test cell line was never trained on
    f1 = [f["f1"] for f in result["folds"]]
    assert result["summary"]["f1"]["mean"] == pytest.approx(np.mean(f1))
    assert result["summary"]["f1"]["std"] == pytest.approx(np.std(f1, ddof=1))
    assert (tmp_path / "cv" / "crossval.json").is_file()
    # the models are numbered as the folds are said: "fold 1/3" trains fold1.pt
    assert "fold 1/3: " in err and "fold 3/3: " in err
    assert sorted(p.name for p in (tmp_path / "cv").glob("fold?.pt")) == [
        "fold1.pt",
        "fold2.pt",
        "fold3.pt",
    ]
    assert [f["model"] for f in result["folds"]] == ["fold1.pt", "fold2.pt", "fold3.pt"]
    assert [f["tta"] for f in result["folds"]] == [False] * 3  # flips apply to networks only


def test_crossval_predicts_with_tta_where_the_fold_model_chose_it(nine, tmp_path, monkeypatch):
    """Each fold predicts as predict does by default: with test-time augmentation where
    the fold model's validation showed it pays (Predictor.tta_by_default)."""
    asked = []

    def spy(predictor, dataset, **kwargs):
        asked.append(kwargs.get("tta"))
        return predict_dataset(predictor, dataset, **kwargs)

    monkeypatch.setattr(cv, "predict_dataset", spy)
    monkeypatch.setattr(cv.Predictor, "tta_by_default", property(lambda self: True))
    ds, _ = annotations.load(nine / "annotations.json")
    result = run(cv.crossval(ds, TrainConfig(model="forest"), 2, tmp_path / "cv"))
    assert asked == [True, True] and [f["tta"] for f in result.folds] == [True, True]


def test_per_class_scores_and_class_agreement_by_hand():
    gt = Dataset(images=[ImageRecord("a.tif", (100, 100), regions=[
        square(0, 0, 10, "dust"), square(30, 30, 10, "dust"), square(60, 60, 10, "hair")])])  # fmt: skip
    pred = Dataset(images=[ImageRecord("a.tif", (100, 100), regions=[
        square(0, 0, 10, "dust"), square(30, 30, 10, "hair"), square(60, 60, 10, "hair"),
        square(80, 0, 10, "hair")])])  # fmt: skip
    result = evaluate(gt, pred)
    dust, hair = result.classes["dust"], result.classes["hair"]
    assert (dust["tp"], dust["fp"], dust["fn"]) == (1, 0, 1)
    assert (hair["tp"], hair["fp"], hair["fn"]) == (1, 2, 0)
    assert dust["found"] == 1.0 and hair["found"] == 1.0  # matched by a prediction of any class
    agree = result.class_agreement
    # matched pairs: dust-dust, dust-hair, hair-hair; p_o = 2/3, p_e = (2*1 + 1*2)/9 = 4/9
    assert agree["matrix"] == [[1, 1], [0, 1]]
    assert agree["kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))


def test_image_scores_come_from_the_anomaly_score_attribute():
    gt = Dataset(images=[ImageRecord("a.tif", (10, 10), regions=[square(0, 0, 4, "dust")]),
                         ImageRecord("b.tif", (10, 10))])  # fmt: skip
    pred = Dataset(images=[ImageRecord("a.tif", (10, 10), {"anomaly_score": "0.9"}),
                           ImageRecord("b.tif", (10, 10), {"anomaly_score": 0.2})])  # fmt: skip
    image = evaluate(gt, pred).image_level
    assert image["roc_auc"] == 1.0 and (image["tp"], image["tn"]) == (1, 1)


def test_config_round_trips_the_new_options():
    config = TrainConfig(
        model="forest", class_balance=True, class_weights="balanced", exclude_qc=True
    )
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_images_smaller_than_a_tile_are_centred(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.arange(40 * 40, dtype=np.uint16).reshape(40, 40))
    whole = Region(np.array([[0, 0], [0, 40], [40, 40], [40, 0]], float), "dust", shape="polygon")
    ds = Dataset(images=[ImageRecord("small.tif", (40, 40), regions=[whole])], root=tmp_path)
    config = TINY.replace(augment=False, anomaly_fraction=0.0)
    image, cls, _ = data.TileSampler(ds, [0], ["dust"], config).sample(np.random.default_rng(0))
    rows, cols = np.nonzero(cls)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12, 51, 12, 51)
    assert image[:12].max() == 0 and image[12:52, 12:52].max() > 0.9


def test_forest_class_balance_samples_each_class():
    from napari_bioanomaly.ml.forest import sample_pixels

    cls = np.zeros((64, 64), np.int64)
    cls[:30, :30] = 1  # 900 common-class pixels
    cls[50:53, 50:53] = 2  # 9 rare-class pixels
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    _, y = sample_pixels(image, cls, rng, per_image=100)
    _, y_balanced = sample_pixels(image, cls, rng, per_image=100, per_class=True)
    assert np.bincount(y, minlength=3)[2] < 5  # the rare class drowns in the joint draw
    assert list(np.bincount(y_balanced, minlength=3)) == [100, 100, 9]
    with pytest.raises(BioAnomalyError, match="class balance applies"):
        TrainConfig(model="memory", class_balance=True)


def test_a_crossval_killed_leaves_a_record_that_refuses_the_earlier_run_s_folds(nine, tmp_path):
    """A run killed in fold 2 wrote no record: the earlier run's, which lists fold1-3,
    stayed beside this run's fold1.pt and the earlier fold3.pt, and predict ensembled
    them. The record is written as the run goes: before fold 1, and after each fold."""
    import json

    ds, _ = annotations.load(nine / "annotations.json")
    out = tmp_path / "cv"
    out.mkdir()
    earlier = {"folds": [{"model": f"fold{i}.pt"} for i in (1, 2, 3)], "cancelled": False}
    (out / "crossval.json").write_text(json.dumps(earlier))
    (out / "fold3.pt").write_bytes(b"an earlier run's third fold")
    gen = cv.crossval(ds, TrainConfig(model="forest"), 3, out)
    first = next(gen)
    assert json.loads((out / "crossval.json").read_text())["running"]  # the earlier one gone
    assert first.message.startswith("fold 1/3")
    while next(gen).scores is None:
        pass
    # killed once the first fold is scored (the generator left as it is: nothing runs on)
    saved = json.loads((out / "crossval.json").read_text())
    assert saved["running"] and [f["model"] for f in saved["folds"]] == ["fold1.pt"]
    # the earlier run's record kept as the .bak (each write kept the one before: after two,
    # the earlier run's scores were gone)
    assert json.loads((out / "crossval.json.bak").read_text()) == earlier
    cv.check_fold_models([out / "fold1.pt"])
    with pytest.raises(BioAnomalyError, match=r"fold3\.pt: not a fold model .* \(that run did "
                       r"not end: it runs, or was killed\)"):  # fmt: skip
        cv.check_fold_models([out / "fold1.pt", out / "fold3.pt"])
    gen.close()  # closed by its caller (the CLI, at a second Ctrl+C): it ended, interrupted
    saved = json.loads((out / "crossval.json").read_text())
    assert not saved["running"] and saved["failed"] == "interrupted"
    with pytest.raises(BioAnomalyError, match=r"fold3\.pt: .*\(that run failed: interrupted\)"):
        cv.check_fold_models([out / "fold1.pt", out / "fold3.pt"])


def test_crossval_settings_refused_leave_an_earlier_run_as_it_was(nine, tmp_path, capsys):
    """Folds the groups cannot fill were refused after the record was written: the earlier
    run's scores were gone, and its fold models refused as those of a failed run."""
    out = tmp_path / "cv"
    out.mkdir()
    earlier = '{"folds": [{"model": "fold1.pt"}], "cancelled": false}'
    (out / "crossval.json").write_text(earlier)
    ann = str(nine / "annotations.json")
    argv = ["crossval", "--annotations", ann, "--out", str(out), "--model", "forest"]
    assert main([*argv, "--folds", "4", "--group-by", "cell_line"]) == 2  # 3 cell lines
    assert "3 values of cell_line (A549, HeLa, U2OS) cannot fill 4" in capsys.readouterr().err
    assert main([*argv, "--folds", "2", "--group-by", "plate"]) == 2
    assert "no image has a 'plate' file attribute to group the folds by" in capsys.readouterr().err
    assert (out / "crossval.json").read_text() == earlier
    assert not (out / "crossval.json.bak").exists()


def test_a_crossval_a_signal_stopped_exits_as_a_shell_reports_it(nine, tmp_path, monkeypatch,
                                                                 capsys):  # fmt: skip
    """Stopped by SIGTERM (a batch system ending the job) it exited 0: counted as finished."""
    import os
    import signal

    real = cv.train

    def train_stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the batch system, as fold 1 starts
        return real(*args, **kwargs)

    monkeypatch.setattr(cv, "train", train_stopped)
    out = tmp_path / "cv"
    argv = ["crossval", "--annotations", str(nine / "annotations.json"), "--out", str(out),
            "--model", "forest", "--folds", "3"]  # fmt: skip
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert "SIGTERM: stopping cross-validation" in err and "stopped: " in err
    assert json.loads((out / "crossval.json").read_text())["cancelled"]


def test_a_signal_after_the_run_ended_leaves_its_exit_status_0():
    from napari_bioanomaly._cli_ml import _stopped_status

    assert _stopped_status([]) == 0
    assert _stopped_status([15]) == 143 and _stopped_status([2], stopped=True) == 130
    assert _stopped_status([2], stopped=False) == 0  # it came once the run had ended


def test_folds_by_an_attribute_with_one_value_say_why_not():
    images = [ImageRecord(f"{k}.tif", (8, 8), {"cell_line": "HeLa"}) for k in range(4)]
    images.append(ImageRecord("x.tif", (8, 8)))  # without: a group of its own, "(none)"
    with pytest.raises(BioAnomalyError, match=r"2 values of cell_line \(\(none\), HeLa\) "
                       r"cannot fill 3 folds: use --folds 2"):  # fmt: skip
        cv.folds(Dataset(images=images), 3, "cell_line")
    with pytest.raises(BioAnomalyError, match=r"1 value of cell_line \(HeLa\) cannot fill 2 "
                       r"folds: cross-validation needs 2 at least"):  # fmt: skip
        cv.folds(Dataset(images=images[:4]), 2, "cell_line")


def test_a_crossval_that_fails_says_so_in_its_record(nine, tmp_path, monkeypatch):
    """A run that raised in fold 2 left its record saying "running" (that run did not end:
    it runs, or was killed); it says why it ended now, its finished fold kept."""
    import json

    ds, _ = annotations.load(nine / "annotations.json")
    out = tmp_path / "cv"
    real, calls = cv.train, []

    def train_twice(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory in fold 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(cv, "train", train_twice)
    with pytest.raises(MemoryError):
        list(cv.crossval(ds, TrainConfig(model="forest"), 3, out))
    saved = json.loads((out / "crossval.json").read_text())
    assert not saved["running"] and saved["failed"] == "MemoryError: out of memory in fold 2"
    assert [f["model"] for f in saved["folds"]] == ["fold1.pt"]
    cv.check_fold_models([out / "fold1.pt"])
    with pytest.raises(BioAnomalyError, match=r"fold2\.pt: .*\(that run failed: MemoryError"):
        cv.check_fold_models([out / "fold1.pt", out / "fold2.pt"])


def test_a_fold_s_last_state_is_not_resumed_on_every_image(nine, tmp_path, capsys):
    """train --resume cv/fold1.last.pt (or the Train widget's Resume of that file) went on
    with the fold's model on every image, its test fold's too, over the fold's model."""
    out = tmp_path / "cv"
    out.mkdir()
    (out / "crossval.json").write_text('{"folds": [], "running": true}')
    (out / "fold1.last.pt").write_bytes(b"a fold's last state")
    argv = ["train", "--annotations", str(nine / "annotations.json"), "--out",
            str(out / "fold1.pt"), "--resume", str(out / "fold1.last.pt")]  # fmt: skip
    assert main(argv) == 2
    assert "the last state of a cross-validation fold" in capsys.readouterr().err
    assert not (out / "fold1.pt").exists()


def test_cancelled_crossval_keeps_the_finished_folds(nine, tmp_path, capsys):
    import threading

    ds, _ = annotations.load(nine / "annotations.json")
    cancel = threading.Event()
    out = tmp_path / "cv"
    out.mkdir()
    (out / "fold3.pt").write_bytes(b"an earlier run's third fold")  # this run would replace it
    gen = cv.crossval(ds, TrainConfig(model="forest"), 3, out, cancel=cancel)
    try:
        while True:
            event = next(gen)
            if event.scores is not None:
                cancel.set()  # Stop pressed once the first fold is scored
    except StopIteration as stop:
        result = stop.value
    assert result.cancelled and len(result.folds) == 1
    assert result.summary["f1"]["folds"] == 1
    saved = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert saved["cancelled"] and not saved["running"] and len(saved["folds"]) == 1
    # fold3.pt is the earlier run's: predict --model cv/fold*.pt ensembled it with this
    # run's first fold without a word; a fold model the record does not list is refused
    cv.check_fold_models([out / "fold1.pt"])
    with pytest.raises(BioAnomalyError, match=r"fold3\.pt: not a fold model of the cross"):
        cv.check_fold_models([out / "fold1.pt", out / "fold3.pt"])
    capsys.readouterr()
    argv = ["predict", "--model", str(out / "fold1.pt"), str(out / "fold3.pt"), "--images",
            str(nine), "--out", str(tmp_path / "pred.json")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "that run was stopped" in err and "its finished folds: fold1.pt" in err
