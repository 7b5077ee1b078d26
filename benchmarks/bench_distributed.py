"""Scaling efficiency of distributed training: samples/s of N processes over N x one process.

Each process keeps the same per-process batch (so N processes train on an N times
larger global batch). Time per step comes from the difference of two runs of
different lengths, which removes start-up time. On a CPU every process gets
``cpus / N`` threads; on GPUs each process gets one GPU (NCCL).

    python benchmarks/bench_distributed.py [--nproc 2] [--device cpu] [--tile 128] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_bioanomaly.core.synthetic import SampleConfig, write_sample


def seconds(nproc: int, steps: int, args: argparse.Namespace, folder: Path) -> float:
    threads = max(1, (os.cpu_count() or 2) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = (
        [sys.executable, "-m", "napari_bioanomaly.cli"]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
              "-m", "napari_bioanomaly.cli"]
    )  # fmt: skip
    cmd = [*launcher, "train", "--annotations", str(folder / "annotations.json"),
           "--out", str(folder / f"m{nproc}.pt"), "--epochs", "1", "--steps", str(steps),
           "--tile", str(args.tile), "--batch", str(args.batch * nproc), "--val-fraction", "0",
           "--device", args.device]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="per process")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample(folder, SampleConfig(n_images=12, size=256))
        rates = {}
        for n in (1, args.nproc):
            short = seconds(n, 2, args, folder)
            long = seconds(n, 2 + args.steps, args, folder)
            per_step = (long - short) / args.steps
            rates[n] = args.batch * n / per_step
    eff = rates[args.nproc] / (args.nproc * rates[1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {args.device}")
    print(
        f"1 process: {rates[1]:.1f} samples/s; {args.nproc} processes: {rates[args.nproc]:.1f} samples/s"
    )
    print(
        f"scaling efficiency: {eff:.2f} (samples/s of {args.nproc} over {args.nproc} x 1 process)"
    )


if __name__ == "__main__":
    main()
