"""The memory-bank trainer: the descriptor network (random-weight encoders; with learned
descriptors a network trained on the normal images without annotations first,
:mod:`.descriptors`; none for the filter responses of :mod:`.features`), then
descriptors of normal pixels, a coreset, calibration and validation; with ``auto``
descriptors, a bank of each of two kinds and the better one on validation. The
annotated validation images also choose the image score's pooling (:func:`_choose_pooling`),
whether the map is sharpened by local contrast and the operating point
(:func:`_choose_point`). One of the trainers of :mod:`.train`."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..core.chooser import PointChooser
from ..core.imagemetrics import roc_auc
from ..core.model import BioAnomalyError, Dataset
from ..core.operating import OperatingPoint, f1_score
from ..core.reference import line_map
from ..core.text import counted
from . import data
from .anomaly import (
    BANK_SIZE,
    CANDIDATES,
    LINE_WINDOW,
    MAP_TOP_FRACTION,
    TOP_FRACTION,
    TOP_FRACTIONS,
    calibrate,
    coreset,
    image_z,
    line_top,
    memory_descriptors,
    outliers,
    raw_map,
    sharpen,
    top_k,
    top_ks,
    with_lines,
)
from .anomaly_fit import calibrate_scoring, image_levels, separation
from .checkpoint import checkpoint_payload, last_path, save_checkpoint
from .config import NO_LINES_CHOICE, TrainConfig
from .data import spread
from .descriptors import ENCODERS, EncoderEnsemble, PatchEncoder
from .device import pick_device
from .distributed import Dist
from .events import SCORE_LABELS, TrainEvent, TrainResult
from .trainer import TrainJob, budget_minutes
from .validation import POINT_IMAGES

#: The descriptors ``auto`` compares, cheapest first (it wins ties). On KolektorSDD the
#: random encoders' maps are clearly better, on CrackForest, NEU-Seg and the hard sample
#: the filters' (docs/benchmarks.md): validation decides for the user's images.
AUTO = ("filters", "random")
#: How much better (mean of validation image ROC-AUC and pixel AUROC) a later kind must be.
MARGIN = 0.01
#: Share of the run's time budget spent learning the descriptor network (the rest builds
#: the bank and calibrates it: about a minute for 400 images on 2 CPU cores).
LEARN_SHARE = 0.8


def train_memory(
    dataset: Dataset,
    config: TrainConfig,
    out: Path,
    train_idx: list[int],
    val_idx: list[int],
    cancel: threading.Event,
) -> Generator[Any, None, Any]:
    """Build the memory bank from normal pixels of the training images, calibrate it on
    the validation images, measure image ROC-AUC and pixel AUROC there, save the checkpoint.

    With ``descriptors="auto"`` one bank of each of :data:`AUTO` is built and the one
    whose validation images are told apart better is kept (:func:`_better`); without
    annotated validation images, only the first (filter responses) is built.

    Yields the events of neural training (one step per image) and returns a
    :class:`~.train.TrainResult`.
    """
    device = pick_device(config.device)
    annotated = sum(1 for i in val_idx if dataset.images[i].regions)
    yield TrainEvent("status", 0, 1, 0, 1, message=f"{counted(len(train_idx), 'image')} to learn "
                     f"from, {len(val_idx)} to validate on ({annotated} annotated)")  # fmt: skip
    kinds = AUTO if config.descriptors == "auto" else (config.descriptors,)
    if len(kinds) > 1 and not any(dataset.images[i].regions for i in val_idx):
        kinds = kinds[:1]  # nothing to tell the banks apart by: the first, cheapest
        yield TrainEvent("status", 0, 1, 0, 1, message="no annotated validation images to "
                         f"choose the descriptors by: {kinds[0]}")  # fmt: skip
    learned: PatchEncoder | None = None
    if "learned" in kinds:  # under torchrun every process learns it, process 0 keeps the bank
        dist = Dist.setup(device)
        try:
            learned = yield from _learn_encoder(dataset, config, train_idx, device, cancel, dist)
            dist.close(finished=True)
        finally:
            dist.close()
        if cancel.is_set():
            return TrainResult(None, last_path(out), [], None, True, str(device))
        if not dist.main:
            return TrainResult(None, last_path(out), [], None, False, str(device))
    best: _Bank | None = None
    # the banks visit the same images; the cue relative to its surroundings
    line_maps = data.DerivedCache(lambda norm: line_map(norm, window=LINE_WINDOW))
    for kind in kinds:
        bank = yield from _build(dataset, config, kind, train_idx, val_idx, device, cancel,
                                 line_maps, learned)  # fmt: skip
        if bank is None:
            return TrainResult(None, last_path(out), [], None, True, str(device))
        if len(kinds) > 1:
            text = _validation_text(bank.alone)
            yield TrainEvent(
                "status", 0, 1, 0, 1, message=f"{kind} descriptors: {text} on the validation images"
            )
        if best is None or _better(bank, best):
            best = bank
    assert best is not None
    if len(kinds) > 1:
        yield TrainEvent("status", 0, 1, 0, 1, message=f"keeping the {best.kind} descriptors")
    encoder = best.encoder
    # nothing chose the pooling: the image score is the top of the map shown (where
    # validation images were kept apart to calibrate it on)
    by_map = not best.alone.chooses_point and bool(best.map_tops.get("plain"))
    if by_map:
        yield TrainEvent("status", 0, 1, best.steps, best.steps, message=MAP_SCORE_TEXT)
    elif best.pooling is not None:
        yield TrainEvent("status", 0, 1, best.steps, best.steps, message=best.pooling.describe())
    lines = _choose_lines(best, config.lines)
    if best.lined is not None:
        yield TrainEvent("status", 0, 1, best.steps, best.steps,
                         message=_lines_message(best, config.lines, lines))  # fmt: skip
    chosen = best.lined if lines and best.lined is not None else best.alone
    point, sharp = _choose_point(chosen, config.sharpen)
    scoring = {**best.scoring, "sharpen": sharp, "lines": lines}
    if not lines:
        scoring = {k: v for k, v in scoring.items() if not k.startswith("line_")}
    elif not chosen.chooses_point:  # the calibrated 0.5 is the point: see
        scoring["line_join"] = "rms"  # .anomaly.with_lines
    if by_map:
        tops = best.map_tops["rms" if lines else "plain"]
        scoring.update(image_from="map", image_top=MAP_TOP_FRACTION, **image_levels(tops))
    pixel_auc = chosen.sharp_pixel_auc if sharp else chosen.val_pixel_auc
    for message in _point_messages(chosen, config.sharpen, point, sharp):
        yield TrainEvent("status", 0, 1, best.steps, best.steps, message=message)
    history = [{"epoch": 0, "loss": None, "val_auc": chosen.val_auc,
                "val_pixel_auc": pixel_auc}]  # fmt: skip
    payload = checkpoint_payload(config, ["anomaly"], history, 0, chosen.val_auc)
    payload.update(scoring=scoring, best_label=SCORE_LABELS["memory"],
                   operating_point=point.to_dict())  # fmt: skip
    if encoder is not None:
        payload["state_dict"] = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    saved = save_checkpoint(out, payload)
    last = save_checkpoint(last_path(out), payload)
    yield TrainEvent("epoch", 0, 1, best.steps, best.steps, val_auc=chosen.val_auc,
                     val_pixel_auc=pixel_auc)  # fmt: skip
    return TrainResult(saved, last, history, chosen.val_auc, False, str(device),
                       SCORE_LABELS["memory"], point)  # fmt: skip


@dataclass
class _Maps:
    """How one way of making a bank's map does on the validation images: image ROC-AUC,
    pixel AUROC as mapped and sharpened, and what its operating point is chosen from
    (the maps as they are, ``points["plain"]``, and sharpened, ``points["sharp"]``,
    :func:`.anomaly.sharpen`)."""

    val_auc: float | None
    val_pixel_auc: float | None
    points: dict[str, PointChooser]
    sharp_pixel_auc: float | None = None

    @property
    def chooses_point(self) -> bool:
        """Whether annotated validation regions choose the operating point (otherwise it
        is the default: the calibrated 0.5)."""
        return bool(self.points["plain"].n_truth)

    @property
    def separation(self) -> float | None:
        """Mean of the validation image ROC-AUC and pixel AUROC that are defined."""
        known = [v for v in (self.val_auc, self.val_pixel_auc) if v is not None]
        return sum(known) / len(known) if known else None


@dataclass
class _Bank:
    """A calibrated memory bank of one kind of descriptors and its validation: its map
    alone (``alone``) and joined by the line cue (``lined``; ``None`` when not tried)."""

    kind: str
    scoring: dict[str, Any]
    encoder: nn.Module | None
    steps: int
    alone: _Maps
    lined: _Maps | None = None
    pooling: _Pooling | None = None
    #: each validation image's mean of the top :data:`.anomaly.MAP_TOP_FRACTION` of the
    #: calibrated map alone (``plain``) and joined by the line cue's root mean square
    #: (``rms``): the image score where no annotated validation image chooses the point
    map_tops: dict[str, list[float]] = field(default_factory=dict)


def _better(bank: _Bank, than: _Bank) -> bool:
    """Whether ``bank`` tells the validation images apart better than ``than`` (by more
    than :data:`MARGIN`: the cheaper, earlier kind wins ties and unmeasured cases)."""
    return _gains(bank.alone, than.alone)


def _gains(maps: _Maps, than: _Maps) -> bool:
    ours, theirs = maps.separation, than.separation
    return ours is not None and theirs is not None and ours > theirs + MARGIN


def _choose_lines(bank: _Bank, setting: str) -> bool:
    """Whether the line cue joins the map: with ``auto`` where that tells the validation
    images apart better (:func:`_gains`), and where no annotated validation image can
    tell (:data:`.config.NO_LINES_CHOICE`); never when it was not tried."""
    if bank.lined is None:
        return False
    if setting == "auto":
        return bank.alone.separation is None or _gains(bank.lined, bank.alone)
    return setting == "yes"


def _lines_message(bank: _Bank, setting: str, lines: bool) -> str:
    assert bank.lined is not None
    if bank.alone.separation is None and setting == "auto":  # nothing to choose by
        return NO_LINES_CHOICE
    text = (f"line cue: {_validation_text(bank.lined)} on the validation images, "
            f"{_validation_text(bank.alone)} without")  # fmt: skip
    return text + ("; joining it" if lines else "; not joining it")


def _choose_point(maps: _Maps, setting: str) -> tuple[OperatingPoint, bool]:
    """The operating point on the validation images, and whether the map is sharpened:
    with ``auto``, where that raises the validation score of the point
    (:func:`~..core.operating.f1_score`) by more than :data:`MARGIN`; never without
    annotated validation images (the default point then)."""
    if not maps.chooses_point:
        return OperatingPoint(), setting == "yes"
    plain, sharp = maps.points["plain"].choose(), maps.points["sharp"].choose()
    if setting == "auto":
        return (sharp, True) if _point_score(sharp) > _point_score(plain) + MARGIN \
            else (plain, False)  # fmt: skip
    return (sharp, True) if setting == "yes" else (plain, False)


def _point_score(point: OperatingPoint) -> float:
    return f1_score(point.f1 or 0.0, point.pixel_f1 or 0.0, point.criterion)


def _point_messages(maps: _Maps, setting: str, point: OperatingPoint, sharp: bool) -> list[str]:
    """What the choice of the operating point and of sharpening reports."""
    if not maps.chooses_point:
        return [
            "no annotated validation images: the default operating point"
            + (", sharpened" if sharp else "")
        ]
    if setting != "auto":
        return [f"operating point{' (sharpened map)' if sharp else ''}: {point.describe()}"]
    plain, sharpened = (maps.points[k].choose() for k in ("plain", "sharp"))
    what = "pixel F1" if plain.criterion == "pixel" else "mean of instance and pixel F1"
    return [
        f"validation {what}: {_point_score(plain):.3f} as mapped, {_point_score(sharpened):.3f} "
        f"sharpened by local contrast; {'sharpening' if sharp else 'not sharpening'}",
        f"operating point: {point.describe()}",
    ]


def _validation_text(bank: _Maps) -> str:
    def show(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return f"image ROC-AUC {show(bank.val_auc)}, pixel AUROC {show(bank.val_pixel_auc)}"


def _build(
    dataset: Dataset,
    config: TrainConfig,
    kind: str,
    train_idx: list[int],
    val_idx: list[int],
    device: torch.device,
    cancel: threading.Event,
    line_maps: data.DerivedCache,
    learned: PatchEncoder | None = None,
) -> Generator[TrainEvent, None, _Bank | None]:
    """One calibrated bank of ``kind`` descriptors and its validation scores (``None``
    when stopped); the line cue of an image from ``line_maps``; ``learned``: the
    descriptor network of the ``learned`` kind (:func:`_learn_encoder`)."""
    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    classes = dataset.class_names()
    encoder: nn.Module | None = None
    if kind == "learned":
        encoder = learned
    elif kind == "random":
        encoder = EncoderEnsemble(config.width, ENCODERS, config.seed).to(device).eval()

    chosen = spread(train_idx, 256)
    per_image = max(1000, CANDIDATES // max(1, len(chosen)))
    candidates, owners = [], []
    for step, i in enumerate(chosen, start=1):
        if cancel.is_set():
            return None
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        # descriptors every 4th pixel, away (8 px) from annotated anomalies
        near = ndimage.binary_dilation(cls > 0, iterations=8)[::4, ::4]
        feats = memory_descriptors(norm, 4, encoder, device)[~near]
        if len(feats):
            candidates.append(feats[rng.choice(len(feats), min(len(feats), per_image), False)])
            owners.append(np.full(len(candidates[-1]), i))
        name = dataset.images[i].filename
        yield TrainEvent("step", 0, 1, step, len(chosen),
                         message=f"{kind} descriptors of {name}")  # fmt: skip
    if not candidates:
        raise BioAnomalyError("no normal pixels in the training images for the memory bank")
    pool = np.concatenate(candidates)
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-6
    standard = torch.from_numpy((pool - mean) / std)
    if config.bank_outliers:
        drop = outliers(standard, np.concatenate(owners), config.bank_outliers, config.seed)
        standard = standard[~drop]
        left = counted(int(drop.sum()), "candidate patch", "candidate patches")
        yield TrainEvent("status", 0, 1, len(chosen), len(chosen), message=(
            f"left out {left} of {len(pool):,}, the farthest from other images' (anomalies "
            "nobody annotated)"))  # fmt: skip
    bank = coreset(standard, BANK_SIZE, config.seed)
    scoring: dict[str, Any] = {"mean": mean.tolist(), "std": std.tolist(), "bank": bank,
                               "descriptors": kind, "line_window": LINE_WINDOW}  # fmt: skip
    if isinstance(encoder, EncoderEnsemble):
        scoring["encoders"] = len(encoder.members)
    yield TrainEvent("status", 0, 1, len(chosen), len(chosen),
                     message=f"calibrating anomaly scores ({kind} descriptors)")  # fmt: skip
    lines = config.lines != "no"
    scoring = calibrate_scoring("memory", encoder, scoring, dataset, val_idx or train_idx,
                                config, device, all_levels=True, lines=lines,
                                line_maps=line_maps)  # fmt: skip
    levels = scoring.pop("image_levels")
    labels, tops, line_tops, px_labels = [], [], [], []
    map_tops: dict[str, list[float]] = {"plain": [], "rms": []}
    px_scores: dict[str, list[np.ndarray]] = {k: [] for k in _VARIANTS}
    points = {k: PointChooser(classes=classes) for k in _VARIANTS}
    on_point = set(spread(val_idx, POINT_IMAGES))
    for i in val_idx:
        if cancel.is_set():
            return None
        norm = cache(i)
        raw = raw_map("memory", norm, encoder, scoring, device)
        heat = calibrate(raw, scoring["center"], scoring["threshold"])
        maps = {"plain": heat, "sharp": sharpen(heat, norm, scoring)}
        map_tops["plain"].append(top_k(heat, fraction=MAP_TOP_FRACTION))
        if lines:
            cue = line_maps(i, norm)
            line_tops.append(line_top(cue))
            maps["lines"] = with_lines(heat, cue, scoring)
            maps["lines_sharp"] = sharpen(maps["lines"], norm, scoring)
            rms = with_lines(heat, cue, {**scoring, "line_join": "rms"})
            map_tops["rms"].append(top_k(rms, fraction=MAP_TOP_FRACTION))
        cls, inst = data.rasterise(dataset.images[i], classes, norm.shape)
        labels.append(int(bool(dataset.images[i].regions)))
        tops.append(top_ks(raw))
        pick = rng.choice(heat.size, min(heat.size, 4096), replace=False)
        px_labels.append((cls > 0).ravel()[pick])
        for key, m in maps.items():
            px_scores[key].append(m.ravel()[pick])
            if i in on_point:
                points[key].add(m, inst)
    pooling = _choose_pooling(labels, tops)
    scoring.update(image_top=pooling.fraction, **levels[pooling.fraction])
    scores = [t[TOP_FRACTIONS.index(pooling.fraction)] for t in tops]

    def judged(plain: str, sharp: str, image_scores: list[float]) -> _Maps:
        val_auc, val_pixel_auc = separation(labels, image_scores, px_labels, px_scores[plain])
        sharp_auc = separation(labels, image_scores, px_labels, px_scores[sharp])[1]
        return _Maps(val_auc, val_pixel_auc, {"plain": points[plain], "sharp": points[sharp]},
                     sharp_auc)  # fmt: skip

    alone = judged("plain", "sharp", scores)
    lined = None
    if lines:
        joined = [image_z(r, scoring, t) for r, t in zip(scores, line_tops, strict=True)]
        lined = judged("lines", "lines_sharp", joined)
    return _Bank(kind, scoring, encoder, len(chosen), alone, lined, pooling, map_tops)


#: What the training log says of the image score without annotated validation images.
MAP_SCORE_TEXT = (f"image score: mean of the top {100 * MAP_TOP_FRACTION:g}% of the map (no "
                  "annotated validation image to choose its pooling by)")  # fmt: skip

#: The validation maps a bank's choices are made on: its map as it is and sharpened, and
#: the same joined by the line cue.
_VARIANTS = ("plain", "sharp", "lines", "lines_sharp")


@dataclass(frozen=True)
class _Pooling:
    """The share of the map's top pixels whose mean is the image score, and the
    validation image ROC-AUC of each share tried (empty when not measurable)."""

    fraction: float
    aucs: tuple[float, ...] = ()

    def describe(self) -> str:
        text = f"image score: mean of the top {100 * self.fraction:g}% of the map"
        if self.aucs:
            text += " (validation image ROC-AUC " + ", ".join(
                f"{a:.3f} at {100 * f:g}%" for f, a in zip(TOP_FRACTIONS, self.aucs, strict=True)
            ) + ")"  # fmt: skip
        return text


def _choose_pooling(labels: list[int], tops: list[list[float]]) -> _Pooling:
    """The image score's share of top pixels (:data:`.config.TOP_FRACTIONS`) that ranks
    the validation images best, by more than :data:`MARGIN` over the default
    (:data:`.config.TOP_FRACTION`); the default without both normal and annotated
    validation images."""
    if not 0 < sum(labels) < len(labels):
        return _Pooling(TOP_FRACTION)
    aucs = tuple(roc_auc(labels, [t[j] for t in tops]) for j in range(len(TOP_FRACTIONS)))
    default = aucs[TOP_FRACTIONS.index(TOP_FRACTION)]
    best = max(range(len(aucs)), key=lambda j: aucs[j])
    fraction = TOP_FRACTIONS[best] if aucs[best] > default + MARGIN else TOP_FRACTION
    return _Pooling(fraction, aucs)


def _learn_encoder(
    dataset: Dataset,
    config: TrainConfig,
    train_idx: list[int],
    device: torch.device,
    cancel: threading.Event,
    dist: Dist,
) -> Generator[TrainEvent, None, PatchEncoder]:
    """The descriptor network: a U-Net trained by masked-image reconstruction on the
    training images without annotations (all of them if every one has some), for
    :data:`LEARN_SHARE` of the time budget or ``config.epochs`` epochs, by the processes
    of ``dist`` together; its encoder."""
    from .pretrain import learn_images

    normal = [i for i in train_idx if not dataset.images[i].regions] or list(train_idx)
    minutes = LEARN_SHARE * budget_minutes(config, device)
    length = f"{config.epochs} epochs" if config.epochs else f"{minutes:.1f} min"
    what = (f"learning descriptors from {len(normal)} normal images (self-supervised, "
            f"{length})")  # fmt: skip
    yield TrainEvent("status", 0, 1, 0, 1, message=what)
    gen = learn_images(dataset, normal, config.replace(budget_min=minutes), cancel, dist=dist)
    try:
        while True:
            event = next(gen)
            if event.kind == "epoch":
                yield TrainEvent(
                    "status",
                    0,
                    1,
                    0,
                    1,
                    message=f"{what}: epoch "
                    f"{event.epoch + 1}, reconstruction loss {event.loss:.4f}",
                )
    except StopIteration as stop:
        unet = stop.value[0]
    return PatchEncoder.from_unet(unet, config.width).to(device).eval()


def fit(job: TrainJob) -> Generator[Any, None, Any]:
    """The memory bank as a trainer (see :mod:`.trainer`)."""
    return (yield from train_memory(job.dataset, job.config, job.out, job.train_idx,
                                    job.val_idx, job.cancel))  # fmt: skip
