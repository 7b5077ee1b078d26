"""Training throughput of both models: samples/s, GPU memory, share of each step waiting for data.

Trains on the sample dataset (512 px images) through the real training generator,
and compares with a bare forward/backward loop on random tensors of the same
shape in the same process (the reference: model compute only, float32).
Target: under 10% of each step waiting for data. The U-Net runs twice per tile size:
with mixed precision (the default: float16 on CUDA, bfloat16 on CPUs that compute it
natively) and without (``amp=False``), so the speed-up is measured in one process.

With ``--workers 0,4`` the U-Net at 256 px runs again with each further number of
data-loading processes (each draws whole batches; ``auto`` is the product's choice for the
device). With ``--grid 4,16,64`` only the U-Net at ``--tile`` px runs, at each of those
batch sizes with each number of workers: what a GPU run's batch and workers should be.

    python benchmarks/bench_train_throughput.py [--device auto] [--steps 20] [--workers 0]
        [--grid 4,16,64 --tile 128]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from napari_bioanomaly.ml import models
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.data import class_names
from napari_bioanomaly.ml.device import autocast_dtype, loader_workers
from napari_bioanomaly.ml.train import pick_device, train


def bare(
    kind: str, n_classes: int, tile: int, batch: int, steps: int, device: torch.device
) -> float:
    model = models.build(kind, n_classes, tile, TrainConfig(model=kind).width).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(batch, 1, tile, tile, device=device)
    cls = torch.zeros(batch, tile, tile, dtype=torch.int64, device=device)
    inst = torch.zeros(batch, tile, tile, dtype=torch.int32, device=device)
    cls[:, 20:60, 20:60] = 1
    inst[:, 20:60, 20:60] = 1
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = models.loss(kind, model, x, cls, inst)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch / (sum(times[2:]) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--workers",
        default="0",
        help="data-loading processes, e.g. 0,4 (auto: the product's choice)",
    )
    parser.add_argument(
        "--grid",
        default="",
        help="batch sizes, e.g. 4,16,64: only the U-Net "
        "at --tile, each batch size with each number of workers",
    )
    parser.add_argument("--tile", type=int, default=128, help="tile of --grid")
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        write_sample(Path(tmp), SampleConfig(n_images=20, size=512))
        dataset, _ = annotations.load(Path(tmp) / "annotations.json")
        n_classes = len(class_names(dataset))
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}"
            + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
        )
        first, *more = (None if w == "auto" else int(w) for w in args.workers.split(","))
        runs = [
            ("unet", 256, 8, True, first),
            ("unet", 256, 8, False, first),
            ("unet", 128, 8, True, first),
            ("unet", 128, 8, False, first),
            ("maskrcnn", 256, 2, True, first),
        ]
        runs += [("unet", 256, 8, True, w) for w in more]
        if device.type == "cuda":  # what a GPU could do with a batch that fills it
            runs += [("unet", 256, 64, True, w) for w in (first, *more)]
        if args.grid:
            runs = [("unet", args.tile, int(b), True, w)
                    for b in args.grid.split(",") for w in (first, *more)]  # fmt: skip
        for kind, tile, batch, amp, workers in runs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            cfg = TrainConfig(
                model=kind,
                epochs=1,
                steps_per_epoch=args.steps,
                tile=tile,
                batch=batch,
                val_fraction=0.0,
                device=args.device,
                num_workers=workers,
                amp=amp,
            )
            # wall time between step events, after 3 warm-up steps (first calls build
            # kernels, bfloat16 ones especially): the steady pace of training
            stamps, steps = [], []
            for e in train(dataset, cfg, Path(tmp) / f"{kind}.pt"):
                if e.kind == "step":
                    stamps.append(time.perf_counter())
                    steps.append(e)
            gaps = sorted(b - a for a, b in itertools.pairwise(stamps[3:]))
            per_step = gaps[len(gaps) // 2]
            waiting = sum(e.data_fraction for e in steps[3:]) / len(steps[3:])
            ours = batch / per_step
            ref = bare(kind, n_classes, tile, batch, max(3, args.steps // 4), device)
            mem = (
                f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
                if device.type == "cuda"
                else ""
            )
            dtype = autocast_dtype(device, amp, kind)
            precision = "float32" if dtype is None else str(dtype).removeprefix("torch.")
            chosen = loader_workers(workers, device)
            print(
                f"{kind:8s} tile {tile} batch {batch} {precision:8s} workers {chosen}"
                f"{' (auto)' if workers is None else ''}: {ours:.1f} samples/s "
                f"({1000 * per_step:.1f} ms/step), {100 * waiting:.0f}% of each step "
                f"waiting for data{mem}; bare loop {ref:.1f} samples/s; ratio {ours / ref:.2f}"
            )


if __name__ == "__main__":
    main()
