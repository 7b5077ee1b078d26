"""Model quality on a real dataset: every model trained with its defaults, scored on test images.

    .venv/bin/python benchmarks/real/bench_real.py DATASET [--models unet,forest,memory]

``DATASET`` is a folder written by ``prepare_*.py`` (``train.json``,
``test.json``, ``images/``). Each model is trained on the training images with
no option changed (``TrainConfig(model=NAME)``: what one click in napari does),
then predicts the test images at the operating point stored in its checkpoint,
as ``napari-bioanomaly predict`` does (``--tta`` models again with test-time
augmentation, at the point chosen on averaged maps where the model has one and then at
its plain point too, and the ``--ensemble`` models as one; the row predict gives with no
option, TTA where it paid on the model's validation images, is marked "predict default"). Printed per model: instance F1 at IoU
0.5, the recall of regions at IoU 0.25 (``recall_25``: what proposals must find), pixel IoU and pixel F1 of the union of predicted regions, image ROC-AUC
(when the test set has normal and anomalous images), pixel AUROC of the
anomaly map, fit and prediction time; and ``peak_on_defect``, the share of defective test
images whose map is highest within 8 px of a true region: an image score can rank defective
images first for something else they share (on BSData, the soiling of later images), which
image ROC-AUC alone does not show.

The reference, run in the same process on the same images, learns nothing: its
map is ``|x - median_31(x)|`` (smoothed), and its regions are that map above the
one threshold that gives the best pixel F1 on the training images (so it is as
good as a fixed filter can be made). Add ``--json FILE`` to keep the figures.

``--unannotated`` trains on the training images with every annotation removed: a lab's
folder of images and nothing else, the unsupervised models' one-click case (no
annotated validation image then chooses their settings or operating point; the defective
training images are learned from as they are). The reference keeps its threshold chosen on
the annotated training images.

``--reuse --retune`` scores models already trained with their operating point chosen
again by today's chooser; where that point has a minimum peak (hysteresis) or vote
weights, the best point without them is chosen too and scored beside it, in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.evaluate import evaluate
from napari_bioanomaly.core.imagemetrics import roc_auc
from napari_bioanomaly.core.images import read_image
from napari_bioanomaly.core.model import Dataset, ImageRecord
from napari_bioanomaly.core.operating import OperatingPoint
from napari_bioanomaly.core.reference import best_threshold, reference_map


def truth_mask(im: ImageRecord, shape: tuple[int, int]) -> np.ndarray:
    from napari_bioanomaly.ml import data

    cls, _ = data.rasterise(im, sorted({r.label for r in im.regions}), shape)
    return cls > 0


def without_annotations(dataset: Dataset) -> Dataset:
    """A copy of ``dataset`` whose images hold no region and are not marked as checked
    normal either (``dataset`` is left as it is)."""
    bare = copy.deepcopy(dataset)
    for im in bare.images:
        im.regions = []
        im.no_anomaly = False
    return bare


def reference_threshold(folder: Path, images: list[ImageRecord], limit: int = 60) -> float:
    """The reference's threshold: best pixel F1 on (at most ``limit``) training images."""
    chosen = images[:: max(1, len(images) // limit)]
    maps = [reference_map(read_image(folder / im.filename)) for im in chosen]
    return best_threshold(
        maps, [truth_mask(im, m.shape) for im, m in zip(chosen, maps, strict=True)]
    )


#: how far (px) from a true region an image's highest map pixel may lie and still be on it
PEAK_REACH = 8


def peak_on_defect(heat: np.ndarray, truth: np.ndarray, reach: int = PEAK_REACH) -> bool:
    """Whether the map's highest pixel lies within ``reach`` px of the true regions."""
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    rows, cols = np.nonzero(truth)
    return bool(len(rows)) and bool(np.min(np.maximum(abs(rows - r), abs(cols - c))) <= reach)


def score(
    test: list[ImageRecord], folder: Path, heat_of, point: OperatingPoint, classes: list[str]
) -> dict[str, float | None]:
    """Figures of one method on the test images (``heat_of(image) -> (probs, image score)``),
    its regions taken at ``point``."""
    from napari_bioanomaly.ml.predict import regions_from_probabilities

    labels, image_scores, px_labels, px_scores, peaks = [], [], [], [], []
    pred = Dataset(root=folder, classes=list(classes))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for im in test:
        probs, image_score = heat_of(read_image(folder / im.filename))
        heat = 1.0 - probs[0]
        regions = regions_from_probabilities(
            probs,
            classes,
            point.threshold,
            point.min_area,
            class_min_area=point.class_min_area,
            min_peak=point.min_peak,
            vote_weights=point.vote_weights,
        )
        pred.images.append(ImageRecord(im.filename, heat.shape, regions=regions))
        truth = truth_mask(im, heat.shape)
        labels.append(int(bool(im.regions)))
        if im.regions:
            peaks.append(peak_on_defect(heat, truth))
        image_scores.append(image_score if image_score is not None else float(heat.max()))
        pick = rng.choice(heat.size, min(heat.size, 20_000), replace=False)
        px_labels.append(truth.ravel()[pick])
        px_scores.append(heat.ravel()[pick])
    per_image = (time.perf_counter() - t0) / len(test)
    truth_ds = Dataset(images=test, root=folder, classes=list(classes))
    result = evaluate(truth_ds, pred, 0.5)
    loose = evaluate(truth_ds, pred, 0.25)  # proposals: found at all (IoU >= 0.25)?
    inter = sum(r.inter_px for r in result.rows)
    union = sum(r.union_px for r in result.rows)
    both = len(set(labels)) == 2
    return {
        "f1": result.f1,
        "precision": result.precision,
        "recall": result.recall,
        "recall_25": loose.recall,
        "pixel_iou": result.pixel_iou,
        "pixel_f1": 2 * inter / (inter + union) if union else 1.0,
        "image_auc": roc_auc(labels, image_scores) if both else None,
        "pixel_auc": roc_auc(np.concatenate(px_labels), np.concatenate(px_scores)),
        "peak_on_defect": float(np.mean(peaks)) if peaks else None,
        "predict_s_per_image": per_image,
        "n_pred": result.summary["pred"],
        "n_gt": result.summary["gt"],
        "class_f1": {c: v["f1"] for c, v in result.classes.items()} if len(classes) > 1 else {},
    }


def line(name: str, s: dict, ref: dict | None, fit: float | None = None) -> str:
    def f(key: str) -> str:
        v = s.get(key)
        if v is None:
            return f"{key} n/a"
        out = f"{key} {v:.3f}"
        if ref is not None and ref.get(key):
            out += f" ({v - ref[key]:+.3f})"
        return out

    keys = ("f1", "recall_25", "pixel_iou", "pixel_f1", "image_auc", "pixel_auc", "peak_on_defect")
    parts = [f(k) for k in keys]
    extra = f"  regions {s['n_pred']}/{s['n_gt']}"
    if s.get("class_f1"):
        extra += "  F1 by class " + ", ".join(f"{c} {v:.3f}" for c, v in s["class_f1"].items())
    if fit is not None:
        extra += f"  fit {fit / 60:.1f} min"
    extra += f"  predict {s['predict_s_per_image']:.2f} s/image"
    return f"{name:12s} " + "  ".join(parts) + extra


def retune(
    predictor,
    dataset: Dataset,
    peak_margin: float | None = None,
    vote_margin: float | None = None,
    tta: bool = False,
) -> OperatingPoint:
    """The predictor's operating point chosen again on its validation images, by the
    product's chooser (with ``peak_margin`` and ``vote_margin``, the margins a minimum
    peak and vote weights must earn; ``math.inf``: none; ``tta``: on averaged maps, with
    the plain point's criterion)."""
    from napari_bioanomaly.core import chooser
    from napari_bioanomaly.ml.data import split
    from napari_bioanomaly.ml.predict import run
    from napari_bioanomaly.ml.validation import operating_point

    _, val_idx = split(dataset, predictor.config)
    before = chooser.PEAK_MARGIN, chooser.VOTE_MARGIN
    if peak_margin is not None:
        chooser.PEAK_MARGIN = peak_margin
    if vote_margin is not None:
        chooser.VOTE_MARGIN = vote_margin
    try:
        criterion = predictor.operating_point.criterion if tta else None
        return run(
            operating_point(
                predictor.config,
                predictor.model,
                predictor.classes,
                predictor.extra,
                dataset,
                val_idx,
                predictor.device,
                0,
                1,
                1,
                criterion,
                tta=tta,
            )
        )
    finally:
        chooser.PEAK_MARGIN, chooser.VOTE_MARGIN = before


def fit_verbosely(gen, kind: str):
    """Drain a training generator, printing each epoch as the CLI does (a long run, or
    one stopped by a time limit, shows how far it got) with training samples per second,
    and how the epoch's time went: its training steps, the share of them spent waiting
    for tiles, and what came after them (validation, checkpoints)."""
    from napari_bioanomaly._cli_ml import _progress_line

    samples, start = 0, time.perf_counter()
    begun = last_step = start
    waited = 0.0
    try:
        while True:
            e = next(gen)
            now = time.perf_counter()
            if e.kind == "step":
                samples += e.batch or 0
                waited += (e.data_fraction or 0.0) * (now - last_step)
                last_step = now
            elif e.kind in ("status", "warning"):
                print(f"{kind}: {e.message}", flush=True)
                begun = last_step = now
            elif e.kind == "epoch":
                rate = samples / max(now - start, 1e-9)
                steps_s = last_step - begun
                print(f"{kind}: {_progress_line(e)}  {rate:.1f} samples/s over the run so far; "
                      f"steps {steps_s:.2f} s (~{100 * waited / max(steps_s, 1e-9):.0f}% waiting "
                      f"for tiles), then {now - last_step:.2f} s", flush=True)  # fmt: skip
                begun = last_step = now
                waited = 0.0
    except StopIteration as stop:
        return stop.value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--models", default="unet,forest,memory")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="where the models go (default: DATASET/models)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--reuse", action="store_true", help="use models already in --out")
    p.add_argument(
        "--unannotated",
        action="store_true",
        help="train the models on the training images without their annotations",
    )
    p.add_argument(
        "--retune",
        action="store_true",
        help="choose each model's operating point again on its validation images",
    )
    p.add_argument("--tta", default="unet", help="models also scored with test-time augmentation")
    p.add_argument("--ensemble", default="unet,forest", help="models also scored as one ensemble")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a default (for experiments; the table uses none)",
    )
    args = p.parse_args()

    import torch

    from napari_bioanomaly.ml.config import TTA_MODELS, TrainConfig
    from napari_bioanomaly.ml.events import TrainResult
    from napari_bioanomaly.ml.predict import Ensemble, Predictor, predict_image
    from napari_bioanomaly.ml.train import load_checkpoint, train

    folder = args.dataset
    train_ds, _ = annotations.load(folder / "train.json")
    test_ds, _ = annotations.load(folder / "test.json")
    test = test_ds.images
    classes = train_ds.class_names()
    out = args.out or folder / "models"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
    )
    n_def = sum(1 for im in test if im.regions)
    print(
        f"{folder.name}: {len(train_ds.images)} training images, {len(test)} test images "
        f"({n_def} with defects), classes {classes}"
    )

    t0 = time.perf_counter()
    t_ref = reference_threshold(folder, train_ds.images)

    def ref_probs(image: np.ndarray) -> tuple[np.ndarray, float]:
        m = reference_map(image)
        # "probability" = the map scaled so that the chosen threshold sits at 0.5
        p = np.clip(0.5 * m / max(t_ref, 1e-9), 0, 1)
        return np.stack([1.0 - p, p]), float(np.quantile(m, 0.999))

    ref = score(test, folder, ref_probs, OperatingPoint(0.5, 16), ["anomaly"])
    print(line("reference", ref, None, time.perf_counter() - t0))
    figures = {"dataset": folder.name, "reference": ref, "models": {}}
    overrides = {}
    for item in args.set:  # JSON where it reads as JSON (0.5, true, ["a", "b"]), else text
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    if overrides:
        print(f"changed defaults: {overrides}")
    learn_from = without_annotations(train_ds) if args.unannotated else train_ds
    if args.unannotated:
        print(f"training without the annotations of the {len(train_ds.images)} training images")
    models = {}
    for kind in args.models.split(","):
        config = TrainConfig(model=kind, device=args.device, **overrides)
        path = out / f"{kind}.pt"
        t0 = time.perf_counter()
        fit = None
        if args.reuse and path.is_file():
            print(f"{kind}: reusing {path}")
        else:
            fit_verbosely(train(learn_from, config, path), kind)
            fit = time.perf_counter() - t0
        predictor = Predictor.load(path, args.device)
        others = []  # with --retune: the point chosen without the newer settings, beside
        if args.retune:  # choose the operating point again (e.g. on a wider grid)
            predictor.operating_point = retune(predictor, learn_from)
            print(f"{kind}: operating point chosen again: {predictor.operating_point.describe()}")
            if predictor.operating_point.vote_weights:  # and the best with equal votes
                others.append(("equal votes", retune(predictor, learn_from, vote_margin=math.inf)))
            if predictor.operating_point.min_peak is not None:  # and the best without a peak
                others.append(("no min peak", retune(predictor, learn_from, peak_margin=math.inf)))
            for what, other in others:
                print(f"{kind}: {what}: {other.describe()}")
        models[kind] = predictor
        point = predictor.operating_point
        rows = [(kind, lambda im, p=predictor: predict_image(p, im), point)]
        rows += [(f"{kind} ({what})", rows[0][1], other) for what, other in others]
        if kind in args.tta.split(","):  # at the point chosen on averaged maps, if it has one
            with_tta = lambda im, p=predictor: predict_image(p, im, tta=True)  # noqa: E731
            if args.retune and predictor.tta_point is not None:
                predictor.tta_point = retune(predictor, learn_from, tta=True)
            rows.append((f"{kind}+tta", with_tta, predictor.point(tta=True)))
            if predictor.tta_point is not None:  # and at the plain point, beside it
                rows.append((f"{kind}+tta (plain point)", with_tta, point))
        # what predict does with no option: TTA where it paid on the model's validation
        default = f"{kind}+tta" if predictor.tta_by_default else kind
        if kind in TTA_MODELS:
            print(
                f"{kind}: predict's default: {'with' if predictor.tta_by_default else 'without'}"
                f" TTA ({predictor.tta_gain()})",
                flush=True,
            )
        for name, fn, point in rows:
            s = score(test, folder, fn, point, predictor.classes)
            s["default"] = name == default
            ckpt_best = load_checkpoint(path)
            s.update(
                fit_s=fit,
                threshold=point.threshold,
                min_area=point.min_area,
                min_peak=point.min_peak,
                vote_weights=point.vote_weights,
                class_min_area=point.class_min_area,
                best=ckpt_best.get("best_f1"),
                best_label=ckpt_best.get("best_label"),
                epochs=len(ckpt_best.get("history", [])),
            )
            figures["models"][name] = s
            best = TrainResult(path, path, best_f1=s["best"], best_label=s["best_label"] or "")
            print(
                line(name, s, ref, fit) + f"  ({'predict default; ' if s['default'] else ''}"
                f"{point.describe(scores=False)}; "
                f"{best.best_text()}; {s['epochs']} epochs)",
                flush=True,
            )
    members = [m for m in args.ensemble.split(",") if m in models]
    if len(members) > 1:
        ensemble = Ensemble([models[m] for m in members])
        point = ensemble.operating_point
        s = score(test, folder, lambda im: ensemble.probabilities(im), point, ensemble.classes)
        name = "+".join(members)
        figures["models"][name] = s
        print(line(name, s, ref) + f"  ({point.describe(scores=False)})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
