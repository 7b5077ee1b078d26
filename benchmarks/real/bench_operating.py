"""Operating points of one trained model: what each way of choosing one picks on the
validation images, and what that point gives on the test images.

    .venv/bin/python benchmarks/real/bench_operating.py DATASET CHECKPOINT [--grid]

``CHECKPOINT`` is a model trained on ``DATASET`` (a folder written by ``prepare_*.py``),
e.g. by ``bench_real.py``; its validation images are the trainer's (``ml.data.split``
with the checkpoint's settings). For its map (as ``predict`` makes it) and, in the same
run, for the no-learning reference (its map scaled as ``bench_real.py`` does, so that
the threshold best on the training images sits at 0.5), every point of the grid
(:data:`~napari_bioanomaly.core.operating.THRESHOLDS` x
:data:`~napari_bioanomaly.core.operating.MIN_AREAS`) is scored on the validation and on
the test images: regions, instance F1 at IoU 0.5, precision, recall, F1 and F2 (recall
weighted twice) of the regions at IoU 0.25, and pixel F1. Each criterion picks its best
point on the validation images (pixel F1, what thin structures use; the mean of instance
and pixel F1; F1 and F2 at IoU 0.25, as proposals to review would be judged) and its
test figures are printed beside. Hysteresis points (components of ``map > low`` kept
when they hold a pixel above ``high``, as Canny keeps edges) are scored the same way:
they keep the faint ends of a crack whose middle is bright. ``--grid`` prints every
point.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real import reference_threshold

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.metrics import iou_matrix, match
from napari_bioanomaly.core.operating import MIN_AREAS, THRESHOLDS
from napari_bioanomaly.core.reference import reference_map

#: What is printed per point, in this order.
FIGURES = ("regions", "F1@.5", "P@.25", "R@.25", "F1@.25", "F2@.25", "pixel F1")
#: What each criterion maximises on the validation images (index into FIGURES), by name.
CRITERIA = {"pixel F1": 6, "mean of F1@.5 and pixel F1": -1, "F1@.25": 4, "F2@.25": 5}


def component_rows(heat: np.ndarray, truth: np.ndarray, low: float) -> np.ndarray:
    """One row per component of ``heat > low``: its maximum, area, pixels inside the
    truth, and whether it matches a true region at IoU 0.5 and at IoU 0.25."""
    labels, n = ndimage.label(heat > low)
    rows = np.zeros((n, 5))
    if n:
        index = np.arange(1, n + 1)
        rows[:, 0] = ndimage.maximum(heat, labels, index)
        rows[:, 1] = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        rows[:, 2] = np.bincount(labels[truth > 0], minlength=n + 1)[1:]
        present = np.bincount(truth.ravel())[1:] > 0
        ious = iou_matrix(truth, labels)[present]
        for col, at in ((3, 0.5), (4, 0.25)):
            rows[match(ious, at)[1], col] = 1
    return rows


class Sweep:
    """The figures of every point on a set of images (maps and instance label images)."""

    def __init__(self, maps: list[np.ndarray], truths: list[np.ndarray]) -> None:
        self.n_truth = sum(int(np.count_nonzero(np.bincount(t.ravel())[1:])) for t in truths)
        self.truth_px = sum(int(np.count_nonzero(t)) for t in truths)
        self.rows = {low: np.concatenate([component_rows(m, t, low) for m, t in
                                          zip(maps, truths, strict=True)])
                     for low in THRESHOLDS}  # fmt: skip

    def figures(self, low: float, high: float, area: float) -> tuple[float, ...]:
        rows = self.rows[low]
        kept = rows[(rows[:, 0] > high) & (rows[:, 1] >= area)]
        n, tp5, tp25 = len(kept), kept[:, 3].sum(), kept[:, 4].sum()
        p = tp25 / n if n else 0.0
        r = tp25 / self.n_truth if self.n_truth else 0.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        pixel = 2 * kept[:, 2].sum() / (kept[:, 1].sum() + self.truth_px)
        return (n, 2 * tp5 / (n + self.n_truth), p, r, 2 * tp25 / (n + self.n_truth), f2, pixel)


def points(hysteresis: bool) -> list[tuple[float, float, float]]:
    """(low, high, min area): thresholded (low = high) and, with ``hysteresis``, grown."""
    out = [(t, t, a) for t in THRESHOLDS for a in MIN_AREAS]
    if hysteresis:
        out += [(lo, hi, a) for lo in THRESHOLDS for hi in THRESHOLDS if hi > lo
                for a in MIN_AREAS]  # fmt: skip
    return out


def text(values: tuple[float, ...]) -> str:
    return f"{int(values[0]):5d} " + " ".join(f"{v:.3f}" for v in values[1:])


def report(name: str, val: Sweep, test: Sweep, grid: bool) -> None:
    print(f"\n{name}: {val.n_truth} validation regions, {test.n_truth} test regions")
    head = "  ".join(FIGURES)
    if grid:
        print(f"  low  high   area | validation: {head} | test: {head}")
        for p in points(True):
            print(f"  {p[0]:.2f} {p[1]:.2f} {p[2]:6.0f} | {text(val.figures(*p))} | "
                  f"{text(test.figures(*p))}")  # fmt: skip
    print(f"  chosen by (validation)  {'':10s} point | validation: {head} | test: {head}")
    for hysteresis in (False, True):
        for criterion, k in CRITERIA.items():

            def value(p: tuple[float, float, float], k: int = k) -> tuple[float, float]:
                f = val.figures(*p)
                return (round((f[1] + f[6]) / 2 if k < 0 else f[k], 3), -abs(p[1] - 0.5))

            best = max(points(hysteresis), key=value)
            where = f"{best[0]:g}" + (f"-{best[1]:g}" if best[1] != best[0] else "")
            label = criterion + (" (hysteresis)" if hysteresis else "")
            print(f"  {label:38s} {where:>8s} {best[2]:5.0f} px | {text(val.figures(*best))} | "
                  f"{text(test.figures(*best))}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--grid", action="store_true", help="print every point")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import torch

    from napari_bioanomaly.ml import data
    from napari_bioanomaly.ml.predict import Predictor, predict_image

    folder = args.dataset
    train_ds, _ = annotations.load(folder / "train.json")
    test_ds, _ = annotations.load(folder / "test.json")
    predictor = Predictor.load(args.checkpoint, args.device)
    _, val_idx = data.split(train_ds, predictor.config)
    classes = train_ds.class_names()
    t_ref = reference_threshold(folder, train_ds.images)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; {folder.name}, {args.checkpoint.name} "
          f"(stored point: {predictor.operating_point.describe()})")  # fmt: skip
    sweeps: dict[str, list[Sweep]] = {"model": [], "reference": []}
    for images in ([train_ds.images[i] for i in val_idx], test_ds.images):
        maps: dict[str, list[np.ndarray]] = {"model": [], "reference": []}
        truths = []
        for im in images:
            image = read_image(folder / im.filename)
            heat = 1.0 - predict_image(predictor, image)[0][0]
            maps["model"].append(heat)
            maps["reference"].append(np.clip(0.5 * reference_map(image) / max(t_ref, 1e-9), 0, 1))
            truths.append(data.rasterise(im, classes, heat.shape)[1])
        for key in sweeps:
            sweeps[key].append(Sweep(maps[key], truths))
    for key, (val, test) in sweeps.items():
        report(key, val, test, args.grid)


if __name__ == "__main__":
    main()
