"""Mask R-CNN training and prediction steps: the product's proposal counts beside torchvision's.

The product's Mask R-CNN (``models.maskrcnn``) trains its box and mask heads on
``models.ROIS_PER_IMAGE`` proposals of each tile and predicts from
``models.predict_proposals(tile)``; torchvision's defaults (512 and 1,000) are sized for
photographs of 800-1333 px with dozens of objects. This times a training step (forward,
backward, optimiser) and a prediction step (``models.predict_classes``, what validation
and ``predict`` run) of each on the same batch of tiles with three anomalies each, same
weights, in one process, alternating rounds (median step of each), and prints the share of
the training step the heads' RoIAlign took (from the profiler) for both.

    python benchmarks/bench_maskrcnn.py [--tiles 128,256] [--batch 4] [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.ml import models

#: torchvision's proposals per image for the heads (``box_batch_size_per_image``), and
#: those the box head scores per image when predicting (``rpn_post_nms_top_n_test``).
TORCHVISION_ROIS, TORCHVISION_TEST = 512, 1000


def batch_of(tile: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tiles, each with three rectangular anomalies of three classes."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, tile, tile, generator=gen)
    cls = torch.zeros(batch, tile, tile, dtype=torch.int64)
    inst = torch.zeros_like(cls)
    for b in range(batch):
        for k in range(1, 4):
            r, c = 8 + (tile // 4) * (k - 1) + 2 * b, 10 + 20 * k
            inst[b, r : r + 12, c : c + 20] = k
            cls[b, r : r + 12, c : c + 20] = k
    return x, cls, inst


def build(tile: int, rois: int, test: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = models.build("maskrcnn", 3, tile).train()
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == models.ROIS_PER_IMAGE
    assert model.rpn._post_nms_top_n["testing"] == models.predict_proposals(tile)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = rois
    model.rpn._post_nms_top_n["testing"] = test
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def predict(model: torch.nn.Module, data: tuple) -> None:
    """One prediction step (eval mode), as validation and ``predict`` run it."""
    model.eval()
    with torch.no_grad():
        models.predict_classes("maskrcnn", model, data[0])
    model.train()


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple) -> None:
    loss = models.loss("maskrcnn", model, *data)
    opt.zero_grad()
    loss.backward()
    opt.step()


def roi_align_share(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple) -> float:
    """Share of one step's CPU time spent in RoIAlign, forward and backward."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(model, opt, data)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    roi = sum(e.self_cpu_time_total for e in events if "roi_align" in e.key)
    return roi / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="128,256")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU"
    )
    for tile in (int(t) for t in args.tiles.split(",")):
        data = batch_of(tile, args.batch)
        runs = {
            "ours": build(tile, models.ROIS_PER_IMAGE, models.predict_proposals(tile)),
            "torchvision": build(tile, TORCHVISION_ROIS, TORCHVISION_TEST),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        pred_times: dict[str, list[float]] = {name: [] for name in runs}
        for model, opt in runs.values():
            step(model, opt, data)  # warm-up
            predict(model, data)
        for _ in range(args.rounds):
            for name, (model, opt) in runs.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(model, opt, data)
                times[name].append((time.perf_counter() - t0) / args.steps)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    predict(model, data)
                pred_times[name].append((time.perf_counter() - t0) / args.steps)
        share = {name: roi_align_share(*run, data) for name, run in runs.items()}
        ours, ref = (statistics.median(times[n]) for n in ("ours", "torchvision"))
        p_ours, p_ref = (statistics.median(pred_times[n]) for n in ("ours", "torchvision"))
        print(
            f"tile {tile} px, batch {args.batch}: training ours ({models.ROIS_PER_IMAGE} "
            f"proposals per tile) {ours:.2f} s/step, RoIAlign {100 * share['ours']:.0f}% | "
            f"torchvision's {TORCHVISION_ROIS} (reference) {ref:.2f} s/step, RoIAlign "
            f"{100 * share['torchvision']:.0f}% | {ref / ours:.2f}x\n"
            f"  predicting ours ({models.predict_proposals(tile)} proposals per tile) "
            f"{p_ours:.3f} s/step | torchvision's {TORCHVISION_TEST} (reference) {p_ref:.3f} "
            f"s/step | {p_ref / p_ours:.2f}x"
        )


if __name__ == "__main__":
    main()
