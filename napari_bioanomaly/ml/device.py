"""Devices: which one to use, and what running out of its memory looks like."""

from __future__ import annotations

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
