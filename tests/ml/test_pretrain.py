"""Self-supervised pretraining: masked blocks, learning to restore them, and a U-Net that
starts from the weights (from Python and the CLI), with bad files refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import data
from napari_bioanomaly.ml.checkpoint import load_checkpoint, load_pretrained, pretrained_width
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.models import UNet
from napari_bioanomaly.ml.pretrain import mask_blocks, pretrain, reconstruction_loss

TINY = TrainConfig(epochs=4, steps_per_epoch=15, tile=64, batch=4, base_channels=4, lr=3e-3)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain")
    write_sample(folder, SampleConfig(n_images=6, size=128, seed=3))
    ds, _ = annotations.load(folder / "annotations.json")
    return folder, ds


def drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_blocks_are_blanked_and_the_rest_kept():
    images = torch.rand(8, 1, 64, 64) + 0.5
    masked, mask = mask_blocks(images, torch.Generator().manual_seed(0))
    assert 0.35 < float(mask.mean()) < 0.65  # half of the 16 px blocks, by chance
    assert bool((masked[mask > 0] == 0).all())
    assert torch.equal(masked[mask == 0], images[mask == 0])
    # blocks: each 16 x 16 square is blanked whole or not at all
    blocks = mask[:, 0].reshape(8, 4, 16, 4, 16)
    assert bool((blocks.amin(dim=(2, 4)) == blocks.amax(dim=(2, 4))).all())


def test_shares_of_a_batch_average_to_the_batch_loss_and_gradient():
    """What each process of a distributed pretraining computes (its share of the global
    batch) averages to the whole batch's loss and gradient, as DistributedDataParallel
    averages them."""
    torch.manual_seed(0)
    model = UNet(0, base=4)
    images = torch.rand(4, 1, 32, 32)

    def loss_and_grad(share):
        model.zero_grad()
        loss = reconstruction_loss(model, images, torch.Generator().manual_seed(0), share)
        loss.backward()
        return float(loss.detach()), model.down[0][0].weight.grad.clone()

    whole, grad = loss_and_grad(None)
    halves = [loss_and_grad(slice(0, 2)), loss_and_grad(slice(2, 4))]
    assert halves[0][0] != pytest.approx(halves[1][0], rel=1e-3)  # the shares differ
    assert (halves[0][0] + halves[1][0]) / 2 == pytest.approx(whole, rel=1e-5)
    assert torch.allclose((halves[0][1] + halves[1][1]) / 2, grad, rtol=1e-4, atol=1e-7)


def test_pretraining_learns_to_restore_blanked_blocks(sample, tmp_path):
    _, ds = sample
    result = drain(pretrain(ds, TINY, tmp_path / "w.pt"))
    assert result.path == tmp_path / "w.pt" and result.epochs == 4 and result.images == 6
    cache = data.ImageCache(ds, TINY)  # normalised images, as training sees them
    tiles = torch.from_numpy(np.stack([data.crop(cache(i), 32, 32, 64) for i in range(4)])[:, None])
    fresh = UNet(0, base=4)
    learnt = UNet(0, base=4)
    learnt.load_state_dict(torch.load(result.path, weights_only=True)["state_dict"])
    with torch.no_grad():
        before = float(reconstruction_loss(fresh, tiles, torch.Generator().manual_seed(1)))
        after = float(reconstruction_loss(learnt, tiles, torch.Generator().manual_seed(1)))
    assert after < 0.7 * before, (before, after)


def test_a_unet_starts_from_pretrained_weights_but_its_own_head(sample, tmp_path):
    _, ds = sample
    weights = drain(
        pretrain(
            ds,
            TrainConfig(epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=4),
            tmp_path / "w.pt",
        )
    ).path
    state = torch.load(weights, weights_only=True)["state_dict"]
    model = UNet(2, base=4)
    head = model.head.weight.clone()
    assert load_pretrained(weights, model) == len(model.state_dict()) - 2  # all but head
    assert torch.equal(model.down[0][0].weight, state["down.0.0.weight"])
    assert torch.equal(model.head.weight, head)
    with pytest.raises(BioAnomalyError, match=r"w\.pt: state_dict\['down\.0\.0\.weight'\]"):
        load_pretrained(weights, UNet(2, base=8))  # another width


def test_files_that_are_not_pretrained_weights_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BioAnomalyError, match=r"junk\.pt"):
        load_pretrained(tmp_path / "junk.pt", UNet(1, base=4))
    torch.save({"format": "something else", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(
        BioAnomalyError, match=r"other\.pt: not a file of napari-bioanomaly pretrain"
    ):
        load_pretrained(tmp_path / "other.pt", UNet(1, base=4))
    with pytest.raises(BioAnomalyError, match="not found"):
        load_pretrained(tmp_path / "missing.pt", UNet(1, base=4))


def test_cli_pretrain_without_a_batch_takes_the_default(sample, tmp_path, capsys):
    """No --batch (the README's command): the device's default batch, as train takes it
    (it crashed on the missing batch once)."""
    folder, _ = sample
    out = tmp_path / "w.pt"
    argv = ["pretrain", "--annotations", str(folder), "--out", str(out), "--tile", "64",
            "--epochs", "1", "--steps", "1", "--base-channels", "4", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "pretrained weights (6 images, 1 epoch, " in capsys.readouterr().out
    assert len(torch.load(out, weights_only=True)["history"]) == 1


def test_cli_pretrain_then_train_from_the_weights(sample, tmp_path, capsys):
    folder, _ = sample
    small = ["--tile", "64", "--batch", "2", "--epochs", "1", "--steps", "2"]
    train = ["train", "--annotations", str(folder / "annotations.json")]
    assert main(["pretrain", "--annotations", str(folder), "--out", str(tmp_path / "w.pt"),
                 *small, "--base-channels", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "pretrained weights (6 images, 1 epoch, " in out and "--weights" in out
    # no width given: the U-Net is built at the pretrained weights' width, not the default
    assert main([*train, "--out", str(tmp_path / "m.pt"), "--weights",
                 str(tmp_path / "w.pt"), *small]) == 0  # fmt: skip
    trained = load_checkpoint(tmp_path / "m.pt")
    assert trained["config"]["weights"] == str(tmp_path / "w.pt")
    assert trained["config"]["base_channels"] == 4
    assert trained["state_dict"]["down.0.0.weight"].shape[0] == 4
    # a file that stores the weights alone (written by hand or another tool): the width
    # is that of its first convolution
    bare = torch.load(tmp_path / "w.pt", weights_only=True)
    del bare["base_channels"]
    torch.save(bare, tmp_path / "bare.pt")
    assert pretrained_width(tmp_path / "bare.pt") == 4
    assert main([*train, "--out", str(tmp_path / "mb.pt"), "--weights",
                 str(tmp_path / "bare.pt"), *small]) == 0  # fmt: skip
    assert load_checkpoint(tmp_path / "mb.pt")["config"]["base_channels"] == 4
    # another width given: refused, with what to do
    code = main([*train, "--out", str(tmp_path / "m8.pt"), "--weights", str(tmp_path / "w.pt"),
                 *small, "--base-channels", "8"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "pretrained with base_channels 4? leave base_channels unset" in err
    # a trained model is not pretrained weights: the message says what to do instead
    code = main(["train", "--annotations", str(folder / "annotations.json"), "--out",
                 str(tmp_path / "m2.pt"), "--weights", str(tmp_path / "m.pt"), *small,
                 "--base-channels", "4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "m.pt: a trained model, not pretrained weights" in err


def test_training_can_pretrain_first_and_says_so(sample, tmp_path):
    """One click: minutes of pretraining on every image, then the U-Net learns the
    annotations from those weights (the Train form and the CLI share the setting)."""
    from napari_bioanomaly.ml.train import train

    _, ds = sample
    config = TrainConfig(
        epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=4, pretrain_min=0.02
    )
    gen, events = train(ds, config, tmp_path / "m.pt"), []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    messages = [e.message for e in events if e.kind == "status"]
    assert any(m.startswith("pretraining on 6 images without their annotations") for m in messages)
    assert any(m.startswith("pretrained weights (6 images") for m in messages)
    saved = load_checkpoint(result.best)["config"]
    assert saved["weights"] == str(tmp_path / "m.pretrained.pt") and saved["pretrain_min"] == 0
    with pytest.raises(BioAnomalyError, match="not both"):
        TrainConfig(pretrain_min=5, weights="w.pt")
    with pytest.raises(BioAnomalyError, match="applies to the U-Net"):
        TrainConfig(model="forest", pretrain_min=5)


def test_running_out_of_memory_while_pretraining_says_what_to_do(sample, tmp_path, monkeypatch):
    from napari_bioanomaly.ml import pretrain as pt

    def oom(*_a, **_k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pt, "reconstruction_loss", oom)
    _, ds = sample
    with pytest.raises(
        BioAnomalyError, match="out of memory on cpu while pretraining with batch 2"
    ):
        drain(
            pretrain(
                ds,
                TrainConfig(epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=4),
                tmp_path / "w.pt",
            )
        )
    assert not (tmp_path / "w.pt").exists()  # nothing half-written


def test_a_pretraining_budget_shows_the_epochs_it_fits(sample, tmp_path):
    """Run for minutes, pretraining shows how many epochs fit at its pace (it showed a
    cap of 10,000), never fewer than it has begun."""
    from .test_train import drain as drain_events

    _, ds = sample
    config = TINY.replace(epochs=None, budget_min=0.03, steps_per_epoch=3)
    events, result = drain_events(pretrain(ds, config, tmp_path / "w.pt"))
    shown = [e.epochs for e in events]
    assert all(e.epoch + 1 <= e.epochs < 10_000 for e in events)
    assert abs(shown[-1] - result.epochs) <= 1  # the pace, at the end


def test_a_pretraining_budget_ends_the_run_within_an_epoch(sample, tmp_path, monkeypatch):
    """A budget shorter than an epoch stops the run at the budget, not at the epoch's end
    (a 0.1 min budget ran one whole 50-step epoch). A clock that advances 1 s at each
    reading stands in for the time taken."""
    from napari_bioanomaly.ml import pretrain as pt

    from .test_train import drain as drain_events

    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(pt.time, "perf_counter", clock)
    _, ds = sample
    config = TINY.replace(epochs=None, budget_min=0.1, steps_per_epoch=50)  # 6 s of 1 s reads
    events, result = drain_events(pretrain(ds, config, tmp_path / "w.pt"))
    steps = [e for e in events if e.kind == "step"]
    assert 1 <= len(steps) <= 6 and result.epochs == 1
    assert (tmp_path / "w.pt").is_file()


def test_a_budget_spent_before_the_first_step_still_pretrains_one(sample, tmp_path, monkeypatch):
    """A budget spent while setting up (0.05 min under torchrun on a loaded machine) left
    the loop before any step: the network was written as initialised, with no epoch, and
    training started from it as if pretrained. One step is taken at least."""
    from napari_bioanomaly.ml import pretrain as pt

    from .test_train import drain as drain_events

    now = [0.0]

    def clock() -> float:
        now[0] += 100.0  # each reading 100 s later: the budget is gone at the first
        return now[0]

    monkeypatch.setattr(pt.time, "perf_counter", clock)
    _, ds = sample
    config = TINY.replace(epochs=None, budget_min=0.05, steps_per_epoch=5)
    events, result = drain_events(pretrain(ds, config, tmp_path / "w.pt"))
    assert len([e for e in events if e.kind == "step"]) == 1
    assert result.epochs == 1 and result.loss is not None


def test_a_pretraining_stopped_before_its_first_step_writes_nothing(sample, tmp_path):
    """Stopped before its first step (Ctrl+C at once), pretraining wrote the network as
    initialised over the previous pretrained file, as if pretrained."""
    import threading

    from .test_train import drain as drain_events

    _, ds = sample
    out = tmp_path / "w.pt"
    out.write_bytes(b"PK\x03\x04 weights pretrained before")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BioAnomalyError, match=r"stopped before its first step: nothing learned"):
        drain_events(pretrain(ds, TINY.replace(epochs=2, steps_per_epoch=2), out, cancel))
    assert out.read_bytes() == b"PK\x03\x04 weights pretrained before"


def test_training_stopped_before_pretraining_stepped_is_a_stop(sample, tmp_path):
    """Train with pretraining, stopped at once: a stop (as before), with no pretrained
    file written (the network as initialised was, and said pretrained)."""
    import threading

    from napari_bioanomaly.ml.train import train

    from .test_train import drain as drain_events

    _, ds = sample
    config = TrainConfig(
        epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=4, pretrain_min=0.02
    )
    cancel = threading.Event()
    cancel.set()
    _, result = drain_events(train(ds, config, tmp_path / "m.pt", cancel=cancel))
    assert result.cancelled and result.best is None
    assert not (tmp_path / "m.pretrained.pt").exists()
