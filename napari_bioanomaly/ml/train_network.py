"""The training loop of the networks (U-Net, Mask R-CNN): random tiles,
AdamW with warm-up and cosine decay over a time budget, mixed precision on CUDA, an
exponential moving average of the weights, validation every epoch, early stopping, the
best checkpoint kept and its operating point chosen on the validation images.

One of the trainers of :mod:`.train` (see :class:`.train.TrainJob`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import operating
from ..core.model import BioAnomalyError
from ..core.text import counted
from . import data, models
from .averaging import WeightAverage
from .checkpoint import (
    checkpoint_payload,
    last_path,
    load_checkpoint,
    load_pretrained,
    pretrained_width,
    save_checkpoint,
)
from .config import TTA_MODELS, TrainConfig
from .device import autocast_dtype, free_memory, is_oom, loader_workers, pick_device
from .distributed import Dist
from .events import TrainEvent, TrainResult, score_label
from .trainer import TrainJob, budget_minutes
from .validation import operating_point, scores, tta_point_wanted, validate


def _batches(
    sampler: data.TileSampler,
    config: TrainConfig,
    dist: Dist,
    start: int,
    batch: int,
    device: torch.device,
    workers: int,
) -> Any:
    """Batches of ``batch`` tiles from global tile ``start`` on (see :class:`.data.TileStream`),
    drawn by ``workers`` loader processes, page-locked for a GPU."""
    loader = torch.utils.data.DataLoader(
        data.TileStream(sampler, config.seed, dist.rank, dist.world, start, batch),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        # from page-locked memory the copy to the GPU runs beside the host; from ordinary
        # memory it waits for every step queued before it
        pin_memory=device.type == "cuda",
    )
    return iter(loader)


def _next_batch(stream: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in next(stream))


def _setup_text(device: torch.device, batch: int, tile: int, workers: int, world: int) -> str:
    """What a run trains on, e.g. "training on cuda (NVIDIA H200): batches of 32 tiles of
    128 px, drawn by 4 loader processes"."""
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    where = f"{world} processes on {device.type}" if world > 1 else f"{device}{name}"
    drawn = (
        f"drawn by {workers} loader process{'es' if workers > 1 else ''}"
        if workers
        else "drawn in the training thread"
    )
    each = ", each on" if world > 1 else ":"
    return f"training on {where}{each} batches of {batch} tiles of {tile} px, {drawn}"


def _earlier_candidates(resume: Path, out: Path) -> list[Path]:
    """Where the best model of the run that ``resume`` (``X.last.pt``) continues may be:
    ``out``, then ``X.pt`` beside it."""
    paths = [out]
    if resume.stem.endswith(".last"):
        paths.append(resume.with_name(resume.stem[: -len(".last")] + resume.suffix))
    return list(dict.fromkeys(paths))


def _earlier_text(resume: Path, out: Path) -> str:
    return "looked for " + " and ".join(str(p) for p in _earlier_candidates(resume, out))


def _earlier_best(ckpt: dict[str, Any], resume: Path, out: Path) -> Path | None:
    """The best model file of the run that ``ckpt`` (read from ``resume``) continues: one
    of :func:`_earlier_candidates` that holds the weights of its best epoch (same model,
    classes, epoch and history up to it); None where none does."""
    epoch = ckpt.get("best_epoch")
    if not isinstance(epoch, int) or epoch < 0:
        return None
    history = list(ckpt.get("history", []))[: epoch + 1]
    for path in _earlier_candidates(resume, out):
        if not path.is_file() or path.resolve() == resume.resolve():
            continue
        try:
            best = load_checkpoint(path)
        except BioAnomalyError:
            continue
        if (
            best.get("epoch") == epoch
            and best["config"]["model"] == ckpt["config"]["model"]
            and list(best["classes"]) == list(ckpt["classes"])
            and list(best.get("history", []))[: epoch + 1] == history
        ):
            return path
    return None


def _score_text(score: float | None, label: str) -> str:
    if score is None:
        return "n/a"
    return f"{-score:.4f}" if label.endswith("loss") else f"{score:.3f}"


def _optimise(
    scaler: torch.amp.GradScaler, optimiser: torch.optim.Optimizer, loss: torch.Tensor
) -> bool:
    """Backward pass and optimiser step through the gradient scaler. False when the scaler
    skipped the step: float16 gradients overflowed, as they do in the first steps while
    the scaler finds its scale (then the learning-rate schedule must not advance either)."""
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimiser)
    scaler.update()
    return before is None or scaler.get_scale() >= before


def fit(job: TrainJob) -> Generator[TrainEvent, None, TrainResult]:
    """Train a network (see the module docstring and :mod:`.trainer`)."""
    config, dataset = job.config, job.dataset
    sampler = data.TileSampler(dataset, job.train_idx, job.data_classes, config)
    val_tiles = data.validation_tiles(dataset, job.val_idx, job.data_classes, config)
    weights = None
    if config.class_weights == "balanced":
        weights = data.balanced_weights(data.pixel_counts(dataset, job.train_idx, job.classes))
    device = pick_device(config.device)
    dist = Dist.setup(device)
    try:
        result = yield from _train(
            config, job.out, job.resume, job.cancel, job.classes, sampler, val_tiles, device,
            dist, weights, job.val_idx,
        )  # fmt: skip
        dist.close(finished=True)
        return result
    finally:
        dist.close()


#: Without ``epochs`` a run trains for :func:`.trainer.budget_minutes`, but never more
#: epochs than this, nor fewer than the warm-up plus two.
MAX_AUTO_EPOCHS, MIN_AUTO_EPOCHS = 300, 3


def _schedule(plan: dict[str, int]):
    """Linear warm-up over the first epoch, then cosine decay to 0 at the planned end."""

    def factor(step: int) -> float:
        warm = plan["steps_per_epoch"]
        if step < warm:
            return (step + 1) / warm
        total = max(plan["epochs"] * plan["steps_per_epoch"] - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total) / total))

    return factor


def _train(
    config: TrainConfig,
    out: Path,
    resume: str | Path | None,
    cancel: threading.Event,
    classes: list[str],
    sampler: data.TileSampler,
    val_tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    device: torch.device,
    dist: Dist,
    weights: np.ndarray | None = None,
    val_idx: list[int] | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    global_batch = config.batch
    assert global_batch is not None, "train() sets the batch a run asks none of"
    device = dist.device_for(device, global_batch)
    resume = None if resume is None else Path(resume)
    ckpt = None if resume is None else load_checkpoint(resume)
    if ckpt is not None:
        if ckpt["config"]["model"] != config.model or list(ckpt["classes"]) != classes:
            raise BioAnomalyError(
                f"{resume}: trained as {ckpt['config']['model']} on classes {ckpt['classes']}; "
                f"cannot resume as {config.model} on {classes}"
            )
        width = ckpt["config"].get("base_channels") or config.width
        if config.base_channels not in (None, width):
            raise BioAnomalyError(f"{resume}: a network of width {width}; cannot resume it "
                                  f"with base_channels {config.base_channels}")  # fmt: skip
        config = config.replace(base_channels=width)  # the width it was built with
    elif config.weights and config.model == "unet" and config.base_channels is None:
        # start at the width of the pretrained weights (made before the default changed?)
        config = config.replace(base_channels=pretrained_width(config.weights))
    model = models.build(
        config.model, len(classes), config.tile, config.width,
        # a resumed run's weights are its checkpoint's: the file it started from is not read
        config.weights if config.model == "maskrcnn" and ckpt is None else None,
    )  # fmt: skip
    if config.weights and config.model == "unet" and resume is None:
        load_pretrained(config.weights, model)  # self-supervised weights (pretrain.py)
    model.to(device).train()
    net: torch.nn.Module = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=config.model == "maskrcnn",
        )
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.steps_per_epoch
    # until the first epoch is timed, an automatic run plans the most epochs it may have
    plan = {"epochs": config.epochs or MAX_AUTO_EPOCHS, "steps_per_epoch": steps}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(plan))
    amp_dtype = autocast_dtype(device, config.amp, config.model)
    # float16 needs its gradients scaled; bfloat16 has float32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: list[dict[str, Any]] = []
    # the averaged weights are validated, kept and predicted with (see averaging.py)
    average = WeightAverage(model, config.ema) if config.ema else None
    start_epoch = 0
    best_f1: float | None = None
    best_epoch = -1
    if ckpt is not None:
        model.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]))
        if config.ema:  # a checkpoint without an average starts one from its weights
            average = WeightAverage(model, config.ema, int(ckpt.get("ema_steps", 0)))
            if "train_state_dict" in ckpt:
                average.module.load_state_dict(ckpt["state_dict"])
        if config.epochs is None:  # an automatic run keeps the length it planned
            plan["epochs"] = int(ckpt.get("planned_epochs", plan["epochs"]))
        if "optimizer" in ckpt:
            optimiser.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt.get("history", []))
        start_epoch = int(ckpt.get("epoch", -1)) + 1
        best_f1 = ckpt.get("best_f1")
        best_epoch = int(ckpt.get("best_epoch", start_epoch - 1))
        if start_epoch >= plan["epochs"]:
            raise BioAnomalyError(
                f"{resume}: its {counted(start_epoch, 'epoch')} are done; to train on, ask for "
                f"more (--epochs {start_epoch + 1} or more)"
            )
    batch = global_batch // dist.world  # per process
    drawn = start_epoch * steps * global_batch  # global tiles drawn so far
    workers = loader_workers(config.num_workers, device, dist.local_world)
    stream = _batches(sampler, config, dist, drawn, batch, device, workers)
    yield TrainEvent(
        "status",
        start_epoch,
        plan["epochs"],
        0,
        steps,
        batch=batch,
        message=_setup_text(device, batch, config.tile, workers, dist.world),
    )
    # thin structures (cracks, scratches) are judged by pixel F1 (see operating.criterion_for)
    criterion = operating.criterion_for([inst for _, _, inst in val_tiles])
    val_tiles = val_tiles[dist.rank :: dist.world]  # each process validates its share
    label = score_label(config.model, criterion)
    best_label = label if ckpt is None else str(ckpt.get("best_label", label))

    def kept() -> torch.nn.Module:
        return model if average is None else average.module

    def payload(epoch: int) -> dict[str, Any]:
        trained = {} if average is None else {
            "train_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "ema_steps": average.steps,
        }  # fmt: skip
        return {
            **checkpoint_payload(config, classes, history, epoch, best_f1, weights),
            "best_label": best_label,
            "best_epoch": best_epoch,
            "planned_epochs": plan["epochs"],
            "state_dict": {k: v.detach().cpu() for k, v in kept().state_dict().items()},
            **trained,
            "optimizer": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
        }

    last = last_path(out)
    # the file of the best weights so far: a resumed run's earlier best, where it is found
    # (the .last.pt file holds the last weights, not the best)
    best_path = None if ckpt is None or resume is None else _earlier_best(ckpt, resume, out)
    # the score, epoch and label of the weights at best_path: the best so far unless the
    # resumed run's best was not found (then the best epoch of this run is kept)
    kept_f1, kept_epoch, kept_label = (
        (best_f1, best_epoch, best_label) if best_path is not None else (None, -1, label)
    )
    written: set[Path] = set()

    def save(path: Path, state: dict[str, Any]) -> Path:
        """Write a checkpoint of this run; only a file from before the run is backed up
        (as ``.bak``), not this run's own earlier writes of it."""
        saved = save_checkpoint(path, state, backup=path not in written)
        written.add(path)
        return saved

    step_times: list[float] = []
    data_times: list[float] = []
    epoch = start_epoch
    cancelled = False
    run_start = time.perf_counter()
    earlier_s = sum(h.get("seconds", 0.0) for h in history)  # of the run this one resumes
    value: torch.Tensor | None  # a step's loss; None frees a step that ran out of memory
    while epoch < plan["epochs"]:
        epoch_start = time.perf_counter()
        losses = []
        step = 0
        while step < steps:
            if dist.any(cancel.is_set()):  # a cancel on any process stops them all
                if dist.main:
                    save(last, payload(epoch - 1))
                cancelled = True
                break
            t0 = time.perf_counter()
            images, cls, inst = _next_batch(stream, device)
            drawn += batch * dist.world
            t_data = time.perf_counter() - t0
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    value = models.loss(config.model, net, images, cls, inst, class_weights)
                stepped = _optimise(scaler, optimiser, value)
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc) or dist.world > 1:
                    free_memory(device)
                    if dist.world > 1 and is_oom(exc):
                        raise BioAnomalyError(
                            f"out of memory on {device} (process {dist.rank}): use a smaller "
                            f"--batch (now {global_batch} over {dist.world} processes) or --tile"
                        ) from None
                    raise
                del images, cls, inst
                value = None
                optimiser.zero_grad(set_to_none=True)
                free_memory(device)
                if batch == 1:
                    raise BioAnomalyError(
                        f"out of memory on {device} with batch 1 and {config.tile} px tiles: "
                        "use smaller tiles (--tile), the U-Net, or another device"
                    ) from None
                batch = max(1, batch // 2)
                del stream  # its workers stop; the next batches are drawn at the new size
                stream = _batches(sampler, config, dist, drawn, batch, device, workers)
                yield TrainEvent(
                    "warning", epoch, plan["epochs"], step, steps, batch=batch,
                    message=f"out of memory on {device}: batch halved to {batch} "
                    f"(use --batch {batch} or smaller tiles to avoid this)",
                )  # fmt: skip
                continue
            if stepped:  # a step the scaler skipped does not advance the schedule
                scheduler.step()
            if average is not None:
                average.update(model)
            assert value is not None  # a step out of memory went on to the next above
            losses.append(dist.mean(float(value.detach())))
            step += 1
            step_times.append(time.perf_counter() - t0)
            data_times.append(t_data)
            recent = step_times[-20:]
            per_step = sum(recent) / len(recent)
            remaining = (plan["epochs"] - epoch) * steps - step
            yield TrainEvent(
                "step", epoch, plan["epochs"], step, steps,
                loss=losses[-1],
                lr=float(scheduler.get_last_lr()[0]),
                sec_per_step=per_step,
                data_fraction=sum(data_times[-20:]) / max(sum(recent), 1e-9),
                eta_s=per_step * remaining,
                batch=batch,
            )  # fmt: skip
        if cancelled:  # the epoch is not finished: the last one validated is epoch - 1
            break
        val_iou = val_f1 = val_threshold = None
        raw = dist.sum(validate(config.model, kept(), val_tiles, device, batch))
        if raw[2]:
            val_loss, val_iou, val_f1, val_threshold = scores(raw, criterion)
        else:
            val_loss = None
        if config.epochs is None:
            # the epochs timed so far (with their validation) set how many fit in the
            # budget; re-planned every epoch, so a slow start (another job on the machine,
            # first-call overheads) does not cut the run short
            spent = time.perf_counter() - run_start
            per_epoch = spent / (epoch - start_epoch + 1)
            budget_s = budget_minutes(config, device) * 60 - earlier_s
            fit = start_epoch + int(budget_s / max(per_epoch, 1e-3))
            plan["epochs"] = int(dist.mean(max(epoch + 1, min(max(fit, MIN_AUTO_EPOCHS),
                                                              MAX_AUTO_EPOCHS))))  # fmt: skip
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_iou": val_iou,
            "val_f1": val_f1,
            "val_threshold": val_threshold,
            "lr": float(scheduler.get_last_lr()[0]),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        # the score of the run: what SCORE_LABELS names; without it (no anomalous or no
        # normal validation images) the lowest validation loss, then training loss
        val_score = None
        if val_f1 is not None and val_iou is not None:
            val_score = operating.f1_score(val_f1, 2 * val_iou / (1 + val_iou), criterion)
        record["val_score"] = val_score
        score, name = next(
            (v, name)
            for v, name in (
                (val_score, label),
                (None if val_loss is None else -val_loss, "validation loss"),
                (-record["loss"], "training loss"),
            )
            if v is not None
        )
        if best_f1 is None or score > best_f1:
            best_f1, best_epoch, best_label = score, epoch, name
        if kept_f1 is None or score > kept_f1:
            kept_f1, kept_epoch, kept_label = score, epoch, name
            if dist.main:
                best_path = save(out, payload(epoch))
        if dist.main:
            save(last, payload(epoch))
        yield TrainEvent(
            "epoch", epoch, plan["epochs"], steps, steps,
            loss=record["loss"],
            val_loss=val_loss,
            val_iou=val_iou,
            val_f1=val_f1,
            lr=record["lr"],
            batch=batch,
            val_score=val_score,
            score_label=label,
        )  # fmt: skip
        epoch += 1
        waited = epoch - 1 - best_epoch
        if config.patience and waited >= config.patience and epoch < plan["epochs"]:
            yield TrainEvent(
                "status", epoch - 1, plan["epochs"], steps, steps,
                message=f"stopping early: {label} has not improved for {waited} epochs "
                f"(best {best_f1:.3f} at epoch {best_epoch + 1})",
            )  # fmt: skip
            break
    del stream  # its loader processes end here, not after the operating point is chosen
    # a stopped run ends as a finished one does: its best weights calibrated, their point
    # chosen on the validation images (a usable model), not its point for averaged maps
    final_epoch = epoch - 1
    point = tta_point = None
    if resume is not None and kept_epoch != best_epoch and best_path is not None:
        yield TrainEvent(
            "warning", final_epoch, plan["epochs"], steps, steps,
            message=f"the best epoch so far, epoch {best_epoch + 1} ({best_label} "
            f"{_score_text(best_f1, best_label)}), came before {resume}, which holds the "
            f"last weights only, and its model file was not found ({_earlier_text(resume, out)}"
            f"): kept the best epoch of this run instead, epoch {kept_epoch + 1} "
            f"({kept_label} {_score_text(kept_f1, kept_label)})",
        )  # fmt: skip
    if dist.main and best_path is not None:
        state = load_checkpoint(best_path)
        model.load_state_dict(state["state_dict"])  # the kept (averaged) weights of the best
        average = None
        best_state_epoch = int(state["epoch"])
        chosen = time.perf_counter()
        point = yield from operating_point(
            config, model, classes, {}, sampler.dataset, list(val_idx or []), device,
            final_epoch, plan["epochs"], steps, criterion,
        )  # fmt: skip
        plain_s = time.perf_counter() - chosen
        # then the point for test-time augmentation (not after a cancel: the run ends)
        if config.model in TTA_MODELS and point.source == "validation" and not cancel.is_set():
            train_s = sum(h.get("seconds", 0.0) for h in history)
            if tta_point_wanted(config.tta_point, plain_s, train_s):
                tta_point = yield from operating_point(
                    config, model, classes, {}, sampler.dataset, list(val_idx or []), device,
                    final_epoch, plan["epochs"], steps, point.criterion, tta=True,
                    against=point,
                )  # fmt: skip
            elif config.tta_point == "auto":
                yield TrainEvent(
                    "status", final_epoch, plan["epochs"], steps, steps,
                    message=f"no operating point for test-time augmentation: about "
                    f"{8 * plain_s:.0f} s, more than a tenth of the training (choose it "
                    "later: napari-bioanomaly choose-point MODEL --annotations FILE --tta)",
                )  # fmt: skip
        # the .last.pt checkpoint (for resuming) keeps its own state; the best gets the point
        best_state = {**payload(best_state_epoch), "history": history}
        # what the kept weights scored (not the earlier best, when that was not found)
        best_state.update(best_f1=kept_f1, best_epoch=kept_epoch, best_label=kept_label)
        best_state["operating_point"] = point.to_dict()
        if tta_point is not None:
            best_state["operating_point_tta"] = tta_point.to_dict()
        best_path = save(out, best_state)
    kept_best = dist.main and best_path is not None
    return TrainResult(
        best_path,
        last,
        history,
        kept_f1,
        cancelled,
        str(device),
        kept_label,
        point if kept_best else None,
        tta_point if kept_best else None,
    )
