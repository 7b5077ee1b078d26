"""The ``napari-bioanomaly`` command line: headless work on annotation files.

Every error is one line on stderr and exit code 2 (set ``BIOANOMALY_DEBUG=1``
for a traceback). Sub-commands are small functions registered in
:func:`build_parser`; later features add theirs the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._cli_data import (
    _add_import_options,
    cmd_convert,
    cmd_gui,
    cmd_inspect,
    cmd_merge,
    cmd_qc,
    cmd_sample,
    cmd_versions,
)
from ._cli_ml import (
    _add_train_options,
    _train_config,
    add_threads_option,
    cmd_choose_point,
    cmd_crossval,
    cmd_evaluate,
    cmd_predict,
    cmd_pretrain,
    cmd_train,
    use_threads,
)
from .core import annotations as annotation_files
from .core.model import BioAnomalyError
from .core.quality import FOCUS_GROUP
from .ml.config import TTA_SETTINGS

__all__ = ["_train_config", "build_parser", "main"]


def _iou(text: str) -> float:
    """``--iou``: an overlap above 0, at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: an IoU is above 0 and at most 1")
    return value


def _region_score(text: str) -> float:
    """``--score``: a region score, from 0 to 1 (the models' scores are probabilities)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a region's score is from 0 to 1")
    return value


def _image_threshold(text: str) -> float:
    """``--image-threshold``: an image score, from 0 to 1 (the models' image scores and
    region scores are probabilities)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"{text}: an image score is from 0 to 1 (the image's anomaly score, or its most "
            "confident region's score)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-bioanomaly",
        description="Anomaly annotation, training and review for brightfield microscopy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="what an annotation file holds, and what is wrong with it")
    p.add_argument(
        "input",
        metavar="FILE",
        help="VIA or COCO JSON, ImageJ ROI zip, QuPath GeoJSON, or a dataset folder",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-images", action="store_true", help="do not look for the images")
    _add_import_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "convert", help="convert annotations to VIA, COCO, label masks, Fiji ROIs or QuPath GeoJSON"
    )
    p.add_argument(
        "input",
        metavar="IN",
        help="VIA or COCO JSON, ImageJ ROI zip, QuPath GeoJSON, or a dataset folder",
    )
    p.add_argument("--to", required=True, choices=annotation_files.EXPORT_FORMATS)
    p.add_argument(
        "output", metavar="OUT", help="output file (a folder for masks, imagej and geojson)"
    )
    p.add_argument(
        "--as-predictions",
        action="store_true",
        help="with --to via: mark every region as a model's prediction (source 'model'): "
        "another tool's predictions that say neither score nor source, to correct in the "
        "Review widget",
    )
    _add_import_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "versions",
        help="list the earlier versions of an annotation file kept while it was edited, or "
        "go back to one",
    )  # fmt: skip
    p.add_argument("input", metavar="FILE", help="the annotation file (VIA 2 project)")
    p.add_argument(
        "--restore", metavar="N", type=int,
        help="go back to version N of the list (1: the newest); the current file is kept as "
        "a version first",
    )  # fmt: skip
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("sample", help="write the synthetic brightfield sample dataset")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--images", type=int, default=12, metavar="N", help="number of images (12)")
    p.add_argument("--size", type=int, default=512, metavar="PX", help="image side (512)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    p.add_argument("--bit-depth", type=int, default=16, choices=(8, 16),
                   help="16: 16-bit TIFF, 8: 8-bit PNG (16)")  # fmt: skip
    p.add_argument(
        "--difficulty", choices=("easy", "hard"), default="easy",
        help="easy: clear anomalies (a first look); hard: faint anomalies among look-alike "
        "textures, uneven light, out-of-focus patches and unannotated specks (for judging "
        "models) (easy)",
    )  # fmt: skip
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "qc", help="image quality flags: uniform, binary, dim, saturated, out of focus"
    )
    p.add_argument("input", metavar="DATASET", help="dataset folder or annotation file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--save",
        action="store_true",
        help="keep the flags in the annotation file (file attribute qc), for the image list "
        "and train --exclude-qc",
    )
    p.add_argument(
        "--group-by",
        metavar="ATTR",
        default=FOCUS_GROUP,
        help="file attribute whose groups are judged apart for focus: an image is out of "
        "focus when far blurrier than the others of its group (default: %(default)s)",
    )
    _add_import_options(p)
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("train", help="train a model (GPU when there is one)")
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="best checkpoint goes here")
    p.add_argument("--resume", metavar="CKPT", help="continue from a .last.pt checkpoint")
    _add_train_options(p)
    _add_import_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "pretrain",
        help="learn U-Net weights from images alone (no annotations), for train --weights",
    )
    p.add_argument("--out", required=True, metavar="WEIGHTS.pt", help="the weights go here")
    _add_train_options(p)
    _add_import_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("crossval", help="K-fold cross-validation, grouped by a file attribute")
    p.add_argument("--out", required=True, metavar="DIR", help="fold models and results go here")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (5)")
    p.add_argument(
        "--group-by", metavar="ATTR", help="keep each value of this file attribute in one fold "
        "(default: none: anomalous and normal images are dealt out evenly)"
    )  # fmt: skip
    p.add_argument("--iou", type=_iou, default=0.5, help="IoU threshold of a match (0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_train_options(p)
    _add_import_options(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("predict", help="predict anomalies with a trained model, write VIA")
    p.add_argument(
        "--model", required=True, nargs="+", action="extend", metavar="MODEL.pt",
        help="a trained model; several (repeat --model, or list them, e.g. the fold models "
        "of crossval) predict as one ensemble: their anomaly probabilities averaged",
    )  # fmt: skip
    p.add_argument("--images", required=True, metavar="DIR",
                   help="image folder, annotation file, or one image")  # fmt: skip
    p.add_argument(
        "--tta", nargs="?", const="yes", default="auto", choices=TTA_SETTINGS,
        help="test-time augmentation: average the 8 flips and 90-degree rotations (networks; "
        "8x the time). auto (default): where it gained on the model's validation images "
        "(by 0.01, on 20 regions or more; said on stderr); --tta or --tta yes: always; "
        "--tta no: never",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="PRED.json")
    p.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="anomaly probability (default: the model's, chosen on validation)",
    )
    p.add_argument(
        "--min-area",
        type=float,
        metavar="PX",
        help="drop smaller regions (default: the model's, chosen on validation)",
    )
    p.add_argument(
        "--min-peak",
        type=float,
        metavar="P",
        help="keep only regions whose probability somewhere exceeds P, above "
        "--threshold (hysteresis; default: the model's where it chose one and "
        "--threshold is not given)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="auto picks cuda, then mps, then the CPU (auto)")  # fmt: skip
    p.add_argument(
        "--heatmaps",
        nargs="?",
        const="",
        metavar="DIR",
        help="also write each image's anomaly map (float32 TIFF) into DIR; without DIR "
        "beside --out (pred.json: pred.heatmaps), where the Review widget looks for them",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="predict images I, I+N, I+2N, ... (0-based, e.g. a SLURM array task id)",
    )
    add_threads_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "choose-point", help="choose a trained model's operating point again (--tta: the "
        "one for test-time augmentation), written into the model file",
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL.pt", help="a trained model (kept as MODEL.pt.bak)")
    p.add_argument("--annotations", required=True, metavar="FILE",
                   help="annotation file whose images the point is chosen on")  # fmt: skip
    p.add_argument(
        "--tta", action="store_true",
        help="choose the point that predict --tta uses, on maps averaged over the 8 flips "
        "and rotations (U-Net, Mask R-CNN; 8x the time)",
    )  # fmt: skip
    p.add_argument(
        "--on", choices=("validation", "all"), default="validation",
        help="the images of the annotation file held out for validation when the model "
        "was trained (its settings and seed pick them again; default), or every annotated "
        "image (e.g. new images not trained on)",
    )  # fmt: skip
    p.add_argument("--out", metavar="NEW.pt", help="write the model here instead")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="auto picks cuda, then mps, then the CPU (auto)")  # fmt: skip
    _add_import_options(p)
    add_threads_option(p)
    p.set_defaults(func=cmd_choose_point)

    p = sub.add_parser("merge", help="join prediction files of shards into one")
    p.add_argument("inputs", nargs="+", metavar="PRED.json")
    p.add_argument("--out", required=True, metavar="ALL.json")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--gt", required=True, metavar="GT.json")
    p.add_argument("--pred", required=True, metavar="PRED.json")
    p.add_argument("--images", metavar="DIR", help="image folder (default: beside GT.json)")
    p.add_argument("--iou", type=_iou, default=0.5, help="IoU threshold of a match (0.5)")
    p.add_argument("--score", type=_region_score, default=0.0,
                   help="ignore predictions scoring less (0 to 1; default 0)")  # fmt: skip
    p.add_argument("--group-by", metavar="ATTR",
                   help="file attribute to group by, e.g. cell_line (default: none)")  # fmt: skip
    p.add_argument("--exclude", metavar="V1,V2", help="groups to leave out of the summary")
    p.add_argument(
        "--image-threshold",
        type=_image_threshold,
        default=0.5,
        help="image score (0 to 1) from which an image is called anomalous (0.5)",
    )
    p.add_argument("--csv", metavar="TABLE.csv", help="write the per-image table")
    p.add_argument(
        "--plot", metavar="CURVES.png", help="write ROC and precision-recall curves of image scores"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "gui", help="open napari's Annotate widget on a dataset (default: the sample dataset)"
    )
    p.add_argument("dataset", nargs="?", metavar="DATASET", help="annotation file or folder")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and exit")
    p.set_defaults(func=cmd_gui)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of a closed pipe does
    not print "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (tests capture it)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        use_threads(args)
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as Unix tools do
        _quiet_stdout()
        return 0
    except (BioAnomalyError, OSError, ValueError) as exc:
        if os.environ.get("BIOANOMALY_DEBUG"):
            raise
        message: Any = exc
        # a WriteError names its file already, with what the errno means for the user
        if isinstance(exc, OSError) and exc.filename and not isinstance(exc, BioAnomalyError):
            message = f"{exc.filename}: {exc.strerror or exc}"
        print(f"napari-bioanomaly {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        if os.environ.get("BIOANOMALY_DEBUG"):
            raise
        print(
            f"napari-bioanomaly {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with BIOANOMALY_DEBUG=1 for details and please report it)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"napari-bioanomaly {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
