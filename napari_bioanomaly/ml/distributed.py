"""Distributed training with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

``napari-bioanomaly train`` runs unchanged under ``torchrun --nproc_per_node=N``: the
process group is set up from torchrun's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``), NCCL on CUDA and gloo on the CPU. Without those variables
everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as td

from ..core.model import BioAnomalyError

#: How long a process waits in a collective for the others. Process 0 alone chooses the
#: operating point after training (and scores a cross-validation fold, builds a learned
#: memory bank) while the others wait: PyTorch's defaults (10 min for NCCL, 30 for gloo)
#: would end a run whose validation set takes longer.
WAIT_LIMIT = timedelta(hours=6)


def world_size() -> int:
    """Processes of the run (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (torchrun's ``RANK``; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


@dataclass
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    local_world: int = 1  # processes on this machine (they share its cores)

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints and prints."""
        return self.rank == 0

    @classmethod
    def setup(cls, device: torch.device) -> Dist:
        """Join the process group torchrun describes (if any); NCCL on CUDA, gloo otherwise."""
        world = world_size()
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not td.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            td.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                  timeout=WAIT_LIMIT)  # fmt: skip
            owns = True
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        return cls(rank(), world, local_rank, owns, local_world)

    def device_for(self, device: torch.device, batch: int) -> torch.device:
        """This process's device (its own GPU under torchrun), checking that the global
        ``batch`` can be shared by the processes."""
        if self.world <= 1:
            return device
        if batch % self.world:
            raise BioAnomalyError(f"batch {batch} is not a multiple of the {self.world} "
                                  "processes")  # fmt: skip
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def sum(self, values: list[float]) -> np.ndarray:
        """Element-wise sum over all processes."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            if td.get_backend() == "nccl":
                t = t.cuda()
            td.all_reduce(t)
        return t.cpu().numpy()

    def mean(self, value: float) -> float:
        return float(self.sum([value])[0]) / self.world

    def any(self, flag: bool) -> bool:
        """True on every process if it is true on any (e.g. a cancel request)."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def wait(self) -> None:
        """Wait until every process gets here (e.g. for a file process 0 writes)."""
        if self.world > 1:
            td.barrier()

    def close(self, finished: bool = False) -> None:
        """Leave the process group, if :meth:`setup` joined it. ``finished``: every
        process got here normally, so they first wait for each other (rank 0 still saves
        and chooses the operating point after the last epoch; a process that tore down
        its group while another was busy was seen to abort in gloo). A group left cannot
        be joined again (gloo hangs), so a run of several trainings in one process
        (crossval's folds, pretraining then training) joins one first and holds it: the
        trainings' own :meth:`setup` then find it and leave it be."""
        if self.owns_group and td.is_initialized():
            if finished:
                td.barrier()
            td.destroy_process_group()
