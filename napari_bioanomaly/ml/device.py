"""Devices: which one to use, and what running out of its memory looks like."""

from __future__ import annotations

import os

import torch

from ..core.model import BioAnomalyError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, then Apple MPS, then CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BioAnomalyError("device cuda asked for, but PyTorch sees no CUDA GPU here")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise BioAnomalyError("device mps asked for, but it is not available here")
    return torch.device(name)


#: Tiles per batch and training process when none are asked for (:func:`default_batch`).
CPU_BATCH, GPU_BATCH = 4, 32


def default_batch(device: torch.device, processes: int = 1, model: str = "unet") -> int:
    """The batch of a run that asks for none, over its ``processes`` training processes:
    for the U-Net :data:`GPU_BATCH` per CUDA GPU, otherwise :data:`CPU_BATCH` per process.

    A step of the small U-Net on a GPU costs about the same for 4 tiles as for 32 (the
    time goes into launching its kernels): a time-budgeted run sees 8x the tiles. Measured
    on an H200 (NEU-Seg, 2-2.5 min, ``docs/benchmarks.md``): instance F1 0.625 at batch 4,
    0.662-0.675 at 16, 0.715 at 32. On a CPU a step costs in proportion to its tiles, and
    Mask R-CNN's GPU steps were not measured at other batches: 4.
    """
    gpu = device.type == "cuda" and model == "unet"
    return (GPU_BATCH if gpu else CPU_BATCH) * max(processes, 1)


#: Data loader processes per training process on a GPU when none are asked for
#: (:func:`loader_workers`).
GPU_LOADER_WORKERS = 4


def loader_workers(requested: int | None, device: torch.device, processes: int = 1) -> int:
    """Data loader processes of a training process: ``requested`` when given; otherwise
    none on a CPU or MPS (they would take the cores the training computes on) and on a
    CUDA GPU up to :data:`GPU_LOADER_WORKERS`, leaving a core to each of the
    ``processes`` training processes of this machine."""
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(GPU_LOADER_WORKERS, (cores or 1) // max(processes, 1) - 1))


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is the device (or the host) running out of memory."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, (MemoryError, *((oom,) if oom else ()))) or (
        "out of memory" in str(exc).lower()
    )


def free_memory(device: torch.device | str) -> None:
    """Give cached GPU memory back after running out of it."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def autocast_dtype(device: torch.device, amp: bool, model: str = "unet") -> torch.dtype | None:
    """The reduced precision a training step runs in, or ``None`` for float32.

    CUDA: float16 (with a gradient scaler). CPU: bfloat16 where the processor computes
    it natively (AVX512-BF16 or AMX, as oneDNN reports); elsewhere bfloat16 is emulated
    and slower than float32, so float32 stays. Measured on a 2-core AMD EPYC with
    AVX512-BF16 (`benchmarks/bench_train_throughput.py`, batch 8): the U-Net trains 1.16x
    faster on 128 px tiles and 1.9x on 256 px, which a time-budgeted run turns into more
    epochs.
    Mask R-CNN keeps float32 on the CPU (its detection ops are not all bfloat16-ready).
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and model != "maskrcnn" and cpu_has_bf16():
        return torch.bfloat16
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own test)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
