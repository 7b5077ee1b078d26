"""K-fold cross-validation: K models, each tested on images it never saw.

With ``group_by`` a file attribute (e.g. ``cell_line``), whole groups are
assigned to folds, so the same cell line (or plate, or day) is never on both
sides: the spread of the scores then says how well a model carries over to a
new group. Without it, folds are stratified: anomalous and normal images are
dealt out evenly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.evaluate import Report, evaluate
from ..core.jsonio import read_json, write_json
from ..core.model import BioAnomalyError, Dataset
from ..core.splits import folds
from ..core.text import counted
from .config import TrainConfig
from .data import class_names
from .device import pick_device
from .distributed import Dist, rank, world_size
from .predict import Predictor, predict_dataset, run
from .train import TrainEvent, learns_together, train

#: Metrics of each fold that are summarised (dataset-level, from :func:`evaluate`).
METRICS = ("f1", "precision", "recall", "pixel_iou", "mean_iou", "roc_auc", "average_precision")


@dataclass(frozen=True)
class CrossvalEvent:
    """Progress: a training event of fold ``fold`` or, with ``scores``, a finished fold;
    ``message`` says what starts, or (``warning``) what the user must know of the fold."""

    fold: int
    folds: int
    train: TrainEvent | None = None
    scores: dict[str, Any] | None = None
    message: str = ""
    warning: bool = False


def _fold_scores(result: Report) -> dict[str, Any]:
    image = result.image_level
    return {
        "f1": result.f1,
        "precision": result.precision,
        "recall": result.recall,
        "pixel_iou": result.pixel_iou,
        "mean_iou": result.summary["mean_iou"],
        "roc_auc": image["roc_auc"],
        "average_precision": image["average_precision"],
        "kappa": image["kappa"],
    }


def summarise_folds(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, sample standard deviation, minimum and maximum of each metric over the folds
    where it is defined."""
    out: dict[str, dict[str, Any]] = {}
    for name in (*METRICS, "kappa"):
        values = [f[name] for f in per_fold if f.get(name) is not None]
        if not values:
            out[name] = {"mean": None, "std": None, "min": None, "max": None, "folds": 0}
            continue
        arr = np.asarray(values, dtype=float)
        out[name] = {
            "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()),
            "max": float(arr.max()),
            "folds": len(arr),
        }
    return out


@dataclass(frozen=True)
class CrossvalResult:
    """Cross-validation of one model: each fold's scores (:func:`_fold_scores`, with its
    ``fold``, ``test_images``, ``groups`` and ``tta``: whether it predicted with test-time
    augmentation, as predict does by default) and their summary (:func:`summarise_folds`);
    ``cancelled`` when fewer folds than planned finished; ``running`` in the record written
    while the run goes on (after each fold: what a run killed leaves); ``failed``: why a
    run that raised (an error, a second Ctrl+C) ended, its finished folds kept."""

    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    model: str
    group_by: str | None
    iou_threshold: float
    cancelled: bool
    running: bool = False
    failed: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stale_folds(out_dir: Path, k: int) -> list[Path]:
    """Fold models in ``out_dir`` that a run of ``k`` folds would not write (``fold0.pt``
    of runs before the names counted from 1, ``fold5.pt`` of a run of more folds)."""
    if not out_dir.is_dir():
        return []
    mine = {f"fold{f}" for f in range(1, k + 1)}
    return sorted(
        p for p in out_dir.glob("fold*.pt")
        if p.name.removesuffix(".pt").removesuffix(".last") not in mine
    )  # fmt: skip


def check_fold_models(models: Sequence[str | Path]) -> None:
    """Refuse fold models (``fold<i>.pt`` beside a ``crossval.json``) that are not finished
    folds of the run that file records: a run stopped in fold 2 (or killed) left
    ``fold2.pt`` half-trained and ``fold3.pt`` of an earlier run, and
    ``predict --model cv/fold*.pt`` ensembled models of two runs without a word. A run writes
    its record as it goes (``running``, the folds finished so far): one killed leaves it,
    and the models of an earlier run beside it are refused too."""
    for model in map(Path, models):
        record = model.with_name("crossval.json")
        if re.fullmatch(r"fold\d+\.pt", model.name) is None or not record.is_file():
            continue
        try:
            data = read_json(record)
            finished = {str(f.get("model")) for f in data["folds"] if isinstance(f, dict)}
            stopped = bool(data.get("cancelled"))
            running = bool(data.get("running"))
            failed = str(data.get("failed") or "")
        except (BioAnomalyError, KeyError, TypeError):
            continue  # not a record this check can read: the models are what was asked for
        if model.name in finished:
            continue
        why = "not among its finished folds" + (
            f" (that run failed: {failed})" if failed
            else " (that run was stopped)" if stopped
            else " (that run did not end: it runs, or was killed)" if running else ""
        )  # fmt: skip
        listed = ", ".join(sorted(finished)) or "none"
        raise BioAnomalyError(
            f"{model}: not a fold model of the cross-validation run {record} records ({why}; "
            f"its finished folds: {listed}): a model of another run, or of a fold stopped "
            "half-trained; leave it out, or run the cross-validation again"
        )


def crossval(
    dataset: Dataset,
    config: TrainConfig,
    k: int,
    out_dir: str | Path,
    group_by: str | None = None,
    iou_threshold: float = 0.5,
    cancel: threading.Event | None = None,
) -> Generator[CrossvalEvent, None, CrossvalResult]:
    """Train on K-1 folds, predict and score the held-out fold, K times.

    Models go to ``out_dir/fold<i>.pt``, the result to ``out_dir/crossval.json``.
    On ``cancel`` the run stops within a training step; the folds finished so far
    are kept, summarised and written (``cancelled`` is then true).
    Returns the per-fold scores, their summary (:func:`summarise_folds`) and the
    folds' test images.
    """
    cancel = cancel or threading.Event()
    out_dir = Path(out_dir)
    # the folds first: settings they refuse (too few groups) must not touch an earlier run
    splits = folds(dataset, k, group_by, config.seed)
    stale = stale_folds(out_dir, k)
    if stale:
        raise BioAnomalyError(
            f"{out_dir}: holds {', '.join(p.name for p in stale)} of an earlier run, which this "
            f"run of {k} folds would not replace (and `predict --model {out_dir}/fold*.pt` "
            "would ensemble): move them away or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    # under torchrun the processes train each fold together; process 0 scores and writes
    main = rank() == 0
    dist = Dist()
    if world_size() > 1 and learns_together(config):
        # one process group for every fold: a group joined again after leaving one hangs
        dist = Dist.setup(pick_device(config.device))

    so_far: list[dict[str, Any]] = []  # the folds the record lists
    written: list[bool] = []  # whether this run wrote its record yet

    def record(per_fold: list[dict[str, Any]], stopped: bool = False, running: bool = True,
               failed: str = "") -> CrossvalResult:  # fmt: skip
        """The run's record so far, written (by process 0) over an earlier run's: the fold
        models that record lists are those of a finished fold of this run."""
        so_far[:] = per_fold
        outcome = CrossvalResult(
            folds=per_fold, summary=summarise_folds(per_fold), model=config.model,
            group_by=group_by, iou_threshold=iou_threshold, cancelled=stopped, running=running,
            failed=failed,
        )  # fmt: skip
        if main:
            # the earlier run's record kept as the .bak (each of this run's writes kept
            # the one before, so an earlier run's scores were gone after two writes)
            write_json(out_dir / "crossval.json", outcome.to_dict(), backup=not written)
            written.append(True)
        return outcome

    try:
        record([])  # before fold 1 replaces the earlier run's fold1.pt
        per_fold, stopped = yield from _folds(dataset, config, splits, out_dir, group_by,
                                              iou_threshold, cancel, main, record)  # fmt: skip
        dist.close(finished=True)
    except (Exception, KeyboardInterrupt, GeneratorExit) as exc:  # it ended: not "it runs"
        # (GeneratorExit: closed by its caller, as the CLI does on a second Ctrl+C)
        why = ("interrupted" if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) else str(exc)
               if isinstance(exc, BioAnomalyError) else f"{type(exc).__name__}: {exc}")  # fmt: skip
        with contextlib.suppress(Exception):  # the error said is the run's, not this write's
            record(list(so_far), stopped=True, running=False, failed=why)
        raise
    finally:
        dist.close()
    return record(per_fold, stopped, running=False)


def _folds(
    dataset: Dataset,
    config: TrainConfig,
    splits: list[list[int]],
    out_dir: Path,
    group_by: str | None,
    iou_threshold: float,
    cancel: threading.Event,
    main: bool,
    record: Callable[[list[dict[str, Any]]], Any],
) -> Generator[CrossvalEvent, None, tuple[list[dict[str, Any]], bool]]:
    """Each fold trained, and (``main``: process 0) its held-out images predicted and
    scored, then ``record``ed with those before; the scores of the folds finished, and
    whether a cancel stopped them."""
    per_fold: list[dict[str, Any]] = []
    k = len(splits)
    for f, test in enumerate(splits):
        held_out = set(test)
        train_part = dataset.subset([i for i in range(len(dataset.images)) if i not in held_out])
        test_part = dataset.subset(test)
        groups: list[str] = []
        which = ""
        if group_by:
            groups = sorted({str(im.file_attributes.get(group_by, "")) for im in test_part.images})
            which = f" ({group_by}: {', '.join(groups)})"
        yield CrossvalEvent(
            f, k, message=f"fold {f + 1}/{k}: {counted(len(test), 'test image')}{which}"
        )
        # the unsupervised models learn no class: none is missing from their training
        learnt = [] if config.unsupervised else class_names(dataset)
        missing = [c for c in learnt if c not in class_names(train_part)]
        if missing:
            yield CrossvalEvent(f, k, warning=True, message=(
                f"fold {f + 1} trains without {', '.join(missing)}: every region of "
                f"{'it is' if len(missing) == 1 else 'them is'} among its test images, so its "
                "model cannot find them (nor join the other folds' models in an ensemble)"
            ))  # fmt: skip
        # numbered from 1, as the folds are said ("fold 1/3" trains fold1.pt)
        model_path = out_dir / f"fold{f + 1}.pt"
        gen = train(train_part, config, model_path, cancel=cancel)
        try:
            while True:
                yield CrossvalEvent(f, k, train=next(gen))
        except StopIteration as stop:
            result = stop.value
        if result.cancelled:  # the folds finished so far are kept and summarised
            return per_fold, True
        if not main:
            continue
        predictor = Predictor.load(result.best or result.last, config.device)
        # as predict does by default: with test-time augmentation where it paid on the
        # fold model's validation images
        tta = predictor.tta_by_default
        predictions = run(predict_dataset(predictor, test_part, tta=tta))
        scores = _fold_scores(evaluate(test_part, predictions, iou_threshold))
        scores.update(fold=f, model=model_path.name, tta=tta, trained_without=missing,
                      test_images=[im.filename for im in test_part.images])  # fmt: skip
        if group_by:
            scores["groups"] = groups
        per_fold.append(scores)
        record(per_fold)
        yield CrossvalEvent(f, k, scores=scores)
    return per_fold, False
