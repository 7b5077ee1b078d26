"""Commands of the command line that train, predict and score: train, crossval, predict,
evaluate (see :mod:`.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._cli_data import (
    _file_progress,
    _import_options,
    _refuse_input_as_output,
    _refuse_replacing_annotations,
    _same_file,
    _warn_import,
)
from .core import annotations as annotation_files
from .core.model import BioAnomalyError, Dataset, ImageRecord
from .core.text import counted, printable


def _progress_line(event: Any) -> str:
    """One line of terminal progress for a training event."""
    parts = [f"epoch {event.epoch + 1}/{event.epochs}", f"step {event.step}/{event.steps}"]
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.kind == "epoch":
        scores = event.score_text()
        if scores:
            parts.append(scores)
        if event.val_loss is not None:
            parts.append(f"val loss {event.val_loss:.4f}")
    else:
        if event.sec_per_step is not None:
            parts.append(f"{event.sec_per_step:.2f} s/step")
        if event.eta_s is not None:
            parts.append(f"ETA {int(event.eta_s) // 60}:{int(event.eta_s) % 60:02d}")
    return "  ".join(parts)


#: seconds after a stop request in which, under torchrun, another SIGINT or SIGTERM is the
#: launcher passing the same request on (a terminal's Ctrl+C reaches every process of the
#: group, and torchrun then sends each worker the signal it got), not a second request
_FORWARDED_WITHIN = 2.0


@contextmanager
def _ctrl_c_stops(
    cancel: threading.Event, what: str, talk: bool = True, after: str = "the current step"
) -> Iterator[list[int]]:
    """Within: the first Ctrl+C (SIGINT) or SIGTERM (``kill``, a batch system ending the
    job) sets ``cancel``: the run stops after its current step and ends as the widgets'
    Stop ends it; a second one interrupts at once. Under torchrun, the copy of the first
    signal the launcher passes on to its workers is not counted as a second. Yields the
    list the signal that stopped it is put in (for the exit status, 128 + its number)."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield asked  # signal handlers belong to the main thread
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    launched = "TORCHELASTIC_RUN_ID" in os.environ  # a worker of torchrun
    asked_at: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            if launched and asked_at and time.monotonic() - asked_at[0] < _FORWARDED_WITHIN:
                return  # torchrun passing the first request on
            for sig in signals:
                signal.signal(sig, previous[sig])
            raise KeyboardInterrupt
        cancel.set()
        asked_at.append(time.monotonic())
        asked.append(signum)
        if talk:
            cause = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
            again = "Ctrl+C again" if signum == signal.SIGINT else f"another {cause}"
            print(f"\n{cause}: stopping {what} after {after} ({again} to interrupt at "
                  "once)", file=sys.stderr)  # fmt: skip

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield asked
    finally:
        for sig in signals:
            signal.signal(sig, previous[sig])


def _stopped_status(asked: list[int], stopped: bool = True) -> int:
    """The exit status of a run :func:`_ctrl_c_stops` ran: 0 where it ran to its end, 128
    + the signal where one stopped it, what a shell reports for a command a signal ended
    (what was kept stays: a batch system that ended the job by SIGTERM must not count it
    as finished, nor ``train && predict`` go on as if the run had ended). ``stopped``
    False: the signal came once the run had ended, which it did not stop (0)."""
    return 128 + asked[0] if asked and stopped else 0


class _Pace:
    """How fast images are predicted, and the time left, as a progress line's end
    (``  (1.3 s/image, 4:05 left)``); empty until an image has been timed."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.done = 0
        self.left = 0

    def tick(self, left: int) -> None:
        """One more image done (predicted or not), ``left`` to go."""
        self.done += 1
        self.left = left

    def __str__(self) -> str:
        if not self.done:
            return ""
        each = (time.monotonic() - self.start) / self.done
        rest = int(each * self.left)
        hours, minutes = divmod(rest // 60, 60)
        when = f"{hours}:{minutes:02d}:{rest % 60:02d}" if hours else f"{minutes}:{rest % 60:02d}"
        return f"  ({each:.2f} s/image, {when} left)"


def _main_process() -> bool:
    """Whether this process talks: under torchrun only rank 0 does."""
    from .ml.distributed import rank

    return rank() == 0


def _follow(gen: Any, main_process: bool = True) -> Any:
    """Run a training generator, printing its progress on stderr; returns its result."""
    from .ml.config import CLI_WORDS

    interactive = sys.stderr.isatty() and main_process
    try:
        while True:
            event = next(gen)
            if not main_process:
                continue
            if event.kind in ("warning", "status"):
                prefix = "warning: " if event.kind == "warning" else ""
                message = CLI_WORDS.get(event.message, event.message)  # options, not fields
                print(f"\n{prefix}{message}", file=sys.stderr)
            elif event.kind == "epoch" or interactive:
                end = "\n" if event.kind == "epoch" else "\r"
                print(_progress_line(event).ljust(100), end=end, file=sys.stderr, flush=True)
    except StopIteration as stop:
        return stop.value
    except KeyboardInterrupt:
        gen.close()
        raise


def _open_annotations(args: argparse.Namespace) -> Dataset:
    """The dataset of ``--annotations`` (and ``--images``), what its import changed or
    skipped printed as warnings."""
    options = _import_options(args)
    dataset, report = annotation_files.open_dataset(args.annotations, args.images, options)
    _warn_import(report, args)
    return dataset


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .ml.pretrain import pretrain

    config = _train_config(args)
    if config.model != "unet":
        raise BioAnomalyError(f"pretrain makes U-Net weights; --model {config.model} does not "
                              "take them")  # fmt: skip
    if config.pretrain_min:
        raise BioAnomalyError("pretrain runs for --budget minutes (or --epochs); --pretrain "
                              "is train's option to pretrain first")  # fmt: skip
    dataset = _open_annotations(args)
    main_process = _main_process()
    cancel = threading.Event()
    with _ctrl_c_stops(cancel, "pretraining", main_process) as asked:
        try:
            result = _follow(pretrain(dataset, config, args.out, cancel), main_process)
        except BioAnomalyError as exc:
            if not cancel.is_set():
                raise
            if main_process:  # stopped before its first step
                print(f"stopped: {exc}", file=sys.stderr)
            return 128 + (asked[0] if asked else signal.SIGINT)
    if main_process:
        stopped = "stopped: " if cancel.is_set() else ""
        print(f"{stopped}{result.text()}; train a U-Net from them with --weights {result.path}")
    return _stopped_status(asked, cancel.is_set())


def _refuse_replacing_non_model(*paths: Path) -> None:
    """Refuse to write a model over an existing file that is no PyTorch file: an
    annotation file given as ``--out`` by mistake."""
    from .ml.checkpoint import is_torch_file

    for path in paths:
        if path.is_file() and path.stat().st_size and not is_torch_file(path):
            raise BioAnomalyError(
                f"{path}: exists and is not a model file; training would replace it: "
                "choose another --out"
            )


def _refuse_unwritable(folder: Path, what: str, option: str = "--out") -> None:
    """Refuse, before any work, an output folder where no file can be written: the run
    would fail only when it saves, after all its training."""
    from .core.paths import unwritable_reason

    reason = unwritable_reason(folder)
    if reason is not None:
        raise BioAnomalyError(
            f"{option}: cannot write {what} into {folder} ({reason}): choose another {option}"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from .core.chooser import tta_gain_text, tta_pays
    from .ml.checkpoint import last_path
    from .ml.train import nothing_kept_text, train

    config = _train_config(args)
    _refuse_replacing_non_model(Path(args.out), last_path(Path(args.out)))
    inputs = {"annotation file": args.annotations, "--weights file": args.weights}
    _refuse_input_as_output(args.out, inputs)
    _refuse_unwritable(Path(args.out).absolute().parent, "the model")
    dataset = _open_annotations(args)
    main_process = _main_process()
    cancel = threading.Event()
    with _ctrl_c_stops(cancel, "training", main_process) as asked:
        result = _follow(train(dataset, config, args.out, resume=args.resume, cancel=cancel),
                         main_process)  # fmt: skip
    if main_process:
        if result.cancelled and result.best is None:
            print(nothing_kept_text(result, config.model))
            return _stopped_status(asked, result.cancelled)
        from .ml.config import REGISTRY

        # the last state is for resuming: a model fitted in one pass has none to resume
        last = f"; last state: {result.last}" if REGISTRY[config.model].network else ""
        op, tta = result.operating_point, result.tta_point
        point = f"; operating point {op.describe()}" if op and op.source == "validation" else ""
        point += f"; with --tta: {tta.describe()}" if tta and tta.source == "validation" else ""
        if op is not None and tta_pays(op, tta):
            point += f"; predict uses --tta by default ({tta_gain_text(op, tta)})"
        print(
            f"{'stopped: ' if result.cancelled else ''}best model ({result.best_text()}{point}): "
            f"{result.best}{last}"
        )
    return _stopped_status(asked, result.cancelled)


def cmd_choose_point(args: argparse.Namespace) -> int:
    from .ml.points import change_lines, choose_point

    dataset = _open_annotations(args)
    change = choose_point(args.model, dataset, args.tta, args.on, args.device, args.out,
                          _file_progress())  # fmt: skip
    if change.unlearnt:
        print(f"warning: the model did not learn {', '.join(change.unlearnt)}: those regions "
              "counted as background", file=sys.stderr)  # fmt: skip
    print("\n".join(change_lines(change)))
    return 0


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def cmd_crossval(args: argparse.Namespace) -> int:
    from .ml.crossval import crossval

    config = _train_config(args)
    _refuse_unwritable(Path(args.out).absolute(), "the fold models")
    dataset = _open_annotations(args)
    main_process = _main_process()
    cancel = threading.Event()
    gen = crossval(dataset, config, args.folds, args.out, args.group_by, args.iou, cancel)
    with _ctrl_c_stops(cancel, "cross-validation", main_process) as asked:
        result = _crossval_progress(gen, main_process)
    if not main_process:
        return _stopped_status(asked, result.cancelled)
    if result.cancelled:
        print(f"stopped: {len(result.folds)} of {args.folds} folds finished, summarised below",
              file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return _stopped_status(asked, result.cancelled)
    grouped = f", grouped by {args.group_by}" if args.group_by else ""
    print(f"{config.model}, {args.folds} folds{grouped}: mean +- standard deviation (min-max)")
    for name, s in result.summary.items():
        if s["mean"] is None:
            print(f"  {name}: n/a")
            continue
        print(
            f"  {name}: {s['mean']:.3f} +- {s['std']:.3f} ({s['min']:.3f}-{s['max']:.3f}, "
            f"{counted(s['folds'], 'fold')})"
        )
    print(f"models and crossval.json in {args.out}")
    return _stopped_status(asked, result.cancelled)


def _crossval_progress(gen: Any, main_process: bool = True) -> Any:
    """Run crossval's generator, printing its progress on stderr; returns its result."""
    interactive = sys.stderr.isatty()
    try:
        while True:
            event = next(gen)
            if not main_process:
                continue
            if event.message:
                print(("warning: " if event.warning else "") + event.message, file=sys.stderr)
            elif event.scores is not None:
                sc = event.scores
                print(
                    f"fold {event.fold + 1}/{event.folds}: F1 {_fmt(sc['f1'])} pixel IoU "
                    f"{_fmt(sc['pixel_iou'])} image ROC-AUC {_fmt(sc['roc_auc'])}"
                    + (
                        " (with flips and rotations: they paid on validation)"
                        if sc.get("tta")
                        else ""
                    ),
                    file=sys.stderr,
                )
            elif event.train is not None and (event.train.kind != "step" or interactive):
                if event.train.kind == "warning":
                    print(f"warning: {event.train.message}", file=sys.stderr)
                elif event.train.kind != "status":
                    end = "\n" if event.train.kind == "epoch" else "\r"
                    line = f"  fold {event.fold + 1}: {_progress_line(event.train)}"
                    print(line.ljust(100), end=end, file=sys.stderr, flush=True)
    except StopIteration as stop:
        return stop.value


def _without_last_states(models: list[str]) -> list[str]:
    """The model files less each ``X.last.pt`` given beside its ``X.pt`` (a glob such as
    ``cv/fold*.pt`` picks both: the last state is for resuming, the best predicts)."""
    from .ml.checkpoint import last_path

    given = {Path(m).resolve() for m in models}
    lasts = {last_path(Path(m)).resolve() for m in models} & given
    kept = [m for m in models if Path(m).resolve() not in lasts]
    if len(kept) < len(models):
        left = ", ".join(m for m in models if Path(m).resolve() in lasts)
        print(f"left out {left}: the last state of a model also given (for resuming "
              "training; the best state predicts)", file=sys.stderr)  # fmt: skip
    return kept


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.images import is_image_file
    from .core.manifest import Manifest, run_identity
    from .core.maps import check_heatmap_folder, missing_maps_text, with_maps
    from .ml.crossval import check_fold_models
    from .ml.distributed import world_size
    from .ml.predict import (
        TTA_APPLIES,
        TTA_MODELS,
        Ensemble,
        predict_dataset,
        shard,
        tta_note,
        use_tta,
    )

    if world_size() > 1:  # every process would write the one file
        raise BioAnomalyError("predict does not run under torchrun: run one predict per "
                              "shard of the images instead (--shard I/N, then merge; see "
                              "docs/cluster.md)")  # fmt: skip
    source = Path(args.images)
    _refuse_input_as_output(args.out, {"annotation file": source, "model": args.model})
    _refuse_replacing_annotations(args.out)
    # before any image is predicted (it failed after the first, as it wrote the manifest)
    _refuse_unwritable(Path(args.out).absolute().parent, "the predictions")
    if source.is_dir():
        outside: list[str] = []
        names = annotation_files.list_images(source, outside)
        links = annotation_files.outside_links_note(source, outside)
        if not names:
            raise BioAnomalyError(f"{source}: no images (TIFF, PNG, JPEG) in this folder"
                                  + (f"; {links}" if links else ""))  # fmt: skip
        if links:
            print(f"warning: {links}", file=sys.stderr)
        dataset = Dataset(images=[ImageRecord(n) for n in names], root=source)
    elif is_image_file(source.name):  # one image
        dataset = Dataset(images=[ImageRecord(source.name)], root=source.parent)
    else:  # an annotation file: predict its images, keep their attributes and order
        dataset, _ = annotation_files.load(source, read_images=False)
    shard_text = args.shard or "0/1"
    try:
        index, count = (int(v) for v in shard_text.split("/"))
    except ValueError:
        raise BioAnomalyError(f"--shard {shard_text!r}: expected I/N, e.g. 0/4") from None
    dataset = shard(dataset, index, count)
    out = Path(args.out)
    if args.heatmaps == "":  # --heatmaps without a folder: where Review looks for them
        args.heatmaps = str(out.with_suffix(annotation_files.HEATMAPS_SUFFIX))
    if args.heatmaps:  # before the model is read: the maps must not replace the images
        check_heatmap_folder(
            args.heatmaps, dataset.root or ".", [im.filename for im in dataset.images]
        )
        _refuse_unwritable(Path(args.heatmaps).absolute(), "the anomaly maps", "--heatmaps")
    args.model = _without_last_states(args.model)
    check_fold_models(args.model)
    predictor = Ensemble.load(args.model, args.device)
    if isinstance(predictor, Ensemble):
        print(f"ensemble of {len(predictor.members)} models, classes {predictor.classes}",
              file=sys.stderr)  # fmt: skip
    tta = use_tta(predictor, args.tta)
    note = tta_note(predictor, args.tta)
    if note:
        print(f"{note}; --tta no predicts without", file=sys.stderr)
    # the manifest belongs to these model files (path and content) with these settings
    run = run_identity(args.model, tta, bool(args.heatmaps), args.threshold, args.min_area,
                       args.min_peak)  # fmt: skip
    manifest = Manifest(out, run, shard_text)
    done, missing = with_maps(manifest.read(), args.heatmaps)
    if done:
        print(
            f"resuming: {counted(len(done), 'image')} already done ({manifest.path})",
            file=sys.stderr,
        )
    if missing:
        print(f"resuming: {missing_maps_text(missing, args.heatmaps)}", file=sys.stderr)
    members = predictor.members if isinstance(predictor, Ensemble) else [predictor]
    without = sorted({m.kind for m in members if m.kind not in TTA_MODELS})
    if tta and without:
        they = "those predict" if len(members) > 1 else "it predicts"
        print(f"--tta: {TTA_APPLIES}, not to {', '.join(without)}: {they} without them",
              file=sys.stderr)  # fmt: skip
    if predictor.lacks_tta_point(tta) and args.threshold is None:
        print("--tta: no operating point chosen on averaged maps in the model, so the plain "
              "one is used (averaged maps peak lower; choose one with napari-bioanomaly "
              "choose-point MODEL --annotations FILE --tta)", file=sys.stderr)  # fmt: skip
    # checks the user's values before any image is read
    point = predictor.point(tta).overridden(args.threshold, args.min_area, args.min_peak)
    own_tta = (
        tta and any(m.kind in TTA_MODELS for m in members) and not predictor.lacks_tta_point(True)
    )
    chosen = " on averaged maps, for test-time augmentation" if own_tta else ""
    print(
        point.describe(scores=False)
        + (f" (the model's, chosen on validation{chosen})" if point.source == "validation"
           else ""),
        file=sys.stderr,
    )  # fmt: skip
    if point.source == "default" and any(m.kind != "memory" for m in members):
        # the memory bank's default is its calibrated 0.5; the others' is a guess
        print("warning: no operating point chosen on validation in the model (training "
              "stopped before it validated, --val-fraction 0, or a .last.pt file): these "
              "are the defaults; napari-bioanomaly choose-point MODEL --annotations FILE "
              "chooses one on annotated images", file=sys.stderr)  # fmt: skip
    gen = predict_dataset(
        predictor, dataset, args.threshold, args.min_area, done=done, heatmaps=args.heatmaps,
        tta=tta, min_peak=args.min_peak,
    )  # fmt: skip
    failed: list[str] = []  # images not predicted (unreadable): not in the predictions
    cancel = threading.Event()
    pace, kept = _Pace(), len(done)
    with _ctrl_c_stops(cancel, "the prediction", after="the current image") as asked:
        try:
            last = False  # the last event was of the last image: only the writing is left
            while not cancel.is_set() or last:
                event = next(gen)
                last = event.index >= event.total
                if event.message:
                    print(f"warning: {event.message}", file=sys.stderr)
                if event.note:
                    print(f"note: {event.note}", file=sys.stderr)
                if event.skipped:
                    continue
                pace.tick(event.total - event.index)
                if event.record is None:
                    failed.append(event.image)
                    print(f"{event.index}/{event.total} {printable(event.image)}: not "
                          "predicted", file=sys.stderr)  # fmt: skip
                    continue
                print(f"{event.index}/{event.total} {printable(event.image)}: "
                      f"{counted(event.regions, 'region')}{pace}", file=sys.stderr)  # fmt: skip
                manifest.append(event.record)
                kept += 1
            gen.close()
            print(f"stopped: {counted(kept, 'image')} of {len(dataset.images)} predicted, kept "
                  f"in {manifest.path}; the same command goes on from there ({out} is "
                  "written once every image is)", file=sys.stderr)  # fmt: skip
            # as a shell reports a command ended by the signal (130 Ctrl+C, 143 SIGTERM)
            return 128 + (asked[0] if asked else signal.SIGINT)
        except StopIteration as stop:
            predictions = stop.value
    if cancel.is_set():  # asked during the last image: nothing was left to stop
        print("the stop came with the last image: every image is predicted, and written",
              file=sys.stderr)  # fmt: skip
    unread = f"{', '.join(failed[:5])}{' and more' if len(failed) > 5 else ''}"
    if failed and not predictions.images:
        raise BioAnomalyError(f"no image could be predicted ({counted(len(failed), 'image')}; "
                              f"see the warnings above: {unread}); {out} not written")  # fmt: skip
    left_out = (
        f"; {counted(len(failed), 'image')} not predicted (see the warnings above), left "
        f"out: {unread}"
        if failed
        else ""
    )
    annotation_files.save(predictions, out, "via")
    manifest.remove()
    print(
        f"{counted(len(predictions.regions), 'predicted region')} on "
        f"{counted(len(predictions.images), 'image')} -> {out}{left_out}"
    )
    return 0


def _image_path(dataset: Dataset, image: ImageRecord) -> Path | None:
    """Where ``image`` of ``dataset`` is read from (None: a name that leads nowhere)."""
    from .core.paths import resolve_image

    try:
        return resolve_image(dataset.root or Path("."), image.filename)
    except BioAnomalyError:
        return None


def _refuse_other_kind(path: Path, option: str, kinds: tuple[str, ...]) -> None:
    """Refuse an output over an existing file of another kind than ``kinds`` (an image of
    the dataset, an annotation file): replaced, its one copy would be the ``.bak``."""
    if path.is_dir():
        raise BioAnomalyError(f"{option} {path}: is a folder; name a file ({kinds[0]})")
    if path.exists() and path.suffix.lower() not in kinds:
        raise BioAnomalyError(
            f"{option} {path}: exists and is no {' or '.join(kinds)} file; writing there would "
            f"replace it: choose another {option}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv
    import io

    from .core.evaluate import (
        empty_note,
        empty_truth_note,
        evaluate,
        paired,
        pairing_notes,
        unread_notes,
    )
    from .core.fileio import atomic_write

    # the tables and the plot go beside the inputs: none replaces one, nor another file
    inputs = {"ground-truth file": args.gt, "predictions file": args.pred}
    for option, out, kinds in (("--csv", args.csv, (".csv", ".tsv", ".txt")),
                               ("--plot", args.plot, (".png",))):  # fmt: skip
        if out:
            _refuse_input_as_output(out, inputs, option)
            _refuse_other_kind(Path(out), option, kinds)
    if args.csv and args.plot and _same_file(Path(args.csv), Path(args.plot)):
        raise BioAnomalyError(f"--csv {args.csv} and --plot {args.plot}: one file for both; "
                              "name two")  # fmt: skip
    gt, _ = annotation_files.load(args.gt, args.images, read_images=True)
    for option, out in (("--csv", args.csv), ("--plot", args.plot)):
        if out:  # a PNG of the dataset is a .png too
            _refuse_input_as_output(out, {"image": [_image_path(gt, im) for im in gt.images]},
                                    option)  # fmt: skip
    pred, _ = annotation_files.load(args.pred, args.images or gt.root, read_images=False)
    pairs = paired(gt, pred)
    # what the Review widget says of the same two files (pairing_notes)
    notes = pairing_notes(gt, pred, pairs, args.gt, args.pred)
    if gt.images and not pairs:
        raise BioAnomalyError(notes[0])
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    excluded = [v for v in (args.exclude or "").split(",") if v]
    if args.group_by and not any(args.group_by in im.file_attributes for im in gt.images):
        print(f"warning: no ground-truth image has the file attribute {args.group_by!r}: "
              "one group", file=sys.stderr)  # fmt: skip
    result = evaluate(gt, pred, args.iou, args.score, args.group_by, excluded, args.image_threshold,
                      pairs)  # fmt: skip
    if note := empty_note(result.rows):
        print(f"warning: {args.pred}: {note}", file=sys.stderr)
    if note := empty_truth_note(result.rows):
        print(f"warning: {args.gt}: {note}", file=sys.stderr)
    values = sorted({str(im.file_attributes.get(args.group_by, "")) for im in gt.images}
                    if args.group_by else [])  # fmt: skip
    unknown = [v for v in excluded if v not in values]
    if unknown:
        print(f"warning: --exclude {', '.join(unknown)}: no such {args.group_by or 'group'} "
              f"(groups: {', '.join(v or '(empty)' for v in values) or 'none without --group-by'})",
              file=sys.stderr)  # fmt: skip
    rows = [r.row() for r in result.rows]
    if args.csv:
        keys = [k for k in rows[0] if k != "group"] if rows else []
        buf = io.StringIO()
        writer = csv.writer(buf)
        group_keys = [args.group_by] if args.group_by else []
        writer.writerow(["image", *group_keys, *keys[1:]])
        for row in rows:
            writer.writerow([row["image"], *row["group"].values(), *[row[k] for k in keys[1:]]])
        data = buf.getvalue().encode("utf-8")
        atomic_write(args.csv, data)
        print(f"per-image table: {args.csv}", file=sys.stderr)
    # excluded images are in none of the outputs: not the tables, the plot nor a summary
    leaving = (
        f"excluding {args.group_by or 'group'} {', '.join(excluded)}: "
        f"{counted(len(result.excluded_images), 'image')}"
        if excluded
        else ""
    )
    if args.plot:
        from .plots import save_curves

        save_curves(
            args.plot,
            [1 if r["n_gt"] else 0 for r in rows],
            [r["score"] for r in rows],
            args.image_threshold,
            f"{Path(args.pred).name} vs {Path(args.gt).name}"
            + (f" ({leaving})" if leaving else ""),
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    for note in unread_notes(gt):
        print(f"warning: {args.gt}: {note}", file=sys.stderr)

    def line(name: str, s: dict[str, Any]) -> str:
        study = s["study"]
        return (
            f"{name}: {s['n_images']} images, GT {s['gt']}, predicted {s['pred']}: "
            f"TP {s['tp']} FP {s['fp']} FN {s['fn']}  precision {s['precision']:.3f} "
            f"recall {s['recall']:.3f} F1 {s['f1']:.3f}  pixel IoU {s['pixel_iou']:.3f}  |  "
            f"study: accuracy {study['accuracy']:.3f} F1 {study['f1']:.3f} "
            f"(merged {study['predicted']}, matched {study['matched']}, no overlap "
            f"{study['no_overlap']}, below threshold {study['overlap_below_threshold']}, "
            f"FN {study['false_negatives']})"
        )

    print(line("all" + (f" ({leaving})" if leaving else ""), result.summary))
    im = result.image_level
    fmt = _fmt
    print(
        f"images ({im['anomalous']} of {im['images']} anomalous): ROC-AUC {fmt(im['roc_auc'])}, "
        f"AP {fmt(im['average_precision'])}; at score {im['threshold']:g}: TPR {fmt(im['tpr'])} "
        f"TNR {fmt(im['tnr'])} PPV {fmt(im['ppv'])} NPV {fmt(im['npv'])} kappa {fmt(im['kappa'])}"
    )
    for name, summary in result.groups.items():
        print(line(f"{args.group_by}={name}", summary))
    for text in _class_lines(result.classes):
        print(text)
    agree = result.class_agreement
    if agree["matched"]:
        print(
            f"classes of {agree['matched']} matched regions: agreement "
            f"{agree['agreement']:.3f}, kappa {fmt(agree['kappa'])}"
        )
    if args.plot:
        print(f"curves -> {args.plot}")
    return 0


def _class_lines(classes: dict[str, dict[str, Any]]) -> list[str]:
    """evaluate's lines per class; for a class-agnostic model's predictions, how many
    regions of each ground-truth class they found."""
    from .core.evaluate import class_agnostic, found_count

    if class_agnostic(classes):
        lines = ["classes: the predictions name none of the ground truth's (a class-agnostic "
                 "model); found by them, per class:"]  # fmt: skip
        for name, c in classes.items():
            if c["gt"]:
                lines.append(
                    f"class {name}: GT {c['gt']}, found {found_count(c)} ({c['found']:.3f})"
                )
        return lines
    lines = []
    for name, c in classes.items():
        found = "" if c["found"] is None else f"  found by any class {c['found']:.3f}"
        lines.append(
            f"class {name}: GT {c['gt']}, predicted {c['pred']}: TP {c['tp']} FP {c['fp']} "
            f"FN {c['fn']}  precision {c['precision']:.3f} recall {c['recall']:.3f} "
            f"F1 {c['f1']:.3f}{found}"
        )
    return lines


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{text}: a number of threads is a whole number, 1 or more"
        )
    return n


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N``: the CPU threads torch computes with (see :func:`use_threads`)."""
    p.add_argument(
        "--threads", type=_threads, metavar="N",
        help="CPU threads to compute with (default: one per core this process may use); "
        "give each of several jobs sharing a machine its share of the cores: threads "
        "competing for cores run many times slower",
    )  # fmt: skip


def use_threads(args: argparse.Namespace) -> None:
    """Compute with ``--threads`` CPU threads, where given (before any work): torch's, the
    forest's and the line cue's (see :mod:`.core.threads`)."""
    if getattr(args, "threads", None):
        import torch

        from .core.threads import set_cpu_threads

        torch.set_num_threads(args.threads)
        set_cpu_threads(args.threads)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .ml.settings import add_cli_options

    p.add_argument(
        "--annotations",
        required=True,
        metavar="FILE",
        help="annotation file (VIA, COCO, ...), or a folder of images (unsupervised models "
        "need no annotation)",
    )
    add_cli_options(p)
    add_threads_option(p)


def _train_config(args: argparse.Namespace) -> Any:
    """The settings of a run from the options (``train --resume``: the stopped run's, with
    the options a resumed run may change; see :func:`.ml.settings.resume_config`)."""
    from .ml.settings import config_from_cli, given_settings, resume_config, unused_options

    saved = None
    if getattr(args, "resume", None):
        from .ml.checkpoint import load_checkpoint
        from .ml.config import TrainConfig
        from .ml.train import refuse_fold_state

        refuse_fold_state(Path(args.resume))
        saved = TrainConfig.from_dict(load_checkpoint(args.resume)["config"])
        if "model" not in given_settings(args):
            args.model = saved.model  # the options it does not use are named as its
    unused = unused_options(args)
    if unused:
        print(f"warning: {', '.join(unused)}: not used by --model {args.model} (ignored)",
              file=sys.stderr)  # fmt: skip
    if saved is None:
        return config_from_cli(args)
    config, said = resume_config(args, saved, args.resume)
    print(said, file=sys.stderr)
    return config
