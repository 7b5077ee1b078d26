"""Does self-supervised pretraining help the U-Net when few images are annotated?

    .venv/bin/python benchmarks/real/bench_pretrain.py DATASET [--sizes 10,30,100]

``DATASET`` is a folder of ``prepare_*.py``. First a U-Net is pretrained on every
training image, annotations unused (``napari-bioanomaly pretrain``: masked-image
reconstruction, ``--pretrain-min`` minutes). Then for each size ``n`` the same
``n`` annotated training images (a seeded draw) train two U-Nets with defaults and
the same budget (``--finetune-min``): one from random weights (the reference, in
the same process) and one from the pretrained weights. Both predict the test
images at their stored operating points; printed: instance F1 at IoU 0.5, pixel
IoU and pixel F1, and their differences.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_real import score

from napari_bioanomaly.core import annotations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--sizes", default="10,30,100")
    p.add_argument("--pretrain-min", type=float, default=10.0)
    p.add_argument("--finetune-min", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.predict import Predictor, predict_image, run
    from napari_bioanomaly.ml.pretrain import pretrain
    from napari_bioanomaly.ml.train import train

    folder = args.dataset
    train_ds, _ = annotations.load(folder / "train.json")
    test_ds, _ = annotations.load(folder / "test.json")
    out = args.out or folder / "pretrain-study"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
    )
    print(
        f"{folder.name}: {len(train_ds.images)} training images (pretraining, annotations "
        f"unused), {len(test_ds.images)} test images"
    )
    weights = out / "pretrained.pt"
    if not weights.is_file():
        print(
            run(pretrain(train_ds, TrainConfig(budget_min=args.pretrain_min), weights)).text(),
            flush=True,
        )
    annotated = [i for i, im in enumerate(train_ds.images) if im.regions]
    order = np.random.default_rng(args.seed).permutation(annotated).tolist()
    figures: dict = {
        "dataset": folder.name,
        "pretrain_min": args.pretrain_min,
        "finetune_min": args.finetune_min,
        "sizes": {},
    }
    for n in (int(s) for s in args.sizes.split(",")):
        subset = train_ds.subset(sorted(order[:n]))
        row = {}
        for name, init in (("random", None), ("pretrained", str(weights))):
            path = out / f"unet-{n}-{name}.pt"
            config = TrainConfig(budget_min=args.finetune_min, weights=init)
            t0 = time.perf_counter()
            run(train(subset, config, path))
            fit = time.perf_counter() - t0
            predictor = Predictor.load(path)
            point = predictor.operating_point
            s = score(
                test_ds.images,
                folder,
                lambda im, p=predictor: predict_image(p, im),
                point,
                predictor.classes,
            )
            s["fit_s"] = fit
            row[name] = s
            diff = (
                ""
                if name == "random"
                else "  ({:+.3f} F1, {:+.3f} pixel IoU)".format(
                    s["f1"] - row["random"]["f1"], s["pixel_iou"] - row["random"]["pixel_iou"]
                )
            )
            print(
                f"{n:4d} annotated, {name:10s}: instance F1 {s['f1']:.3f}  pixel IoU "
                f"{s['pixel_iou']:.3f}  pixel F1 {s['pixel_f1']:.3f}  fit {fit / 60:.1f} min"
                f"{diff}",
                flush=True,
            )
        figures["sizes"][n] = row
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
