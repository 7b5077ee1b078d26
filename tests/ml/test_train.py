"""Training core on CPU: it learns, checkpoints reload, cancel, resume, Mask R-CNN, OOM, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.core.threads import cpu_threads, set_cpu_threads
from napari_bioanomaly.ml import models
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.data import TileSampler, class_names, normalise, split
from napari_bioanomaly.ml.train import load_checkpoint, model_from_checkpoint, train

TINY = TrainConfig(epochs=2, steps_per_epoch=3, tile=64, batch=2, base_channels=8, lr=3e-3)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    write_sample(folder, SampleConfig(n_images=10, size=128, seed=1))
    return folder


@pytest.fixture
def dataset(train_dir):
    ds, _ = annotations.load(train_dir / "annotations.json")
    return ds


def drain(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value


def test_config_round_trip_and_validation():
    cfg = TrainConfig(val_attribute="cell_line", val_values=("HeLa",))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(BioAnomalyError, match="tile must be a multiple of 16"):
        TrainConfig(tile=100)
    with pytest.raises(BioAnomalyError, match="model must be one of"):
        TrainConfig(model="yolo")


def test_width_is_the_models_own_unless_given():
    assert TrainConfig().width == 8 and TrainConfig(model="memory").width == 16
    assert TrainConfig(model="forest").width == 16
    # the default follows the model, so switching models keeps each one's own width
    assert TrainConfig(model="memory").replace(model="unet").width == 8
    assert TrainConfig(model="memory", base_channels=4).replace(model="unet").width == 4
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_checkpoint_stores_the_width_built_and_resume_keeps_it(dataset, tmp_path):
    _, first = drain(train(dataset, TINY.replace(base_channels=None), tmp_path / "w.pt"))
    ckpt = load_checkpoint(first.best)
    assert ckpt["config"]["base_channels"] == 8
    assert ckpt["state_dict"]["down.0.0.weight"].shape[0] == 8
    # a run of another width (e.g. made before the default changed) resumes at its own
    _, wide = drain(train(dataset, TINY.replace(base_channels=16), tmp_path / "16.pt"))
    _, resumed = drain(train(dataset, TINY.replace(base_channels=None, epochs=3),
                             tmp_path / "16.pt", resume=wide.last))  # fmt: skip
    assert load_checkpoint(resumed.last)["config"]["base_channels"] == 16
    assert len(resumed.history) == 3
    with pytest.raises(BioAnomalyError, match=r"base_channels 4 \(the stopped run: 16\)"):
        drain(train(dataset, TINY.replace(base_channels=4, epochs=4), tmp_path / "16.pt",
                    resume=wide.last))  # fmt: skip


def test_image_cache_keeps_the_last_images_and_more_within_its_budget(dataset):
    from napari_bioanomaly.ml.data import ImageCache

    n = len(dataset.images)
    assert n > 4
    plain = ImageCache(dataset, TINY, size=2)
    first = [plain(i) for i in range(n)]
    assert len(plain) == 2 and plain.nbytes == first[-1].nbytes + first[-2].nbytes
    each = first[0].nbytes
    budgeted = ImageCache(dataset, TINY, size=2, budget=3 * each)
    again = [budgeted(i) for i in range(n)]
    assert len(budgeted) == 3 and budgeted.nbytes <= 3 * each
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    everything = ImageCache(dataset, TINY, size=2, budget=n * each)
    for i in [*range(n), *range(n)]:
        everything(i)
    assert len(everything) == n  # a small dataset stays whole: no file is read twice
    assert budgeted(n - 1) is again[-1]  # cached, not read again


@pytest.mark.parametrize("tile", [64, 160])  # 160: bigger than the images, padded around
def test_tile_masks_are_the_window_of_the_whole_image_masks(dataset, monkeypatch, tile):
    """Tiles rasterise only their window; nothing outside the image (padding) is drawn."""
    from napari_bioanomaly.ml import data

    first = dataset.images[0]  # a region reaching past the image's corner, as drawn by hand
    corner = Region(
        np.array([[-30.0, -30.0], [-30.0, 40.0], [40.0, -30.0]]), first.regions[0].label
    )
    dataset = dataclasses.replace(
        dataset,
        images=[dataclasses.replace(first, regions=[*first.regions, corner]), *dataset.images[1:]],
    )
    classes = class_names(dataset)
    cfg = TINY.replace(anomaly_fraction=0.8, augment=False, tile=tile)
    sampler = TileSampler(dataset, list(range(len(dataset.images))), classes, cfg)
    places = []  # where each tile was cut: the image it came from and its origin
    crop = data.crop

    def spy(array, r0, c0, tile, fill=0):
        places.append((next(i for i, im in sampler.cache._items.items() if im is array), r0, c0))
        return crop(array, r0, c0, tile, fill)

    monkeypatch.setattr(data, "crop", spy)
    rng, drawn, edges = np.random.default_rng(0), 0, 0
    for _ in range(60):
        _, cls, inst = sampler.sample(rng)
        index, r, c = places[-1]
        rows, cols = sampler.cache(index).shape
        full_cls, full_inst = data.rasterise(dataset.images[index], classes, (rows, cols))
        assert np.array_equal(cls, crop(full_cls, r, c, tile))
        assert np.array_equal(inst, crop(full_inst, r, c, tile))
        drawn += int(np.count_nonzero(cls))
        edges += r < 0 or c < 0 or r + tile > rows or c + tile > cols
    assert drawn > 1000  # the tiles held annotated pixels
    assert edges == (60 if tile > 128 else 0)
    assert any(i == 0 for i, _, _ in places)


def test_augmentation_turns_and_zooms_image_and_masks_together():
    """Augmented tiles keep their masks on their defects: a bright bar labelled as one
    region stays labelled where it is bright, and about half the tiles are turned by an
    angle no 90-degree rotation gives (and their bars zoomed); without ``turns`` (the
    unsupervised networks) none is."""
    from napari_bioanomaly.ml.data import augment, turn

    image = np.zeros((64, 64), np.float32)
    image[29:35, 8:56] = 1.0
    cls = (image > 0).astype(np.int64)
    inst = cls.astype(np.int32) * 7
    oblique, lengths = 0, set()
    for k in range(40):
        upright = augment(np.random.default_rng([3, k]), image, cls, inst, turns=False)[1]
        assert np.count_nonzero(upright.any(axis=0)) in (6, 48)  # as a 90-degree turn leaves it
        img, c, i = augment(np.random.default_rng([3, k]), image, cls, inst)
        assert (img.dtype, c.dtype, i.dtype) == (np.float32, np.int64, np.int32)
        assert 7 in i and np.array_equal(i > 0, c > 0)
        assert not (np.unique(i) % 7).any()  # the bar, and its mirror images: bars of their own
        assert np.mean((img > 0.5) == (c > 0)) > 0.97  # labels on the bright pixels
        rows, cols = np.nonzero(c)
        angle = (
            np.degrees(0.5 * np.arctan2(2 * np.cov(rows, cols)[0, 1], np.var(rows) - np.var(cols)))
            % 90
        )
        oblique += 5 < angle < 85
        lengths.add(int(np.count_nonzero(c)) // 20)
    assert 10 <= oblique <= 30, oblique
    assert len(lengths) > 3  # zoomed: the bar's area varies
    # a quarter turn without zoom is a 90-degree rotation, masks and all
    quarter = turn(np.pi / 2, 1.0, image, cls, inst)
    assert any(np.array_equal(quarter[1], np.rot90(cls, k)) for k in (1, -1))
    assert any(np.allclose(quarter[0], np.rot90(image, k), atol=1e-5) for k in (1, -1))


def test_turned_masks_are_the_nearest_source_pixels_and_mirror_images_instances_of_their_own():
    """The masks of a turned tile are scipy's nearest-pixel transform of them (one set of
    source coordinates for both masks), and what the turn mirrors in from outside the tile
    is a region of its own: a detector's box never spans a region and its mirror image."""
    from scipy import ndimage

    from napari_bioanomaly.ml.data import turn, turn_matrix
    from napari_bioanomaly.ml.models import maskrcnn_targets

    rng = np.random.default_rng(0)
    image = rng.random((48, 40)).astype(np.float32)
    cls, inst = np.zeros((48, 40), np.int64), np.zeros((48, 40), np.int32)
    for i in range(1, 12):
        r, c, h, w = rng.integers(0, 40), rng.integers(0, 32), *rng.integers(1, 9, 2)
        cls[r : r + h, c : c + w], inst[r : r + h, c : c + w] = i % 3 + 1, i
    for _ in range(40):
        angle, zoom = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.6)
        turned, c, i = turn(angle, zoom, image, cls, inst)
        matrix, offset = turn_matrix(angle, zoom, image.shape)
        scipy = [
            ndimage.affine_transform(a, matrix, offset, order=o, mode="reflect")
            for a, o in ((image, 1), (cls, 0), (inst, 0))
        ]
        assert np.array_equal(turned, scipy[0]) and np.array_equal(c, scipy[1])
        top = max(int(scipy[2].max()), 1)  # mirrored copies: the id plus a multiple of it
        assert np.array_equal(np.where(i > 0, (i - 1) % top + 1, 0), scipy[2])
        assert np.array_equal(i[i <= top], scipy[2][i <= top]) and i.dtype == inst.dtype
    # a bar touching the left edge, zoomed out: its mirror image is a second instance
    bar_cls = np.zeros((64, 64), np.int64)
    bar_cls[29:35, 0:20] = 1
    _, c, i = turn(
        0.0,
        0.8,
        image=np.zeros((64, 64), np.float32),
        cls=bar_cls,
        inst=bar_cls.astype(np.int32) * 7,
    )
    assert np.count_nonzero(i == 7) > 0 and len(np.unique(i)) == 3
    target = maskrcnn_targets(torch.from_numpy(c)[None], torch.from_numpy(i)[None])[0]
    widths = target["boxes"][:, 2] - target["boxes"][:, 0]
    assert sorted(widths.tolist()) == [6.0, 16.0]  # 20 px x 0.8, and 8 px mirrored in x 0.8


def test_rasterise_paints_each_region_as_a_whole_image_mask_would(dataset):
    """Regions are drawn within their own boxes: the same pixels as painting each
    region's full-window mask in turn (later regions over earlier ones)."""
    from napari_bioanomaly.core.geometry import polygon_to_mask
    from napari_bioanomaly.ml.data import ImageCache, rasterise

    index, im = next((i, im) for i, im in enumerate(dataset.images) if len(im.regions) >= 2)
    classes = class_names(dataset)
    rows, cols = ImageCache(dataset, TINY)(index).shape
    first = im.regions[0]
    # a region over the next one, and one reaching past the image's corner
    extra = [
        Region(first.polygon + np.array([6.0, 6.0]), im.regions[1].label),
        Region(np.array([[-20.0, -20.0], [-20.0, 30.0], [30.5, 12.0]]), first.label),
    ]
    im = dataclasses.replace(im, regions=[*im.regions, *extra])
    for shape, origin in (((rows, cols), (0, 0)), ((64, 64), (-10, -10)),
                          ((50, 70), (rows - 30, cols - 40)), ((32, 32), (5, 9))):  # fmt: skip
        want_cls, want_inst = np.zeros(shape, np.int64), np.zeros(shape, np.int32)
        for i, region in enumerate(im.regions, start=1):
            mask = polygon_to_mask(region.polygon - origin, shape)
            want_cls[mask], want_inst[mask] = classes.index(region.label) + 1, i
        cls, inst = rasterise(im, classes, shape, origin)
        assert np.array_equal(cls, want_cls) and np.array_equal(inst, want_inst), origin
        assert want_cls.any() or origin[0] > 0  # the whole image and the corner hold regions


def test_tile_cache_stays_within_its_budget_and_workers_share_it(dataset, monkeypatch):
    from napari_bioanomaly.ml import data

    monkeypatch.setattr(data, "TILE_CACHE_BYTES", 1)  # images bigger than the budget
    sampler = TileSampler(dataset, list(range(len(dataset.images))), class_names(dataset), TINY)
    rng = np.random.default_rng(0)
    for _ in range(40):
        sampler.sample(rng)
    assert len(sampler.cache) == 8  # the last few images only
    monkeypatch.setattr(data, "TILE_CACHE_BYTES", 300 << 20)
    stream = data.TileStream(TileSampler(dataset, [0, 1], class_names(dataset), TINY), 0)

    class Worker:
        id, num_workers = 1, 3

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Worker)
    for _ in range(2):  # a persistent worker may start its stream again: still a third
        next(iter(stream))
        assert stream.sampler.cache.budget == 100 << 20


def test_tile_stream_batches_are_the_same_however_processes_and_workers_share_them(
    dataset, monkeypatch
):
    from napari_bioanomaly.ml import data

    sampler = TileSampler(dataset, list(range(len(dataset.images))), class_names(dataset), TINY)

    def batches(stream, worker=0, workers=1, n=3):
        class Worker:
            id, num_workers = worker, workers

        monkeypatch.setattr(torch.utils.data, "get_worker_info",
                            lambda: Worker if workers > 1 else None)  # fmt: skip
        it = iter(stream)
        return [next(it) for _ in range(n)]

    one = batches(data.TileStream(sampler, 5, batch=4), n=4)  # one process, no workers
    images, cls, inst = one[0]
    assert images.shape == (4, 1, TINY.tile, TINY.tile) and images.dtype == torch.float32
    assert cls.shape == inst.shape == (4, TINY.tile, TINY.tile)
    assert cls.dtype == torch.int64 and inst.dtype == torch.int32
    assert not torch.equal(one[0][0], one[1][0])  # different tiles in every batch
    # two workers: batches 0, 2 and 1, 3 of the same run
    even = batches(data.TileStream(sampler, 5, batch=4), 0, 2, n=2)
    odd = batches(data.TileStream(sampler, 5, batch=4), 1, 2, n=2)
    for want, got in zip(one, [even[0], odd[0], even[1], odd[1]], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    # two processes with half a batch each: every global batch holds the same tiles
    ranks = [batches(data.TileStream(sampler, 5, r, 2, batch=2), n=4) for r in (0, 1)]
    for step, want in enumerate(one):
        got = torch.cat([ranks[0][step][0], ranks[1][step][0]])
        assert sorted(map(float, got.sum((1, 2, 3)))) == sorted(map(float, want[0].sum((1, 2, 3))))
    # a stream started later (after a batch size change) goes on with the next tiles
    later = batches(data.TileStream(sampler, 5, start=4, batch=2), n=2)
    assert torch.equal(later[0][0], one[1][0][:2]) and torch.equal(later[1][0], one[1][0][2:])


def test_split_by_fraction_is_seeded_and_by_attribute(dataset):
    a = split(dataset, TINY)
    assert a == split(dataset, TINY)
    train_idx, val_idx = a
    assert sorted(train_idx + val_idx) == list(range(len(dataset.images)))
    assert any(dataset.images[i].regions for i in val_idx)
    cfg = TINY.replace(val_attribute="cell_line", val_values=("A549",))
    _, val = split(dataset, cfg)
    assert {dataset.images[i].file_attributes["cell_line"] for i in val} == {"A549"}


def test_tiles_are_single_channel_normalised_and_oversample_anomalies(dataset):
    cfg = TINY.replace(anomaly_fraction=1.0, augment=False)
    sampler = TileSampler(dataset, list(range(len(dataset.images))), class_names(dataset), cfg)
    rng = np.random.default_rng(0)
    tiles = [sampler.sample(rng) for _ in range(20)]
    assert all(t[0].shape == (64, 64) and t[0].dtype == np.float32 for t in tiles)
    assert sum(t[1].any() for t in tiles) >= 18  # centred on regions
    norm = normalise(np.arange(10000, dtype=np.uint16).reshape(100, 100))
    assert norm.min() == pytest.approx(0, abs=0.01) and norm.max() == pytest.approx(1, abs=0.01)


def test_unet_learns_and_checkpoint_reloads_identically(dataset, tmp_path):
    # 160 CPU steps on ten 128 px images; seed 2 (CPU runs are reproducible, see below)
    cfg = TrainConfig(
        epochs=8, steps_per_epoch=20, tile=64, batch=4, base_channels=8, lr=3e-3, seed=2
    )
    events, result = drain(train(dataset, cfg, tmp_path / "m.pt"))
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(epochs) == 8 and len([e for e in events if e.kind == "step"]) == 160
    assert epochs[-1].loss < epochs[0].loss * 0.8  # the loss falls
    assert epochs[0].val_f1 < 0.1  # an untrained model finds nothing
    assert max(e.val_iou for e in epochs) > 0.3  # stated floors
    assert max(e.val_f1 for e in epochs) > 0.2
    assert result.best == tmp_path / "m.pt" and result.last == tmp_path / "m.last.pt"
    ckpt = load_checkpoint(result.best)
    assert ckpt["classes"] == class_names(dataset)
    assert ckpt["normalisation"] == {"method": "percentile", "low": 0.1, "high": 99.9}
    # the best checkpoint: the best epoch's weights, the whole run's history
    assert [h["epoch"] for h in ckpt["history"]] == list(range(8))
    assert ckpt["epoch"] == ckpt["best_epoch"] and ckpt["history"][ckpt["epoch"]]["val_f1"] == max(
        h["val_f1"] for h in ckpt["history"]
    )
    x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32))
    a = models.predict_classes("unet", model_from_checkpoint(ckpt), x)
    b = models.predict_classes("unet", model_from_checkpoint(load_checkpoint(result.best)), x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cpu_runs_are_reproducible(dataset, tmp_path):
    _, r1 = drain(train(dataset, TINY, tmp_path / "a.pt"))
    _, r2 = drain(train(dataset, TINY, tmp_path / "b.pt"))
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]


def test_cancel_stops_within_one_step_and_leaves_a_valid_checkpoint(dataset, tmp_path):
    cancel = threading.Event()
    gen = train(dataset, TINY.replace(epochs=3), tmp_path / "c.pt", cancel=cancel)
    events = [next(gen) for _ in range(4)]  # 3 steps of epoch 0, its validation
    events.append(next(gen))  # first step of epoch 1
    cancel.set()
    more, result = drain(gen)
    assert result.cancelled and not [e for e in more if e.kind in ("step", "epoch")]
    ckpt = load_checkpoint(result.last)
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1
    # the best weights so far end as a finished run's do: usable, at their operating
    # point chosen on the validation images
    best = load_checkpoint(result.best)
    assert best["epoch"] == 0 and result.operating_point.source == "validation"
    assert best["operating_point"] == result.operating_point.to_dict()
    assert "operating_point_tta" not in best  # not after a stop: the run ends


def test_resume_continues_the_history(dataset, tmp_path):
    _, first = drain(train(dataset, TINY, tmp_path / "r.pt"))
    events, second = drain(
        train(dataset, TINY.replace(epochs=3), tmp_path / "r.pt", resume=first.last)
    )
    assert [e.epoch for e in events if e.kind == "epoch"] == [2]
    assert len(second.history) == 3 and second.history[:2] == first.history
    with pytest.raises(BioAnomalyError, match="cannot resume"):
        drain(train(dataset, TINY.replace(model="maskrcnn"), tmp_path / "x.pt", resume=first.last))
    # the resumed epochs are trained and scored as the earlier ones: other tiles, batches,
    # steps or validation images are refused, each named with the stopped run's value
    asked = TINY.replace(epochs=4, tile=96, steps_per_epoch=5, seed=1)
    with pytest.raises(BioAnomalyError, match=r"cannot resume with other settings than the "
                       r"stopped run's: steps_per_epoch 5 \(the stopped run: 3\); tile 96 "
                       r"\(the stopped run: 64\); seed 1 \(the stopped run: 0\)$"):  # fmt: skip
        drain(train(dataset, asked, tmp_path / "x.pt", resume=second.last))
    # a batch left auto is the stopped run's; how long it goes on may change
    events, third = drain(train(dataset, TINY.replace(epochs=4, batch=None, patience=7),
                                tmp_path / "r.pt", resume=second.last))  # fmt: skip
    ckpt = load_checkpoint(third.last)
    assert ckpt["config"] == {**load_checkpoint(second.last)["config"], "epochs": 4, "patience": 7}
    assert ckpt["config"]["batch"] == 2 and len(third.history) == 4
    # the forest and the memory bank are fitted in one pass: nothing to continue
    with pytest.raises(BioAnomalyError, match="forest is fitted in one pass"):
        drain(train(dataset, TINY.replace(model="forest"), tmp_path / "f.pt", resume=first.last))


def test_a_run_backs_up_only_the_files_from_before_it(dataset, tmp_path):
    # the best and last states are rewritten every epoch: a first run leaves no .bak
    drain(train(dataset, TINY, tmp_path / "b.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.last.pt", "b.pt"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # a second run to the same file keeps the first run's files, not its own epochs
    drain(train(dataset, TINY, tmp_path / "b.pt"))
    assert (tmp_path / "b.pt.bak").read_bytes() == before["b.pt"]
    assert (tmp_path / "b.last.pt.bak").read_bytes() == before["b.last.pt"]


def test_a_resumed_run_writes_the_best_model_to_its_own_file(dataset, tmp_path):
    # a learning rate this small cannot change the validation score: no epoch beats the first
    cfg = TINY.replace(lr=1e-12)
    _, first = drain(train(dataset, cfg, tmp_path / "a.pt"))
    events, resumed = drain(train(dataset, cfg.replace(epochs=3), tmp_path / "new.pt",
                                  resume=first.last))  # fmt: skip
    # the .last.pt holds the last weights; the earlier best (a.pt beside it) is the best
    assert resumed.best == tmp_path / "new.pt"
    best, earlier = load_checkpoint(resumed.best), load_checkpoint(first.best)
    assert best["epoch"] == earlier["epoch"] == 0 and resumed.best_f1 == first.best_f1
    assert all(torch.equal(best["state_dict"][k], v) for k, v in earlier["state_dict"].items())
    assert best["operating_point"] and len(best["history"]) == 3
    assert not [e for e in events if e.kind == "warning"]
    # without that file the best epoch of the resumed run is kept, and the run says so
    (tmp_path / "a.pt").unlink()
    events, again = drain(train(dataset, cfg.replace(epochs=4), tmp_path / "b.pt",
                                resume=first.last))  # fmt: skip
    assert again.best == tmp_path / "b.pt" and load_checkpoint(again.best)["epoch"] == 2
    assert again.best_f1 == again.history[2]["val_score"]
    warning = next(e.message for e in events if e.kind == "warning")
    assert "the best epoch so far, epoch 1 (" in warning and f"{tmp_path / 'a.pt'}" in warning
    assert "kept the best epoch of this run instead, epoch 3 (" in warning
    # a run with no epoch left to train says so instead of writing nothing
    with pytest.raises(BioAnomalyError, match=r"a\.last\.pt: its 2 epochs are done.*--epochs 3"):
        drain(train(dataset, cfg, tmp_path / "c.pt", resume=first.last))


def test_maskrcnn_trains_a_few_steps_with_one_channel(dataset, tmp_path):
    model = models.build("maskrcnn", 3, 64)
    assert model.backbone.body.conv1.in_channels == 1
    # the heads train on a tile's share of proposals, not torchvision's 512 per photograph
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == models.ROIS_PER_IMAGE == 128
    cfg = TINY.replace(model="maskrcnn", epochs=1, steps_per_epoch=2, batch=1, val_fraction=0.1)
    events, result = drain(train(dataset, cfg, tmp_path / "mr.pt"))
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 2 and all(np.isfinite(e.loss) for e in steps)
    assert load_checkpoint(result.last)["config"]["model"] == "maskrcnn"


def test_out_of_memory_halves_the_batch_then_explains(dataset, tmp_path, monkeypatch):
    real = models.loss
    calls = {"n": 0}
    sizes = []  # tiles in each batch the loss is given

    def flaky(*args, **kwargs):
        calls["n"] += 1
        sizes.append(len(args[2]))
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "loss", flaky)
    events, _ = drain(train(dataset, TINY.replace(epochs=1), tmp_path / "o.pt"))
    warning = next(e for e in events if e.kind == "warning")
    assert "batch halved to 1" in warning.message
    assert all(e.batch == 1 for e in events if e.kind == "step")
    assert sizes[0] == 2 and set(sizes[1:]) == {1}  # the tiles are drawn at the new size

    def always(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(models, "loss", always)
    with pytest.raises(BioAnomalyError, match=r"out of memory .* batch 1 .*smaller tiles"):
        drain(train(dataset, TINY.replace(batch=1), tmp_path / "o2.pt"))


def test_bad_input_is_named(dataset, tmp_path, train_dir):
    for im in dataset.images:
        im.regions = []
    with pytest.raises(BioAnomalyError, match="no annotated anomalies"):
        drain(train(dataset, TINY, tmp_path / "n.pt"))
    broken = tmp_path / "broken"
    shutil.copytree(train_dir, broken)
    (broken / "img_003.tif").write_bytes(b"not a tiff")
    ds, _ = annotations.load(broken / "annotations.json", read_images=False)
    with pytest.raises(BioAnomalyError, match=r"img_003\.tif: cannot read image header.*"
                       r"leave them out with --exclude-qc"):  # fmt: skip
        drain(train(ds, TINY, tmp_path / "b.pt"))
    # as it says: flagged unreadable and left out, wherever the split put it
    for seed in (0, 1, 2):
        events, result = drain(train(ds, TINY.replace(exclude_qc=True, seed=seed, epochs=1),
                                     tmp_path / f"q{seed}.pt"))  # fmt: skip
        said = [e.message for e in events if e.kind == "warning"]
        assert result.best is not None and any("img_003.tif (unreadable)" in m for m in said)


def test_damaged_images_are_all_named_before_training_or_at_once_when_found(tmp_path, train_dir):
    import tifffile

    damaged = tmp_path / "damaged"
    shutil.copytree(train_dir, damaged)
    # cut short (its header whole) and empty: both named before training, with the way out
    (damaged / "img_003.tif").write_bytes((damaged / "img_003.tif").read_bytes()[:500])
    (damaged / "img_005.tif").write_bytes(b"")
    ds, _ = annotations.load(damaged / "annotations.json", read_images=False)
    with pytest.raises(BioAnomalyError) as info:
        drain(train(ds, TINY, tmp_path / "a.pt"))
    said = str(info.value)
    assert (
        said.startswith("2 images cannot be read: ") and "leave them out with --exclude-qc" in said
    )
    assert "img_003.tif: cannot read image (file cut short: 500 bytes" in said
    assert "img_005.tif: empty file" in said
    # damaged inside, its size whole: found only when read, then every image is read and
    # all those that cannot be are named, with the way out
    shutil.copytree(train_dir, damaged, dirs_exist_ok=True)
    for name in ("img_004.tif", "img_007.tif"):
        pixels = tifffile.imread(damaged / name)
        tifffile.imwrite(damaged / name, pixels, compression="zlib")
        raw = bytearray((damaged / name).read_bytes())
        raw[-3000:-2000] = bytes(1000)  # inside the compressed pixels
        (damaged / name).write_bytes(bytes(raw))
    ds, _ = annotations.load(damaged / "annotations.json", read_images=False)
    events = []
    with pytest.raises(BioAnomalyError) as info:
        gen = train(ds, TINY, tmp_path / "b.pt")
        while True:
            events.append(next(gen))
    said = str(info.value)
    assert (
        said.startswith("2 images cannot be read: ") and "leave them out with --exclude-qc" in said
    )
    assert "img_004.tif: cannot read image (" in said and "img_007.tif: cannot read image (" in said
    assert any("reading every training and validation image" in e.message for e in events
               if e.kind == "warning")  # fmt: skip


def test_untrusted_checkpoints_stay_data(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-bioanomaly-checkpoint", "x": Evil()}, path)
    with pytest.raises(BioAnomalyError, match="refused: it holds objects other than tensors"):
        load_checkpoint(path)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(BioAnomalyError, match="not a napari-bioanomaly checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_cli_train(train_dir, tmp_path, capsys):
    code = main(
        [
            "train",
            "--annotations",
            str(train_dir / "annotations.json"),
            "--out",
            str(tmp_path / "cli.pt"),
            "--epochs",
            "1",
            "--steps",
            "2",
            "--tile",
            "64",
            "--batch",
            "2",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and "best model" in out and "epoch 1/1" in err
    # the epoch's line shows the score the best model is chosen by, as the result names it
    best = out.split("best model (")[1].split(";")[0]
    assert best.startswith("validation F1 (mean of instance and pixel F1) 0.")
    epoch_line = next(line for line in err.splitlines() if line.startswith("epoch 1/1"))
    assert f"  {best} (instance F1 0." in epoch_line
    assert load_checkpoint(tmp_path / "cli.pt")["config"]["tile"] == 64
    # resumed into a new file, with no epoch beating the earlier best: that best is written
    resumed = tmp_path / "resumed.pt"
    code = main(["train", "--annotations", str(train_dir / "annotations.json"), "--out",
                 str(resumed), "--resume", str(tmp_path / "cli.last.pt"), "--epochs", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "epoch 2/2" in err
    assert out.strip().endswith(f"): {resumed}; last state: {tmp_path / 'resumed.last.pt'}")
    assert load_checkpoint(resumed)["epoch"] in (0, 1)
    # with the stopped run's settings, not the options' defaults, and it says so
    stopped = load_checkpoint(tmp_path / "cli.last.pt")["config"]
    assert load_checkpoint(resumed)["config"] == {**stopped, "epochs": 2}
    assert "batches of 2 tiles of 64 px" in err
    said = next(line for line in err.splitlines() if line.startswith("resuming "))
    assert said == (f"resuming {tmp_path / 'cli.last.pt'} with the settings of the stopped run "
                    "(--model unet --steps 2 --tile 64 --batch 2 --base-channels 8)"
                    "; changed: --epochs 2 (the stopped run: 1)")  # fmt: skip
    # an option it may not change, given otherwise, is refused naming both values; one
    # given as the stopped run had it is not
    code = main(["train", "--annotations", str(train_dir / "annotations.json"), "--out",
                 str(tmp_path / "again.pt"), "--resume", str(tmp_path / "resumed.last.pt"),
                 "--epochs", "3", "--tile", "48", "--batch", "2", "--class-balance"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "again.pt").exists()
    assert (
        "--tile 48 (the stopped run: 64); --class-balance (the stopped run: without it): leave them out"
        in err
    )
    assert "--batch" not in err
    # a larger tile, which the stopped run did not fit to these images (larger than it), is
    # refused by training, before it starts
    code = main(["train", "--annotations", str(train_dir / "annotations.json"), "--out",
                 str(tmp_path / "again.pt"), "--resume", str(tmp_path / "resumed.last.pt"),
                 "--epochs", "3", "--tile", "96"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "again.pt").exists()
    assert (
        "cannot resume with other settings than the stopped run's: tile 96 (the stopped run: 64)"
        in err
    )
    code = main(
        ["train", "--annotations", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x.pt")]
    )
    assert code == 2 and "nope.json: file not found" in capsys.readouterr().err


def test_cli_resume_takes_the_command_that_started_the_run(train_dir, tmp_path, capsys):
    # --tile 256 is fitted to the 128 px images (80 px) and the checkpoint keeps 80: the
    # same command with --resume added goes on, it is not refused as another tile
    folder = tmp_path / "ds"
    shutil.copytree(train_dir, folder)
    command = ["train", "--annotations", str(folder / "annotations.json"), "--out",
               str(tmp_path / "m.pt"), "--steps", "1", "--tile", "256", "--batch", "2",
               "--base-channels", "8"]  # fmt: skip
    assert main([*command, "--epochs", "1"]) == 0
    last = tmp_path / "m.last.pt"
    assert load_checkpoint(last)["config"]["tile"] == 80
    capsys.readouterr()
    assert main([*command, "--epochs", "2", "--resume", str(last)]) == 0
    err = capsys.readouterr().err
    said = next(line for line in err.splitlines() if line.startswith("resuming "))
    assert "--tile 80 " in said and "256" not in said and "tiles of 80 px" in err
    assert load_checkpoint(last)["config"]["tile"] == 80 and "epoch 2/2" in err
    # an image that cannot be read any more: the way out the error gives is taken by a
    # resumed run, which says that flagged images are left out from now on
    (folder / "img_003.tif").write_bytes(b"not a tiff")
    assert main([*command, "--epochs", "3", "--resume", str(last)]) == 2
    err = capsys.readouterr().err
    assert "img_003.tif: cannot read image header" in err
    assert "leave them out with --exclude-qc" in err
    assert main([*command, "--epochs", "3", "--resume", str(last), "--exclude-qc"]) == 0
    err = capsys.readouterr().err
    said = next(line for line in err.splitlines() if line.startswith("resuming "))
    assert said.endswith("; changed: --epochs 3 (the stopped run: 2), --exclude-qc (the stopped "
                         "run: without it; images with quality flags are left out of training "
                         "and validation from now on)")  # fmt: skip
    assert "img_003.tif (unreadable)" in err and "epoch 3/3" in err
    assert load_checkpoint(last)["config"]["exclude_qc"] is True


def test_train_refuses_an_out_folder_it_cannot_write_before_training(train_dir, tmp_path,
                                                                     capsys, monkeypatch):  # fmt: skip
    """It trained to the end, then failed as it saved, naming a hidden temporary file."""
    from napari_bioanomaly.core import paths

    ann = str(train_dir / "annotations.json")
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "model.pt"
    assert main(["train", "--annotations", ann, "--out", str(out), "--model", "forest"]) == 2
    _, err = capsys.readouterr()
    assert f"--out: cannot write the model into {out.parent} (" in err and "is a file" in err
    assert "choose another --out" in err and "step" not in err  # nothing trained
    monkeypatch.setattr(paths, "unwritable_reason", lambda folder: "Permission denied")
    out = tmp_path / "ro" / "model.pt"
    assert main(["train", "--annotations", ann, "--out", str(out), "--model", "forest"]) == 2
    _, err = capsys.readouterr()
    assert f"cannot write the model into {out.parent} (Permission denied)" in err
    assert main(["crossval", "--annotations", ann, "--out", str(tmp_path / "cv"),
                 "--model", "forest"]) == 2  # fmt: skip
    assert f"cannot write the fold models into {tmp_path / 'cv'}" in capsys.readouterr().err
    # predict (and its maps) and qc --save: refused before any image is read (predict failed
    # after its first image, qc --save after reading every image)
    pred = tmp_path / "ro" / "pred.json"
    argv = ["predict", "--model", str(tmp_path / "none.pt"), "--images", str(train_dir),
            "--out", str(pred)]  # fmt: skip
    assert main(argv) == 2
    assert f"cannot write the predictions into {pred.parent} (Permission denied)" in (
        capsys.readouterr().err
    )
    assert main(["qc", str(train_dir), "--save"]) == 2
    err = capsys.readouterr().err
    assert "--save: cannot write the flags into" in err and "Permission denied" in err
    assert "1/" not in err  # no image read


def test_validation_images_weight_the_votes_of_a_collapsed_class(tmp_path):
    """The trainer's chooser sees the validation images' classes: a model that calls the
    true dots ``patch`` (but ranks them) gets vote weights that call them ``dot``."""
    import imageio.v3 as iio

    from napari_bioanomaly.core.model import Dataset, ImageRecord
    from napari_bioanomaly.ml.validation import choose_operating_point
    from tests.core.test_operating import collapsed_dots

    probs, truth, classes = collapsed_dots()
    regions = []
    for k in range(1, int(truth.max()) + 1):
        rows, cols = np.nonzero(truth == k)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        square = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)
        label = "patch" if classes[r0, c0] == 1 else "dot"
        regions.append(Region(square, label, shape="polygon"))
    iio.imwrite(tmp_path / "a.png", np.zeros(truth.shape, np.uint8))
    ds = Dataset([ImageRecord("a.png", truth.shape, regions=regions)], root=tmp_path,
                 classes=["patch", "dot"])  # fmt: skip
    point = choose_operating_point(lambda image: probs, ds, [0], ["patch", "dot"])
    assert point.vote_weights == {"patch": pytest.approx(2**-0.5)}


def test_best_checkpoint_holds_the_operating_point_that_predict_uses(dataset, train_dir, tmp_path):
    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml.predict import Predictor, predict_dataset, run

    events, result = drain(train(dataset, TINY, tmp_path / "op.pt"))
    ckpt = load_checkpoint(result.best)
    point = OperatingPoint.from_dict(ckpt["operating_point"])
    assert point.source == "validation" and point == result.operating_point
    assert any("operating point: threshold" in e.message for e in events if e.kind == "status")
    assert (
        result.best_label == ckpt["best_label"] == "validation F1 (mean of instance and pixel F1)"
    )
    assert result.best_text().startswith("validation F1 (mean of instance and pixel F1) 0.")
    # predict takes the stored point unless told otherwise: a huge minimum area keeps nothing
    ckpt["operating_point"] = OperatingPoint(0.01, 1e9, source="validation").to_dict()
    torch.save(ckpt, tmp_path / "edited.pt")
    predictor = Predictor.load(tmp_path / "edited.pt", "cpu")
    assert predictor.operating_point.min_area == 1e9
    assert run(predict_dataset(predictor, dataset)).regions == []
    assert run(predict_dataset(predictor, dataset, threshold=0.01, min_area=0)).regions
    ckpt["operating_point"] = {"threshold": 7, "min_area": 0}
    torch.save(ckpt, tmp_path / "bad.pt")
    bad = r"bad\.pt: cannot be used: operating_point: operating threshold"
    with pytest.raises(BioAnomalyError, match=bad):
        Predictor.load(tmp_path / "bad.pt", "cpu")


def test_automatic_length_fits_the_time_budget(dataset, tmp_path):
    # no epochs given: the first epoch is timed; a budget far below it gives the minimum
    cfg = TINY.replace(epochs=None, budget_min=1e-4, patience=0)
    events, result = drain(train(dataset, cfg, tmp_path / "auto.pt"))
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(epochs) == 3 and epochs[-1].epochs == 3
    assert load_checkpoint(result.last)["planned_epochs"] == 3


def test_early_stopping_keeps_the_best_and_says_why(dataset, tmp_path):
    # a learning rate this small cannot change the validation F1: no epoch beats the first
    cfg = TINY.replace(epochs=8, lr=1e-12, patience=2)
    events, result = drain(train(dataset, cfg, tmp_path / "es.pt"))
    assert [e.epoch for e in events if e.kind == "epoch"] == [0, 1, 2]
    stop = next(e for e in events if "stopping early" in e.message)
    assert (
        "validation F1 (mean of instance and pixel F1) has not improved for 2 epochs"
        in stop.message
    )
    assert load_checkpoint(result.best)["epoch"] == 0


def test_tiles_shrink_to_small_images(dataset):
    from napari_bioanomaly.ml.data import check_images, fit_tile

    check_images(dataset, list(range(len(dataset.images))))  # reads the 128 px shapes
    # a 256 px tile would hold the whole 128 px image: two thirds of its side instead
    assert fit_tile(TINY.replace(tile=256), dataset, [0, 1]).tile == 80
    assert fit_tile(TINY.replace(tile=128), dataset, [0, 1]).tile == 80
    assert fit_tile(TINY, dataset, [0, 1]).tile == 64  # crops the images already: kept


@pytest.mark.parametrize("autocontext", [False, True])
def test_forest_shows_progress_and_stops_during_the_fit(dataset, tmp_path, autocontext):
    cancel = threading.Event()
    cfg = TINY.replace(model="forest", autocontext=autocontext)
    gen = train(dataset, cfg, tmp_path / "f.pt", cancel=cancel)
    while True:
        event = next(gen)
        if event.message.endswith("trees"):
            break
    # one step per image read and per eight trees; two stages read the images twice
    n = event.step - 1
    assert event.message == "8 trees"
    assert event.steps == (2 * n + 16 if autocontext else n + 8)
    cancel.set()
    more, result = drain(gen)
    assert result.cancelled and more == [] and not (tmp_path / "f.pt").exists()


def test_two_stage_forest_reports_each_stage_and_ends_at_its_total(dataset, tmp_path):
    events, result = drain(train(dataset, TINY.replace(model="forest"), tmp_path / "f.pt"))
    messages = [e.message for e in events]
    assert any(m.startswith("first stage: 32 trees on the even half") for m in messages)
    assert any(m.startswith("first-stage probabilities of ") for m in messages)
    assert any(m.startswith("second stage: 64 trees") for m in messages)
    steps = [e.step for e in events if e.kind == "step"]
    assert steps == sorted(steps) and steps[-1] == events[-1].steps
    forest = load_checkpoint(result.best)["forest"]
    assert forest["first"]["left"].shape[0] == 64 and forest["left"].shape[0] == 64


def test_validation_tiles_cover_whole_images(dataset):
    from napari_bioanomaly.ml.data import validation_tiles

    # 128 px images in 96 px tiles: tiles at 0 and 32 on each axis, the last flush with the end
    tiles = validation_tiles(dataset, [0], class_names(dataset), TINY.replace(tile=96))
    assert len(tiles) == 4 and all(t[0].shape == (96, 96) for t in tiles)


def test_cli_length_options_reach_the_config(tmp_path, capsys):
    from napari_bioanomaly.cli import _train_config, build_parser

    base = ["train", "--annotations", "a.json", "--out", "m.pt"]
    config = _train_config(build_parser().parse_args(base))
    assert config.epochs is None and config.budget_min is None and config.patience == 25
    config = _train_config(build_parser().parse_args([*base, "--budget", "5", "--patience", "0"]))
    assert config.budget_min == 5.0 and config.patience == 0
    assert main(["sample", str(tmp_path / "h"), "--images", "2", "--size", "64",
                 "--difficulty", "hard"]) == 0  # fmt: skip
    ds, _ = annotations.load(tmp_path / "h" / "annotations.json")
    assert len(ds.images) == 2 and "wrote 2 images" in capsys.readouterr().out
    assert main(["train", *base[1:], "--budget", "0"]) == 2
    assert "budget_min must be > 0" in capsys.readouterr().err


def test_a_step_the_gradient_scaler_skips_is_reported_so_the_schedule_waits():
    from napari_bioanomaly.ml.train_network import _optimise

    w = torch.nn.Parameter(torch.tensor([1.0]))
    optimiser = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # 4 x 2^127 overflows
    assert _optimise(scaler, optimiser, 4 * w.sum()) is False
    assert float(w.detach()) == 1.0 and scaler.get_scale() == 2.0**126  # skipped, halved
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    assert _optimise(scaler, optimiser, 4 * w.sum()) is True
    assert float(w.detach()) == pytest.approx(0.6)  # stepped: 1 - 0.1 x 4
    off = torch.amp.GradScaler("cpu", enabled=False)  # float32, bfloat16: no scaler
    assert _optimise(off, optimiser, 4 * w.sum()) is True


def test_weight_average_follows_the_trained_weights_with_a_lag():
    from napari_bioanomaly.ml.averaging import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.99)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked.fill_(7)
    average.update(net)  # step 1: decay (1 + 1) / (10 + 1)
    d = 2 / 11
    assert torch.allclose(average.module[0].weight, d * start + (1 - d) * (start + 1))
    assert int(average.module[1].num_batches_tracked) == 7  # counters are copied
    assert not average.module[0].weight.requires_grad and not average.module.training
    for _ in range(2000):
        average.update(net)
    assert torch.allclose(average.module[0].weight, net[0].weight)  # converges


def test_resumed_run_keeps_the_weight_average(dataset, tmp_path):
    _, straight = drain(train(dataset, TINY.replace(epochs=3), tmp_path / "s.pt"))
    cancel = threading.Event()
    gen = train(dataset, TINY.replace(epochs=3), tmp_path / "r.pt", cancel=cancel)
    [next(gen) for _ in range(8)]  # two epochs of 3 steps and a validation each
    cancel.set()
    _, first = drain(gen)
    _, resumed = drain(train(dataset, TINY.replace(epochs=3), tmp_path / "r.pt",
                             resume=first.last))  # fmt: skip
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert a["ema_steps"] == b["ema_steps"] == 9
    for key in ("state_dict", "train_state_dict"):
        assert all(torch.allclose(a[key][k], b[key][k], atol=1e-6) for k in a[key])
    # the kept weights are the average, not the last step's
    assert not all(
        torch.equal(a["state_dict"][k], a["train_state_dict"][k]) for k in a["state_dict"]
    )
    plain = load_checkpoint(drain(train(dataset, TINY.replace(ema=0.0), tmp_path / "p.pt"))[1].best)
    assert "train_state_dict" not in plain and "ema_steps" not in plain


def test_mixed_precision_follows_the_device(monkeypatch):
    from napari_bioanomaly.ml import device as dev

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.autocast_dtype(cuda, True) == torch.float16
    assert dev.autocast_dtype(cuda, False) is None
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.autocast_dtype(cpu, True) == torch.bfloat16
    assert dev.autocast_dtype(cpu, True, "maskrcnn") is None  # float32 on the CPU
    assert dev.autocast_dtype(cpu, False) is None
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)  # emulated: slower than float32
    assert dev.autocast_dtype(cpu, True) is None


def test_loader_processes_are_none_on_a_cpu_and_a_few_per_gpu_process(monkeypatch):
    from napari_bioanomaly.ml import device as dev

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert dev.loader_workers(None, cpu) == 0  # they would take the training's cores
    assert dev.loader_workers(3, cpu) == 3  # asked for: given
    assert dev.loader_workers(None, cuda) == dev.GPU_LOADER_WORKERS
    assert dev.loader_workers(None, cuda, processes=8) == 1  # 16 cores, 8 GPUs: 2 each
    assert dev.loader_workers(0, cuda) == 0
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert dev.loader_workers(None, cuda) == 0  # one core: the training thread draws


def test_a_run_without_a_batch_takes_the_devices_and_keeps_it(dataset, tmp_path):
    from napari_bioanomaly.ml import device as dev

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.default_batch(cpu) == dev.CPU_BATCH == 4
    assert dev.default_batch(cuda) == dev.GPU_BATCH == 32
    assert dev.default_batch(cuda, processes=2) == 64  # per GPU
    assert dev.default_batch(cuda, model="maskrcnn") == 4  # not measured larger: as before
    events, result = drain(train(dataset, TINY.replace(batch=None, epochs=1), tmp_path / "m.pt"))
    assert {e.batch for e in events if e.kind == "step"} == {4}  # trained on this CPU
    assert load_checkpoint(result.best)["config"]["batch"] == 4  # kept as trained
    said = [e.message for e in events if e.kind == "status"]  # and the run says so
    assert "training on cpu: batches of 4 tiles of 64 px, drawn in the training thread" in said


def test_thin_structures_are_chosen_and_named_by_pixel_f1(tmp_path):
    """Cracks (2 px dark lines) everywhere: the operating point and the best score are
    pixel F1, and every message says so."""
    import tifffile

    from napari_bioanomaly.core.model import Dataset, ImageRecord, Region
    from napari_bioanomaly.ml.events import VAL_PIXEL_F1

    rng = np.random.default_rng(0)
    images = []
    for i in range(8):
        img = rng.normal(120, 6, (96, 96)).astype(np.float32)
        r = 10 + 9 * i
        img[r : r + 2, 8:88] -= 60
        tifffile.imwrite(tmp_path / f"c{i}.tif", img.clip(0, 255).astype(np.uint8))
        line = [(8.0, r), (88.0, r), (88.0, r + 2.0), (8.0, r + 2.0)]
        images.append(ImageRecord(f"c{i}.tif", (96, 96), regions=[Region(line, "crack")]))
    ds = Dataset(images=images, root=tmp_path, classes=["crack"])
    events, result = drain(
        train(ds, TrainConfig(model="forest", val_fraction=0.5), tmp_path / "f.pt")
    )
    assert result.operating_point.criterion == "pixel"
    assert result.best_label == load_checkpoint(tmp_path / "f.pt")["best_label"] == VAL_PIXEL_F1
    assert result.best_text().startswith("validation pixel F1 (thin structures) 0.")
    assert any("thin structures" in (e.message or "") for e in events if e.kind == "status")
    # default: filters and context, two stages (the second also sees 8 probability features)
    forest = load_checkpoint(tmp_path / "f.pt")["forest"]
    assert (forest["feature_set"], forest["n_features"]) == ("context", 31)
    assert (forest["first"]["feature_set"], forest["first"]["n_features"]) == ("context", 23)
    drain(train(ds, TrainConfig(model="forest", val_fraction=0.5, features="filters",
                                autocontext=False), tmp_path / "filters.pt"))  # fmt: skip
    forest = load_checkpoint(tmp_path / "filters.pt")["forest"]
    assert (forest["feature_set"], forest["n_features"]) == ("filters", 20)
    assert "first" not in forest


def _train_until(argv: list[str], sigints: int, sig: int = signal.SIGINT
                 ) -> subprocess.CompletedProcess:  # fmt: skip
    """``napari-bioanomaly train ARGV`` in a subprocess, sent ``sigints`` Ctrl+C (SIGINT;
    or ``sig``) once its first epoch has ended, each further one as soon as the run says it
    is stopping (a stopped run of this size ends within a tenth of a second: a later
    signal would find it gone)."""
    exe = [sys.executable, "-m", "napari_bioanomaly.cli", "train", *argv]
    with subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}) as proc:  # fmt: skip
        said = []
        for sent in range(sigints):
            ready = "epoch 1/" if sent == 0 else ": stopping training after the current step"
            for line in proc.stderr:
                said.append(line)
                if ready in line:
                    break
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(exe, proc.returncode, out, "".join(said) + err)


def test_ctrl_c_stops_cli_training_as_the_stop_button_does(dataset_dir, tmp_path):
    """The first Ctrl+C ends ``train`` after the current step as Stop does: the best weights
    so far at their operating point, exit code 130 (it exited 0: a batch system counted a
    job it ended as finished); a second one interrupts at once (130)."""
    model = tmp_path / "m.pt"
    argv = ["--annotations", str(dataset_dir / "annotations.json"), "--out", str(model),
            "--epochs", "200", "--steps", "2", "--tile", "64", "--batch", "2",
            "--base-channels", "8"]  # fmt: skip
    done = _train_until(argv, 1)
    assert done.returncode == 130, done.stderr[-2000:]
    assert (
        "stopping training after the current step (Ctrl+C again to interrupt at once)"
        in done.stderr
    )
    assert done.stdout.startswith("stopped: best model (validation ") and str(model) in done.stdout
    ckpt = load_checkpoint(model)
    assert ckpt["operating_point"]["source"] == "validation" and ckpt["planned_epochs"] > 1
    assert len(load_checkpoint(tmp_path / "m.last.pt")["history"]) < 200
    for _ in range(3):  # again where the stopped run ended before the second signal came
        done = _train_until([*argv[:3], str(tmp_path / "n.pt"), *argv[4:]], 2)
        if "train: interrupted" in done.stderr:  # else it came too late: stopped, or killed
            break
    assert done.returncode == 130 and "train: interrupted" in done.stderr
    # SIGTERM (kill, a batch system ending the job) stops the same way
    done = _train_until([*argv[:3], str(tmp_path / "k.pt"), *argv[4:]], 1, signal.SIGTERM)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "SIGTERM: stopping training after the current step" in done.stderr
    assert done.stdout.startswith("stopped: best model (validation ")
    assert load_checkpoint(tmp_path / "k.pt")["operating_point"]["source"] == "validation"


def test_ctrl_c_within_a_run_asks_it_to_stop_then_interrupts(capsys):
    """train, pretrain and crossval run within _ctrl_c_stops: a first SIGINT sets their
    cancel event and says so, a second raises KeyboardInterrupt; the handler is restored."""
    from napari_bioanomaly._cli_ml import _ctrl_c_stops

    before = signal.getsignal(signal.SIGINT)
    cancel = threading.Event()
    with pytest.raises(KeyboardInterrupt), _ctrl_c_stops(cancel, "cross-validation"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert cancel.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert "Ctrl+C: stopping cross-validation after the current step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


def test_under_torchrun_the_launchers_copy_of_a_stop_is_not_a_second_one(monkeypatch, capsys):
    """A terminal's Ctrl+C reaches torchrun's workers twice (from the terminal, then from
    torchrun passing it on): the copy that follows at once does not interrupt; a later
    one does. SIGTERM asks for the stop as Ctrl+C does; both handlers are restored."""
    from napari_bioanomaly import _cli_ml

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setattr(_cli_ml, "_FORWARDED_WITHIN", 0.5)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cancel = threading.Event()
    with pytest.raises(KeyboardInterrupt), _cli_ml._ctrl_c_stops(cancel, "training"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert cancel.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # torchrun's copy, within the window: ignored
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGINT)  # the user's second Ctrl+C
        time.sleep(1)
    assert "SIGTERM: stopping training after the current step" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_threads_sets_what_torch_computes_with_for_every_command_that_computes(tmp_path, capsys):
    """The CLI computed with one thread per core whatever else ran: under a second job two
    threads ran 18 times slower than one (2-core VM). ``--threads`` gives each its share."""
    before = torch.get_num_threads()
    try:
        for command in (["train", "--annotations", str(tmp_path / "none.json")],
                        ["crossval", "--annotations", str(tmp_path / "none.json")],
                        ["pretrain", "--annotations", str(tmp_path / "none.json")],
                        ["predict", "--model", str(tmp_path / "m.pt"), "--images",
                         str(tmp_path)],
                        ["choose-point", str(tmp_path / "m.pt"), "--annotations",
                         str(tmp_path / "none.json")]):  # fmt: skip
            torch.set_num_threads(2)
            out = [] if command[0] == "choose-point" else ["--out", str(tmp_path / "o")]
            assert main([*command, *out, "--threads", "1"]) != 0  # no such file: said
            assert torch.get_num_threads() == cpu_threads() == 1, command[0]
        with pytest.raises(SystemExit):
            main(["predict", "--model", "m.pt", "--images", ".", "--out", "p.json",
                  "--threads", "0"])  # fmt: skip
        assert "a number of threads is a whole number, 1 or more" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
        set_cpu_threads(None)


def test_threads_bound_the_forest_and_the_line_cue_too(dataset_dir, tmp_path, monkeypatch):
    """--threads bounded torch alone: the forest grew and predicted its trees on every
    core (scikit-learn's n_jobs=-1, a pool of os.cpu_count() threads), and the line cue's
    FFTs ran on up to 8."""
    import sklearn.ensemble
    from scipy import fft

    from napari_bioanomaly.core import threads
    from napari_bioanomaly.ml import forest

    asked = []
    real_forest, real_pool, real_workers = (sklearn.ensemble.RandomForestClassifier,
                                            forest.ThreadPoolExecutor, fft.set_workers)  # fmt: skip

    class Forest(real_forest):
        def fit(self, *args, **kwargs):
            asked.append(("trees", self.n_jobs))
            return super().fit(*args, **kwargs)

    def pool(max_workers=None):
        asked.append(("pool", max_workers))
        return real_pool(max_workers=max_workers)

    def workers(n):
        asked.append(("fft", n))
        return real_workers(n)

    monkeypatch.setattr(sklearn.ensemble, "RandomForestClassifier", Forest)
    monkeypatch.setattr(forest, "ThreadPoolExecutor", pool)
    monkeypatch.setattr(fft, "set_workers", workers)
    before = torch.get_num_threads()
    try:
        argv = ["train", "--annotations", str(dataset_dir / "annotations.json"), "--out",
                str(tmp_path / "f.pt"), "--model", "forest", "--threads", "1"]  # fmt: skip
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
        threads.set_cpu_threads(None)
    assert {what for what, _ in asked} == {"trees", "pool", "fft"}
    assert all(n == 1 for _, n in asked), asked
    assert threads.cpu_threads() == threads.available() >= 1


def test_a_forest_says_no_last_state_to_resume(train_dir, tmp_path, capsys):
    """Its last line ended "last state: ....last.pt", which resuming refuses (a forest is
    fitted in one pass)."""
    out = tmp_path / "f.pt"
    ann = str(train_dir / "annotations.json")
    assert main(["train", "--annotations", ann, "--out", str(out), "--model", "forest"]) == 0
    said = capsys.readouterr().out
    assert f"): {out}" in said and "last state" not in said
