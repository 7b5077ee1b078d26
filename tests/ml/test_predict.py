"""Prediction: tiled inference covers any image size, masks become exact polygons, CLI round trip."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.geometry import polygon_to_mask
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.predict import (
    Predictor,
    class_probabilities,
    predict_dataset,
    regions_from_probabilities,
    run,
)
from napari_bioanomaly.ml.train import train

TINY = TrainConfig(epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=8)


#: predict's line for each image it predicted: "3/6 img_002.tif: 2 regions  (0.21 s/image,
#: 0:01 left)"
PREDICTED_LINE = re.compile(r"^\d+/\d+ \S+: \d+ regions?  \(\d+\.\d\d s/image, (\d+:)?\d+:\d\d left\)$",
                            re.MULTILINE)  # fmt: skip


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("model") / "m.pt"
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    run(train(dataset, TINY, out))
    return out


def test_probabilities_cover_any_image_size(model_path):
    predictor = Predictor.load(model_path, "cpu")
    for shape in ((50, 70), (130, 97), (64, 64)):
        image = np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)
        probs = class_probabilities(predictor, image)
        assert probs.shape == (len(predictor.classes) + 1, *shape)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)


def test_masks_become_polygons_with_holes_filled_and_specks_dropped():
    probs = np.zeros((3, 60, 80), np.float32)
    probs[0] = 1
    probs[:, 10:30, 10:40] = [[[0.1]], [[0.8]], [[0.1]]]  # class 1, 20 x 30
    probs[:, 18:22, 20:25] = [[[1.0]], [[0.0]], [[0.0]]]  # a hole inside it
    probs[:, 40:50, 50:70] = [[[0.2]], [[0.1]], [[0.7]]]  # class 2
    probs[:, 5:7, 70:72] = [[[0.0]], [[0.0]], [[1.0]]]  # a speck of 4 px
    regions = regions_from_probabilities(probs, ["dust", "hair"], min_area=16)
    assert [r.label for r in regions] == ["dust", "hair"]
    first = polygon_to_mask(regions[0].polygon, (60, 80))
    assert first.sum() == 600 and first[10:30, 10:40].all()  # hole filled, exact outline
    assert polygon_to_mask(regions[1].polygon, (60, 80)).sum() == 200
    assert regions[0].score == pytest.approx(0.9)  # mean over the component (not the hole)
    assert all(r.source == "model" for r in regions)


def test_predict_writes_via_that_reimports_and_evaluates(model_path, sample_dir, tmp_path, capsys):
    out = tmp_path / "pred.json"
    code = main(
        [
            "predict",
            "--model",
            str(model_path),
            "--images",
            str(sample_dir),
            "--out",
            str(out),
            "--threshold",
            "0.3",
        ]
    )
    assert code == 0 and "predicted regions on 6 images" in capsys.readouterr().out
    predicted, report = annotations.load(out, images_dir=sample_dir)
    assert report.format == "via2-export" and not report.issues
    assert len(predicted.images) == 6
    data = json.loads(out.read_text())
    for entry in data.values():
        for region in entry["regions"]:
            attrs = region["region_attributes"]
            assert set(attrs) == {"class", "score", "source"} and attrs["source"] == "model"
            assert 0.3 <= float(attrs["score"]) <= 1
    assert (
        main(
            ["evaluate", "--gt", str(sample_dir / "annotations.json"), "--pred", str(out), "--json"]
        )
        == 0
    )
    assert "pixel_iou" in json.loads(capsys.readouterr().out)


def test_predict_reports_unreadable_images(model_path, dataset_dir, tmp_path, capsys):
    (dataset_dir / "img_001.tif").write_bytes(b"\x89PNG\r\n\x1a\n garbage" * 3)
    dataset, _ = annotations.load(dataset_dir / "annotations.json", read_images=False)
    gen = predict_dataset(Predictor.load(model_path, "cpu"), dataset)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        predictions = stop.value
    assert "img_001.tif: cannot read image" in events[1].message and events[1].record is None
    # left out of the predictions: an image without regions would score as a clean negative
    assert [im.filename for im in predictions.images] == [
        im.filename for im in dataset.images if im.filename != "img_001.tif"
    ]
    out = tmp_path / "p.json"
    assert main(["predict", "--model", str(model_path), "--images", str(dataset_dir / "annotations.json"),
                 "--out", str(out)]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert "img_001.tif: cannot read image header (" in said.err
    n = len(dataset.images)
    assert (
        f"on {n - 1} images -> {out}; 1 image not predicted (see the warnings above), left out: img_001.tif"
        in said.out
    )
    assert "img_001.tif" not in {
        im.filename for im in annotations.load(out, read_images=False)[0].images
    }
    # evaluate then says the image has no prediction, not that it is a clean negative
    assert (
        main(["evaluate", "--gt", str(dataset_dir / "annotations.json"), "--pred", str(out)]) == 0
    )
    assert f"1 of {n} ground-truth images are not in {out}" in capsys.readouterr().err
    # only unreadable images: an error, and no predictions file
    alone = tmp_path / "alone.json"
    assert main(["predict", "--model", str(model_path), "--images", str(dataset_dir / "img_001.tif"),
                 "--out", str(alone)]) == 2  # fmt: skip
    assert ("error: no image could be predicted (1 image; see the warnings above: "
            f"img_001.tif); {alone} not written") in capsys.readouterr().err  # fmt: skip
    assert not alone.exists()


def test_a_stack_is_predicted_on_its_first_plane_and_said_to_be_one(model_path, tmp_path,
                                                                   capsys):  # fmt: skip
    import tifffile

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, (3, 64, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "flat.tif", stack[0])
    assert predict(model_path, tmp_path, tmp_path / "out" / "pred.json") == 0
    err = capsys.readouterr().err
    said = "note: z.tif: a stack of 3 planes (pages): only the first plane is used"
    assert said in err.splitlines() and "flat.tif: a stack" not in err
    pred, _ = annotations.load(tmp_path / "out" / "pred.json", tmp_path, read_images=False)
    regions = {im.filename: im.regions for im in pred.images}
    assert len(regions["z.tif"]) == len(regions["flat.tif"])  # the first plane, as the flat one
    for a, b in zip(regions["z.tif"], regions["flat.tif"], strict=True):
        np.testing.assert_allclose(a.polygon, b.polygon)


def predict(model_path, images, out, *extra):
    """Run ``napari-bioanomaly predict`` and return its exit code."""
    argv = ["predict", "--model", str(model_path), "--images", str(images), "--out", str(out)]
    return main([*argv, *extra])


def test_sharded_prediction_merges_to_exactly_the_single_run(model_path, sample_dir, tmp_path):
    single = tmp_path / "single.json"
    assert predict(model_path, sample_dir, single, "--threshold", "0.3") == 0
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.json"
        assert predict(model_path, sample_dir, part, "--threshold", "0.3", "--shard", f"{i}/3") == 0
        parts.append(str(part))
    sizes = [len(json.loads(open(p).read())) for p in parts]
    assert sizes == [2, 2, 2]  # 6 images, a third each, none twice
    assert main(["merge", *parts, "--out", str(tmp_path / "all.json")]) == 0
    assert json.loads((tmp_path / "all.json").read_text()) == json.loads(single.read_text())
    assert main(["merge", parts[0], parts[0], "--out", str(tmp_path / "bad.json")]) == 2
    # a shard still running has a manifest, which a glob part*.json picks up too
    unfinished = tmp_path / "part3.json.manifest.json"
    unfinished.write_text("{}")
    assert main(["merge", *parts, str(unfinished), "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()
    # one image alone
    one = tmp_path / "one.json"
    assert predict(model_path, sample_dir / "img_002.tif", one) == 0
    predicted, _ = annotations.load(one, read_images=False)
    assert [im.filename for im in predicted.images] == ["img_002.tif"]


def test_predict_under_torchrun_is_refused_for_shards(model_path, sample_dir, tmp_path,
                                                     monkeypatch, capsys):  # fmt: skip
    """Every process of a torchrun would predict every image into the one file (and its
    manifest): refused, pointing at --shard, before anything is written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert predict(model_path, sample_dir, tmp_path / "p.json") == 2
    assert "predict does not run under torchrun: run one predict per shard" in \
        capsys.readouterr().err  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_resumes_from_its_manifest(model_path, sample_dir, tmp_path, capsys):
    from napari_bioanomaly.core.manifest import run_identity

    reference = tmp_path / "ref.json"
    assert predict(model_path, sample_dir, reference) == 0
    ref = json.loads(reference.read_text())
    out = tmp_path / "pred.json"
    keys = sorted(ref)[:4]  # as if the run was killed after four images
    manifest = {
        "model": run_identity([model_path], tta=False),
        "shard": "0/1",
        "done": {k: ref[k] for k in keys},
    }
    (tmp_path / "pred.json.manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert predict(model_path, sample_dir, out) == 0
    err = capsys.readouterr().err
    assert "resuming: 4 images already done" in err
    assert len(PREDICTED_LINE.findall(err)) == 2  # only the remaining two were predicted
    assert json.loads(out.read_text()) == ref
    assert not (tmp_path / "pred.json.manifest.json").exists()


def test_sigterm_or_ctrl_c_stops_after_the_image_and_the_same_command_goes_on(
    model_path, sample_dir, tmp_path
):
    """A batch system ending the job (SIGTERM) killed predict without a word; now it
    stops after the current image, says how far it got and where that is kept, and the
    same command goes on from there to the file a run without a stop writes."""
    import signal
    import subprocess
    import sys

    reference, out = tmp_path / "ref.json", tmp_path / "pred.json"
    argv = ["--model", str(model_path), "--images", str(sample_dir), "--tta", "yes"]
    assert main(["predict", *argv, "--out", str(reference)]) == 0
    exe = [sys.executable, "-m", "napari_bioanomaly.cli", "predict", *argv, "--out", str(out)]
    with subprocess.Popen(exe, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}) as proc:  # fmt: skip
        said = []
        for line in proc.stderr:
            said.append(line)
            if PREDICTED_LINE.match(line.rstrip("\n")):
                proc.send_signal(signal.SIGTERM)
                break
        said.append(proc.communicate(timeout=300)[1])
    err = "".join(said)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]  # 143, as a shell says it
    assert "SIGTERM: stopping the prediction after the current image" in err
    kept = re.search(r"stopped: (\d+) images? of 6 predicted, kept in (\S+);", err)
    assert kept and 1 <= int(kept[1]) < 6, err[-2000:]
    assert kept[2] == str(tmp_path / "pred.json.manifest.json") and not out.exists()
    proc = subprocess.run(exe, stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming: {kept[1]} image" in proc.stderr
    assert json.loads(out.read_text()) == json.loads(reference.read_text())


def test_a_stop_during_the_last_image_writes_the_predictions(
    model_path, sample_dir, tmp_path, monkeypatch, capsys
):
    """SIGTERM while the last image was predicted said "stopped: 6 images of 6 predicted"
    and left the predictions unwritten until the same command was run again."""
    import signal

    from napari_bioanomaly.ml import predict as predict_module

    real = predict_module.predict_dataset

    def signalled_during_the_last(*args, **kwargs):
        gen = real(*args, **kwargs)
        event = next(gen)
        while True:
            if event.index == event.total:  # predicted, not yet said
                os.kill(os.getpid(), signal.SIGTERM)
            yield event
            try:
                event = next(gen)
            except StopIteration as done:
                return done.value

    monkeypatch.setattr(predict_module, "predict_dataset", signalled_during_the_last)
    out = tmp_path / "pred.json"
    assert predict(model_path, sample_dir, out) == 0
    err = capsys.readouterr().err
    assert "SIGTERM: stopping the prediction" in err and "stopped:" not in err
    assert "the stop came with the last image: every image is predicted" in err
    assert len(annotations.load(out, read_images=False)[0].images) == 6
    assert not (tmp_path / "pred.json.manifest.json").exists()


def test_a_resumed_run_predicts_again_the_images_whose_maps_are_gone(model_path, sample_dir,
                                                                     tmp_path, capsys):  # fmt: skip
    """With --heatmaps, an image of the stopped run whose map was deleted in between is
    predicted again (its map written), the others taken as they were."""
    from napari_bioanomaly.core.manifest import Manifest, run_identity
    from napari_bioanomaly.core.maps import heatmap_path

    out, maps = tmp_path / "pred.json", tmp_path / "maps"
    assert predict(model_path, sample_dir, out, "--heatmaps", str(maps)) == 0
    predicted, _ = annotations.load(out, read_images=False)
    manifest = Manifest(out, run_identity([model_path], tta=False, heatmaps=True))
    manifest.add(*predicted.images[:4])  # as if the run was stopped after four images
    manifest.save()
    gone = predicted.images[1].filename
    heatmap_path(maps, gone).unlink()
    capsys.readouterr()
    assert predict(model_path, sample_dir, out, "--heatmaps", str(maps)) == 0
    err = capsys.readouterr().err
    assert "resuming: 3 images already done" in err
    assert f"resuming: 1 image predicted before the stop, {gone}, has no anomaly map" in err
    assert len(PREDICTED_LINE.findall(err)) == 3  # the image whose map was gone, the last two
    assert heatmap_path(maps, gone).is_file()
    again, _ = annotations.load(out, read_images=False)
    assert [im.filename for im in again.images] == [im.filename for im in predicted.images]


def test_a_run_stopped_at_another_operating_point_is_not_resumed(model_path, sample_dir,
                                                                   tmp_path, capsys):  # fmt: skip
    """predict --threshold 0.8 stopped, then run with --threshold 0.3: it resumed, and
    wrote one file of images at two thresholds without a word. The values given in place
    of the model's are the run's: another one is refused, named."""
    from napari_bioanomaly.core.manifest import run_identity

    stopped = run_identity([model_path], tta=False, threshold=0.8)
    assert stopped != run_identity([model_path], tta=False, threshold=0.3)
    assert stopped != run_identity([model_path], tta=False, threshold=0.8, min_area=20)
    assert run_identity([model_path], tta=False) == run_identity([model_path], False)
    manifest = tmp_path / "pred.json.manifest.json"
    manifest.write_text(json.dumps({"model": stopped, "shard": "0/1", "done": {}}))
    capsys.readouterr()
    assert predict(model_path, sample_dir, tmp_path / "pred.json", "--threshold", "0.3") == 2
    err = capsys.readouterr().err
    assert "manifest of another run" in err and "threshold 0.8" in err
    assert not (tmp_path / "pred.json").exists()


def test_a_manifest_of_another_model_file_is_not_resumed(model_path, sample_dir, tmp_path, capsys):
    """A model retrained (or given a new point) under the same name is another run: its
    manifest is refused, named, and nothing is written."""
    from napari_bioanomaly.core.manifest import run_identity

    model = tmp_path / "m.pt"
    model.write_bytes(b"the model an interrupted run predicted with")
    earlier = run_identity([model], tta=False)
    model.write_bytes(model_path.read_bytes())  # retrained since, under the same name
    assert run_identity([model], tta=False) != earlier
    manifest = tmp_path / "pred.json.manifest.json"
    manifest.write_text(json.dumps({"model": earlier, "shard": "0/1", "done": {}}))
    capsys.readouterr()
    assert predict(model, sample_dir, tmp_path / "pred.json") == 2
    err = capsys.readouterr().err
    assert f"{manifest}: manifest of another run" in err and "delete it to start over" in err
    assert not (tmp_path / "pred.json").exists()
    manifest.write_text("[1, 2]")
    assert predict(model, sample_dir, tmp_path / "pred.json") == 2
    assert f"{manifest}: not a prediction manifest" in capsys.readouterr().err
    manifest.unlink()
    assert predict(model, sample_dir, tmp_path / "pred.json") == 0


def test_tta_averages_the_eight_flips_and_rotations(model_path):
    from napari_bioanomaly.ml.predict import DIHEDRAL, _transform, _untransform, predict_image

    a = np.arange(12.0).reshape(1, 3, 4)
    for k, flip in DIHEDRAL:
        np.testing.assert_array_equal(_untransform(_transform(a, k, flip), k, flip), a)
    assert len({_transform(a[0], k, f).tobytes() for k, f in DIHEDRAL}) == 8
    predictor = Predictor.load(model_path, "cpu")
    image = np.random.default_rng(1).integers(0, 4000, (64, 80)).astype(np.uint16)
    plain, _ = predict_image(predictor, image)
    tta, _ = predict_image(predictor, image, tta=True)
    flipped, _ = predict_image(predictor, np.ascontiguousarray(image[:, ::-1]), tta=True)
    assert tta.shape == plain.shape and not np.allclose(tta, plain)  # the network is not symmetric
    np.testing.assert_allclose(flipped[:, :, ::-1], tta, atol=1e-5)  # TTA is: flip in, flip out


def test_ensemble_averages_members_and_refuses_mixed_classes(
    model_path, sample_dir, tmp_path, capsys
):
    import torch

    from napari_bioanomaly.ml.predict import Ensemble, predict_image
    from napari_bioanomaly.ml.train import load_checkpoint

    dataset, _ = annotations.load(sample_dir / "annotations.json")
    other = tmp_path / "other.pt"
    run(train(dataset, TINY.replace(seed=5), other))
    ens = Ensemble.load([model_path, other], "cpu")
    assert isinstance(ens, Ensemble) and len(ens.members) == 2
    image = np.random.default_rng(2).integers(0, 4000, (64, 64)).astype(np.uint16)
    mean = (predict_image(ens.members[0], image)[0] + predict_image(ens.members[1], image)[0]) / 2
    np.testing.assert_allclose(ens.probabilities(image)[0], mean, atol=1e-5)
    points = [m.operating_point for m in ens.members]
    assert ens.operating_point.threshold == pytest.approx(np.mean([p.threshold for p in points]))
    # a class's own minimum area in one member: averaged with the other's common one
    from dataclasses import replace

    ens.members[0].operating_point = replace(points[0], class_min_area={"dust": 500.0})
    mean = ens.operating_point.min_area_of("dust")
    assert mean == (500 + points[1].min_area_of("dust")) / 2
    ens.members[0].operating_point = points[0]
    ckpt = load_checkpoint(other)
    ckpt["classes"] = ["x", *ckpt["classes"][1:]]
    torch.save(ckpt, tmp_path / "renamed.pt")
    with pytest.raises(Exception, match=r"renamed\.pt learned the classes \['x'"):
        Ensemble.load([model_path, tmp_path / "renamed.pt"], "cpu")
    out = tmp_path / "ens.json"
    # as a glob fold*.pt gives them: the best states and the last state of one
    last = tmp_path / "other.last.pt"
    assert last.is_file()
    argv = ["predict", "--model", str(model_path), str(other), str(last), "--images",
            str(sample_dir), "--out", str(out), "--tta"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "ensemble of 2 models" in err and "(the model's, chosen on validation)" in err
    assert f"left out {last}: the last state of a model also given" in err
    predicted, _ = annotations.load(out, images_dir=sample_dir)
    assert len(predicted.images) == 6


def test_tiles_out_of_device_memory_are_predicted_in_smaller_batches():
    """Running out of (GPU) memory halves the batch of tiles; the maps are unchanged."""
    import torch

    from napari_bioanomaly.core.model import BioAnomalyError
    from napari_bioanomaly.ml.tiling import blend_tiles

    norm = np.random.default_rng(0).random((100, 130)).astype(np.float32)
    sizes = []

    def fn(x: torch.Tensor) -> np.ndarray:
        sizes.append(len(x))
        if len(x) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.cat([x, 1 - x], dim=1).numpy()

    maps = blend_tiles(norm, 64, fn, "cpu", 0.25, 8)
    assert sizes == [6, 3, 1, 1, 1, 1, 1, 1]  # all 6 tiles, then 3, then one at a time
    np.testing.assert_allclose(maps[0], norm, atol=1e-5)
    np.testing.assert_allclose(maps[1], 1 - norm, atol=1e-5)

    def never(x: torch.Tensor) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(BioAnomalyError, match="out of memory on cpu with one 64 px tile"):
        blend_tiles(norm, 64, never, "cpu", 0.25, 4)

    def broken(x: torch.Tensor) -> np.ndarray:
        raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes do not match"):  # not memory: not hidden
        blend_tiles(norm, 64, broken, "cpu", 0.25, 4)


def test_predict_uses_each_class_minimum_area_unless_the_user_sets_one(
    model_path, sample_dir, monkeypatch
):
    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml import predict as predict_module
    from napari_bioanomaly.ml.predict import predict_dataset

    predictor = Predictor.load(model_path, "cpu")
    first, second = predictor.classes[:2]
    probs = np.zeros((len(predictor.classes) + 1, 64, 64), np.float32)
    probs[0] = 1
    probs[:, 4:14, 4:14] = 0
    probs[[0, 1], 4:14, 4:14] = [[[0.2]], [[0.8]]]  # 100 px of the first class
    probs[:, 30:36, 30:36] = 0
    probs[[0, 2], 30:36, 30:36] = [[[0.2]], [[0.8]]]  # 36 px of the second
    monkeypatch.setattr(predict_module, "predict_image", lambda *a, **k: (probs, None))
    predictor.operating_point = OperatingPoint(0.5, 64.0, class_min_area={second: 16.0})
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    dataset.images = dataset.images[:1]
    out = run(predict_dataset(predictor, dataset))
    assert sorted(r.label for r in out.images[0].regions) == sorted([first, second])
    out = run(predict_dataset(predictor, dataset, min_area=64))  # the user's, for all
    assert [r.label for r in out.images[0].regions] == [first]


def test_predict_votes_classes_with_the_model_vote_weights(model_path, sample_dir, monkeypatch):
    from dataclasses import replace

    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml import predict as predict_module
    from napari_bioanomaly.ml.predict import Ensemble, predict_dataset

    predictor = Predictor.load(model_path, "cpu")
    first, second = predictor.classes[:2]
    probs = np.zeros((len(predictor.classes) + 1, 64, 64), np.float32)
    probs[0] = 1
    probs[:3, 4:14, 4:14] = [[[0.3]], [[0.4]], [[0.3]]]  # votes the first class, narrowly
    monkeypatch.setattr(predict_module, "predict_image", lambda *a, **k: (probs, None))
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    dataset.images = dataset.images[:1]
    predictor.operating_point = OperatingPoint(0.5, 16.0)
    assert [r.label for r in run(predict_dataset(predictor, dataset)).images[0].regions] == [first]
    predictor.operating_point = OperatingPoint(0.5, 16.0, vote_weights={second: 2.0})
    for threshold in (None, 0.4):  # the user's threshold does not change how classes vote
        out = run(predict_dataset(predictor, dataset, threshold=threshold))
        assert [r.label for r in out.images[0].regions] == [second]
    # an ensemble: the geometric mean of its members' weights (one without counts 1)
    ens = Ensemble([predictor, replace(predictor, operating_point=OperatingPoint(0.5, 16.0,
                                       vote_weights={second: 8.0, first: 0.5}))])  # fmt: skip
    assert ens.operating_point.vote_weights == {second: pytest.approx(4.0),
                                                first: pytest.approx(0.5**0.5)}  # fmt: skip


def test_predict_keeps_regions_reaching_the_minimum_peak(
    model_path, sample_dir, tmp_path, monkeypatch, capsys
):
    from dataclasses import replace

    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml import predict as predict_module
    from napari_bioanomaly.ml.predict import Ensemble

    predictor = Predictor.load(model_path, "cpu")
    probs = np.zeros((len(predictor.classes) + 1, 64, 64), np.float32)
    probs[0] = 1
    probs[:2, 4:14, 4:14] = [[[0.4]], [[0.6]]]  # faint throughout: 0.6
    probs[:2, 30:40, 30:40] = [[[0.4]], [[0.6]]]
    probs[:2, 33:37, 33:37] = [[[0.1]], [[0.9]]]  # faint, with a bright core: 0.9
    monkeypatch.setattr(predict_module, "predict_image", lambda *a, **k: (probs, None))
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    dataset.images = dataset.images[:1]
    predictor.operating_point = OperatingPoint(0.5, 16.0, min_peak=0.7)
    out = run(predict_dataset(predictor, dataset))
    [kept] = out.images[0].regions
    assert polygon_to_mask(kept.polygon, (64, 64)).sum() == 100  # whole, rim and all
    assert len(run(predict_dataset(predictor, dataset, threshold=0.5)).images[0].regions) == 2
    assert len(run(predict_dataset(predictor, dataset, threshold=0.3, min_peak=0.7))
               .images[0].regions) == 1  # fmt: skip
    # an ensemble: the mean of its members' peaks (one without counts its threshold)
    ens = Ensemble([predictor, replace(predictor, operating_point=OperatingPoint(0.5, 16.0))])
    assert ens.operating_point.min_peak == pytest.approx(0.6)
    # the command line: the user's peak, or none with the user's threshold
    for extra, n in ((["--threshold", "0.5", "--min-peak", "0.7"], 1), (["--threshold", "0.5"], 2)):
        assert predict(model_path, sample_dir, tmp_path / "p.json", *extra) == 0
        predicted, _ = annotations.load(tmp_path / "p.json", images_dir=sample_dir)
        assert {len(im.regions) for im in predicted.images} == {n}, extra
    assert "min peak 0.7" in capsys.readouterr().err
    assert predict(model_path, sample_dir, tmp_path / "q.json", "--min-peak", "0.2",
                   "--threshold", "0.5") != 0  # fmt: skip
    assert "min_peak must be above the threshold 0.5" in capsys.readouterr().err
    assert not (tmp_path / "q.json").exists()


def test_an_image_too_large_to_predict_is_refused_from_its_header(
    model_path, sample_dir, monkeypatch
):
    from napari_bioanomaly.ml import predict as predict_module
    from napari_bioanomaly.ml.predict import predict_dataset

    predictor = Predictor.load(model_path, "cpu")
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    monkeypatch.setattr(predict_module, "MAX_PREDICT_BYTES", 128 * 128 * 4 * 3)
    read = []
    monkeypatch.setattr(predict_module, "read_image", lambda p: read.append(p))
    events = []
    gen = predict_dataset(predictor, dataset)
    try:
        while True:
            events.append(next(gen))
    except StopIteration:
        pass
    assert read == []  # refused before any pixel was read
    assert all("crop or tile it first" in e.message for e in events) and len(events) == 6


def test_maskrcnn_detections_of_any_score_are_painted_the_most_confident_on_top():
    """A Mask R-CNN map holds every detection, weighted by its score: the operating
    point's threshold (chosen on validation) is the cut, not a fixed score of 0.5 that
    left a model whose scores were all lower with an empty map."""
    import torch

    from napari_bioanomaly.ml import models

    masks = torch.zeros(3, 1, 16, 16)
    masks[0, 0, 2:8, 2:8] = 0.9  # class 1, score 0.3
    masks[1, 0, 4:10, 4:10] = 1.0  # class 2, score 0.2: under the first where they overlap
    masks[2, 0, 12:14, 12:14] = 0.8  # class 3, score 0.06

    class Detector(torch.nn.Module):
        def forward(self, images):
            return [{"scores": torch.tensor([0.3, 0.2, 0.06]), "labels": torch.tensor([1, 2, 3]),
                     "masks": masks, "boxes": torch.zeros(3, 4)} for _ in images]  # fmt: skip

    cls, fg = models.predict_classes("maskrcnn", Detector(), torch.zeros(2, 1, 16, 16))
    assert cls.shape == fg.shape == (2, 16, 16)
    assert cls[1, 3, 3] == 1 and fg[1, 3, 3] == pytest.approx(0.27)
    assert cls[1, 5, 5] == 1 and fg[1, 5, 5] == pytest.approx(0.27)  # the higher score wins
    assert cls[1, 9, 9] == 2 and fg[1, 9, 9] == pytest.approx(0.2)
    assert cls[0, 12, 12] == 3 and fg[0, 12, 12] == pytest.approx(0.048)
    assert cls[0, 0, 0] == 0 and fg[0, 0, 0] == 0


def test_predict_and_train_do_not_write_over_annotations(model_path, dataset_dir, tmp_path,
                                                         capsys):  # fmt: skip
    """predict --out onto the annotation file it reads, or onto any file holding regions a
    person drew, is refused and the file kept as it was (one .bak would not survive a second
    run); a file of predictions is replaced; train --out onto an annotation file is refused."""
    import shutil

    gt = dataset_dir / "annotations.json"
    before = gt.read_bytes()
    predict = ["predict", "--model", str(model_path), "--images", str(gt)]
    assert main([*predict, "--out", str(gt)]) == 2
    assert "is the annotation file this command reads" in capsys.readouterr().err
    copy = tmp_path / "copy.json"
    shutil.copy(gt, copy)
    assert main([*predict, "--out", str(copy)]) == 2
    assert "drawn or accepted by a person; predictions would replace them" in (
        capsys.readouterr().err
    )
    assert main([*predict, "--out", str(model_path)]) == 2  # the model itself
    assert gt.read_bytes() == before and copy.read_bytes() == before
    pred = tmp_path / "pred.json"
    for _ in range(2):  # predictions replace predictions
        assert main([*predict, "--out", str(pred)]) == 0
    train = ["train", "--annotations", str(gt), "--model", "forest"]
    assert main([*train, "--out", str(gt)]) == 2
    assert "exists and is not a model file" in capsys.readouterr().err
    assert gt.read_bytes() == before


def test_predict_warns_when_the_model_has_no_operating_point(model_path, sample_dir, tmp_path,
                                                             capsys):  # fmt: skip
    """A network whose training stopped before it validated (or a .last.pt) predicts at
    the defaults; predict says so and how to choose a point."""
    from napari_bioanomaly.ml.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(model_path)
    assert ckpt["operating_point"]["source"] == "validation"
    argv = ["predict", "--images", str(sample_dir), "--out", str(tmp_path / "p.json")]
    assert main([*argv, "--model", str(model_path)]) == 0
    assert "no operating point chosen" not in capsys.readouterr().err
    ckpt.pop("operating_point")
    save_checkpoint(tmp_path / "none.pt", ckpt)
    assert main([*argv, "--model", str(tmp_path / "none.pt")]) == 0
    err = capsys.readouterr().err
    assert "warning: no operating point chosen on validation" in err
    assert "choose-point MODEL --annotations FILE" in err


def test_an_image_that_fails_is_named_and_the_others_are_predicted(
    model_path, sample_dir, monkeypatch, capsys, tmp_path
):
    """One image defeating a library (here: made to) does not stop a batch of thousands:
    predict names it, leaves it out of the predictions and predicts the rest."""
    from napari_bioanomaly.ml import predict as predict_module

    plain = predict_module.predict_image

    def failing(predictor, pixels, **kw):
        if pixels.shape == (1, 1):
            raise ValueError("too small for a gradient")
        return plain(predictor, pixels, **kw)

    monkeypatch.setattr(predict_module, "predict_image", failing)
    import tifffile

    folder = tmp_path / "imgs"
    shutil.copytree(sample_dir, folder)
    tifffile.imwrite(folder / "dot.tif", np.full((1, 1), 900, np.uint16))
    assert main(["predict", "--model", str(model_path), "--images", str(folder),
                 "--out", str(tmp_path / "p.json")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: dot.tif: not predicted (ValueError: too small for a gradient)" in err
    predicted, _ = annotations.load(tmp_path / "p.json", read_images=False)
    assert len(predicted.images) == 6 and "dot.tif" not in [im.filename for im in predicted.images]


def test_forest_features_of_an_image_one_pixel_high_or_wide():
    from napari_bioanomaly.ml.features import forest_features

    for shape in ((1, 1), (1, 40), (30, 1)):
        feats = forest_features(np.linspace(0, 1, shape[0] * shape[1]).reshape(shape))
        assert feats.shape == (*shape, 23) and np.isfinite(feats).all()
