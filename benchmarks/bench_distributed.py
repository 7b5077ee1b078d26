"""Scaling of distributed (pre)training: samples/s of N processes over N x one process.

Each process keeps the same per-process batch (so N processes train on an N times
larger global batch). Time per step comes from the difference of two runs of
different lengths, which removes start-up time. On a CPU every process gets
``cpus / N`` threads; on GPUs each process gets one GPU (NCCL).

With ``--nproc 1 --torchrun`` (a machine with one GPU) the one process is also launched
by torchrun, so the distributed path (process group, NCCL on a GPU, DDP) runs and its
cost is measured against plain training.

    python benchmarks/bench_distributed.py [--nproc 2] [--device cpu] [--tile 128] [--batch 4]
        [--command train|pretrain]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core.synthetic import SampleConfig, write_sample


def seconds(
    nproc: int, steps: int, args: argparse.Namespace, folder: Path, torchrun: bool = False
) -> float:
    threads = max(1, (os.cpu_count() or 2) // nproc)
    root = str(Path(__file__).resolve().parents[1])  # the processes run this checkout's code
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }
    launcher = (
        [sys.executable, "-m", "napari_bioanomaly.cli"]
        if nproc == 1 and not torchrun
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
              "-m", "napari_bioanomaly.cli"]
    )  # fmt: skip
    validation = ["--val-fraction", "0"] if args.command == "train" else []
    cmd = [*launcher, args.command, "--annotations", str(folder / "annotations.json"),
           "--out", str(folder / f"m{nproc}{'d' if torchrun else ''}.pt"), "--epochs", "1", "--steps", str(steps),
           "--tile", str(args.tile), "--batch", str(args.batch * nproc), *validation,
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
    parser.add_argument(
        "--command",
        choices=("train", "pretrain"),
        default="train",
        help="the U-Net's training, or its self-supervised pretraining",
    )
    parser.add_argument(
        "--torchrun",
        action="store_true",
        help="launch the N processes by torchrun even when N is 1",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample(folder, SampleConfig(n_images=12, size=256))
        rates = {}
        for n, torchrun in ((1, False), (args.nproc, args.torchrun)):
            short = seconds(n, 2, args, folder, torchrun)
            long = seconds(n, 2 + args.steps, args, folder, torchrun)
            per_step = (long - short) / args.steps
            rates[n, torchrun] = args.batch * n / per_step
    one, many = rates[1, False], rates[args.nproc, args.torchrun]
    eff = many / (args.nproc * one)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {args.device}; "
        f"napari-bioanomaly {args.command}"
    )
    launched = " (torchrun)" if args.torchrun else ""
    print(f"1 process: {one:.1f} samples/s; {args.nproc} processes{launched}: {many:.1f} samples/s")
    print(
        f"scaling efficiency: {eff:.2f} (samples/s of {args.nproc} over {args.nproc} x 1 process)"
    )


if __name__ == "__main__":
    main()
