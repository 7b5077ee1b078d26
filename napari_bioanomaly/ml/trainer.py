"""What every trainer is given and what it must do.

A trainer (:mod:`.train_network`, :mod:`.train_forest`, :mod:`.train_memory`) is a
generator function ``fit(job)`` that yields :class:`~.events.TrainEvent` and returns a
:class:`~.events.TrainResult`: the best checkpoint at ``job.out`` with its operating point,
the last state beside it (:func:`~.checkpoint.last_path`), and a prompt return without a
checkpoint when ``job.cancel`` is set. :func:`.train.train` prepares the job (split,
quality filter, tile fitted to the images) and picks the trainer the model's
:class:`~.config.ModelInfo` names.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..core.model import Dataset
from .config import TrainConfig
from .events import TrainEvent, TrainResult

#: Without ``epochs`` a run trains for this many minutes on a CPU, and on a GPU.
CPU_BUDGET_MIN, GPU_BUDGET_MIN = 15.0, 60.0


def budget_minutes(config: TrainConfig, device: torch.device) -> float:
    """The time a run without a fixed number of epochs may take."""
    if config.budget_min is not None:
        return config.budget_min
    return GPU_BUDGET_MIN if device.type == "cuda" else CPU_BUDGET_MIN


@dataclass(frozen=True)
class TrainJob:
    """One training run, prepared.

    ``classes``: what the model learns (``["anomaly"]`` for the unsupervised models);
    ``data_classes``: the dataset's annotated classes (they mask the unsupervised loss);
    ``resume``: a ``.last.pt`` checkpoint to continue (networks only).
    """

    dataset: Dataset
    config: TrainConfig
    out: Path
    classes: list[str]
    data_classes: list[str]
    train_idx: list[int]
    val_idx: list[int]
    cancel: threading.Event
    resume: Path | None = None


class Trainer(Protocol):
    def __call__(self, job: TrainJob) -> Generator[TrainEvent, None, TrainResult]: ...
