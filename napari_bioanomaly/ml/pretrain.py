"""Self-supervised pretraining of the U-Net on the user's own images: no annotations,
no downloads.

Labs have thousands of unannotated images and few annotated ones. Here the U-Net
learns their appearance by masked-image reconstruction (as SimMIM does for
transformers): random 16 px blocks covering half of each tile are blanked, and
the network restores them from the rest (L1 loss on the blanked pixels). The
weights are saved as a *pretrained file*; ``train --weights FILE`` starts a
U-Net from it (every layer except the output head) and fine-tunes it on the
annotations. Whether it pays on a dataset is measured by
``benchmarks/real/bench_pretrain.py`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.model import BioAnomalyError, Dataset
from ..core.text import counted
from . import data, models
from .checkpoint import PRETRAINED_FORMAT, save_checkpoint
from .config import TrainConfig
from .device import autocast_dtype, default_batch, free_memory, is_oom, pick_device
from .distributed import Dist
from .events import TrainEvent

#: Side of the blanked blocks (pixels) and the share of a tile they cover.
BLOCK, MASK_RATIO = 16, 0.5


@dataclass(frozen=True)
class PretrainResult:
    """Where the pretrained weights went, and from what."""

    path: Path
    images: int
    epochs: int
    loss: float | None
    seconds: float

    def text(self) -> str:
        loss = "" if self.loss is None else f", reconstruction loss {self.loss:.4f}"
        return (f"pretrained weights ({counted(self.images, 'image')}, "
                f"{counted(self.epochs, 'epoch')}, {self.seconds / 60:.1f} min{loss}): "
                f"{self.path}")  # fmt: skip


def mask_blocks(
    images: torch.Tensor, generator: torch.Generator, block: int = BLOCK, ratio: float = MASK_RATIO
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` ``(N, 1, H, W)`` with random ``block``-pixel squares (``ratio`` of them)
    set to 0, and the mask of the blanked pixels (1 = blanked)."""
    n, _, h, w = images.shape
    grid = (n, 1, math.ceil(h / block), math.ceil(w / block))
    keep = torch.rand(grid, generator=generator) >= ratio
    mask = (~keep).float().repeat_interleave(block, 2).repeat_interleave(block, 3)
    mask = mask[:, :, :h, :w].to(images.device)
    return images * (1 - mask), mask


def reconstruction_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    generator: torch.Generator,
    share: slice | None = None,
) -> torch.Tensor:
    """L1 error of the restored pixels of one masked batch.

    With a ``share`` of the batch (a process's, in distributed training), the network
    restores those tiles only, and their error is scaled so that the processes' losses
    average to the whole batch's: gradients averaged over the processes are then the
    whole batch's gradient."""
    masked, mask = mask_blocks(images, generator)
    blanked = mask.sum().clamp(min=1)
    if share is None:
        return ((model(masked).float() - images).abs() * mask).sum() / blanked
    parts = len(range(*share.indices(len(images))))
    error = (model(masked[share]).float() - images[share]).abs() * mask[share]
    return error.sum() / blanked * (len(images) / parts)


def _tiles(
    cache: data.ImageCache, indices: list[int], tile: int, n: int, rng: np.random.Generator
) -> torch.Tensor:
    out = np.empty((n, 1, tile, tile), dtype=np.float32)
    for k in range(n):
        image = cache(indices[int(rng.integers(len(indices)))])
        rows, cols = image.shape
        r = int(rng.integers(0, max(1, rows - tile + 1)))
        c = int(rng.integers(0, max(1, cols - tile + 1)))
        crop = data.crop(image, r, c, tile)
        crop = np.rot90(crop, int(rng.integers(4)))
        out[k, 0] = np.fliplr(crop) if rng.random() < 0.5 else crop
    return torch.from_numpy(out)


def pretrain(
    dataset: Dataset,
    config: TrainConfig,
    out: str | Path,
    cancel: threading.Event | None = None,
) -> Generator[TrainEvent, None, PretrainResult]:
    """Pretrain a U-Net of ``config``'s width on every image of ``dataset`` (annotated or
    not) for ``config.budget_min`` minutes (15 if unset) or ``config.epochs`` epochs of
    ``config.steps_per_epoch`` steps; writes the pretrained file ``out`` atomically (the
    previous one kept as ``.bak``). Stops early, still writing, when ``cancel`` is set."""
    if not dataset.images:
        raise BioAnomalyError("no images to pretrain on")
    indices = list(range(len(dataset.images)))
    dist = Dist.setup(pick_device(config.device))
    try:
        model, history, seconds = yield from learn_images(dataset, indices, config, cancel,
                                                          dist=dist)  # fmt: skip
        path = Path(out)
        if not history:  # stopped before its first step: the network as initialised
            raise BioAnomalyError(f"pretraining stopped before its first step: nothing "
                                  f"learned, {path} not written")  # fmt: skip
        if dist.main:
            path = _save_pretrained(model, config, indices, history, seconds, path)
        dist.wait()  # the others wait for the file: they may train from it next
    finally:
        dist.close()
    return PretrainResult(path, len(indices), len(history), history[-1] if history else None,
                          seconds)  # fmt: skip


def _save_pretrained(
    model: models.UNet,
    config: TrainConfig,
    indices: list[int],
    history: list[float],
    seconds: float,
    out: Path,
) -> Path:
    payload = {
        "format": PRETRAINED_FORMAT,
        "base_channels": config.width,
        "depth": model.depth,
        "tile": config.tile,
        "normalisation": {"method": "percentile", "low": config.low, "high": config.high},
        "images": len(indices),
        "history": history,
        "seconds": seconds,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return save_checkpoint(out, payload)


def learn_images(
    dataset: Dataset,
    indices: list[int],
    config: TrainConfig,
    cancel: threading.Event | None = None,
    message: str = "",
    dist: Dist | None = None,
) -> Generator[TrainEvent, None, tuple[models.UNet, list[float], float]]:
    """Train a U-Net by masked-image reconstruction on the images ``indices`` of
    ``dataset`` (see :func:`pretrain` for the length); returns the network (in training
    mode, on its device), the mean loss of each epoch and the seconds it took. Events
    carry ``message`` (what the caller calls this phase).

    In a distributed run (``dist``, under torchrun) every process draws the same global
    batches of ``config.batch`` tiles and restores its share of each
    (DistributedDataParallel averages the gradients): the same training as one process
    with that batch. The processes stop together, on process 0's clock or a cancel on any
    (then ``cancel`` is set on every process).
    """
    dist = dist or Dist()
    batch = config.batch
    if batch is None:  # a run that asks for none (pretrain's default): the U-Net's here
        batch = default_batch(pick_device(config.device), dist.world)
    device = dist.device_for(pick_device(config.device), batch)
    share = (
        slice(dist.rank * (batch // dist.world), (dist.rank + 1) * (batch // dist.world))
        if dist.world > 1
        else None
    )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = models.UNet(0, base=config.width).to(device).train()
    net: torch.nn.Module = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    amp_dtype = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    cache = data.ImageCache(dataset, config, size=64)
    budget_s = 60 * (config.budget_min if config.budget_min is not None else 15.0)
    epochs = config.epochs or 10_000
    start = time.perf_counter()
    history: list[float] = []
    epoch = 0
    steps = config.steps_per_epoch

    def agreed() -> tuple[bool, float]:
        """Whether a process was cancelled, and process 0's seconds since the start."""
        flags = dist.sum([float(cancel is not None and cancel.is_set()),
                          time.perf_counter() - start if dist.main else 0.0])  # fmt: skip
        if flags[0] > 0 and cancel is not None:
            cancel.set()  # another process's cancel is this one's too
        return bool(flags[0] > 0), float(flags[1])

    def planned(done_steps: int) -> int:
        """The epochs to show: those asked for, or those the budget fits at this pace."""
        if config.epochs:
            return epochs
        per_epoch = (time.perf_counter() - start) / max(done_steps, 1) * steps
        return max(epoch + 1, min(epochs, int(budget_s / max(per_epoch, 1e-6))))

    stop, elapsed = agreed()
    # one step at least, however long setting up took (a budget spent before the first
    # step, under load, wrote the network as initialised, said to be pretrained)
    while not stop and epoch < epochs and (config.epochs or elapsed < budget_s or not history):
        losses: list[float] = []
        for step in range(steps):
            stop, elapsed = agreed()
            # the budget ends a run within an epoch too (an epoch may take minutes), after
            # one step of it at least; the partial epoch counts as an epoch
            if stop or (not config.epochs and elapsed >= budget_s and losses):
                break
            images = _tiles(cache, indices, config.tile, batch, rng).to(device)
            # cosine decay over the planned time (or epochs), after a one-epoch warm-up
            done = (epoch + step / steps) / epochs if config.epochs else elapsed / budget_s
            warm = min(1.0, (epoch * steps + step + 1) / steps)
            for group in optimiser.param_groups:
                group["lr"] = config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = reconstruction_loss(net, images, generator, share)
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                free_memory(device)
                where = f" (process {dist.rank} of {dist.world})" if dist.world > 1 else ""
                raise BioAnomalyError(
                    f"out of memory on {device}{where} while pretraining with batch "
                    f"{batch} and {config.tile} px tiles: use a smaller --batch or --tile"
                ) from None
            losses.append(dist.mean(float(loss.detach())))
            yield TrainEvent("step", epoch, planned(epoch * steps + step + 1), step + 1, steps,
                             loss=losses[-1], message=message)  # fmt: skip
        if not losses:
            break
        history.append(float(np.mean(losses)))
        yield TrainEvent("epoch", epoch, planned((epoch + 1) * steps), steps, steps,
                         loss=history[-1], message=message)  # fmt: skip
        epoch += 1
        if not stop:
            stop, elapsed = agreed()
    return model, history, time.perf_counter() - start
