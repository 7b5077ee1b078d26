"""The ``napari-bioanomaly`` command line: headless work on annotation files.

Every error is one line on stderr and exit code 2 (set ``BIOANOMALY_DEBUG=1``
for a traceback). Sub-commands are small functions registered in
:func:`build_parser`; later features add theirs the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .core import annotations
from .core.model import BioAnomalyError, Dataset, ImageRecord
from .core.operating import OperatingPoint
from .core.report import ImportReport
from .core.via import ImportOptions


def _import_options(args: argparse.Namespace) -> ImportOptions:
    try:
        return ImportOptions(
            class_attribute=args.class_attribute,
            polyline_width=args.polyline_width,
            point_radius=args.points_as_discs,
        )
    except ValueError as exc:
        raise BioAnomalyError(str(exc)) from None


def _import_warnings(report: ImportReport, args: argparse.Namespace) -> list[str]:
    """The import report's issues grouped by kind (all of them with ``--verbose``)."""
    return report.summary(0 if getattr(args, "verbose", False) else 5)


def _add_import_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("import options")
    g.add_argument("--verbose", action="store_true",
                   help="list every import issue (default: the first 5 of each kind)")
    g.add_argument(
        "--images",
        metavar="DIR",
        help="folder of the images (default: the annotation file's folder)",
    )
    g.add_argument(
        "--class-attribute",
        metavar="NAME",
        help="region attribute holding the class (default: first of class, type, "
        "anomaly, label; else the only attribute)",
    )
    g.add_argument(
        "--polyline-width",
        type=float,
        default=3.0,
        metavar="PX",
        help="width of the polygon made from a polyline (default 3)",
    )
    g.add_argument(
        "--points-as-discs",
        type=float,
        metavar="RADIUS",
        help="import points as discs of this radius instead of skipping them",
    )


def _open(args: argparse.Namespace, read_images: bool = True) -> tuple[Dataset, ImportReport]:
    source = Path(args.input)
    options = _import_options(args)
    return annotations.open_dataset(source, args.images, options, read_images=read_images)


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def cmd_inspect(args: argparse.Namespace) -> int:
    dataset, report = _open(args, read_images=not args.no_images)
    summary = report.to_dict(dict(dataset.class_counts()))
    summary["images_without_regions"] = sum(not im.regions for im in dataset.images)
    summary["checked_no_anomaly"] = sum(im.no_anomaly for im in dataset.images)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    version = f" (version {report.version})" if report.version else ""
    print(f"file:     {report.file}")
    print(f"format:   {report.format}{version}")
    print(f"images:   {report.images} ({summary['checked_no_anomaly']} checked: no anomaly)")
    print(f"regions:  {report.regions_found} in the file, {report.regions_imported} imported")
    print(f"shapes:   {_counts(report.shapes)}")
    print(f"classes:  {_counts(dataset.class_counts())}")
    if report.issues:
        print(f"issues:   {_counts(report.counts())}")
        for line in _import_warnings(report, args):
            print(f"  {line}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    dataset, report = _open(args)
    written, warnings = annotations.save(dataset, args.output, args.to)
    for line in _import_warnings(report, args):
        print(f"warning: {line}", file=sys.stderr)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    n_regions = len(dataset.regions)
    print(f"{args.to}: {len(dataset.images)} images, {n_regions} regions -> {args.output}")
    if args.to == "masks":
        print(f"  {len(written) - 1} mask files and {written[-1].name}")
    elif args.to in annotations.FOLDER_FORMATS:
        print(f"  {len(written)} files")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .core.synthetic import SampleConfig, write_sample

    try:
        config = SampleConfig(
            n_images=args.images, size=args.size, seed=args.seed, bit_depth=args.bit_depth,
            difficulty=args.difficulty,
        )  # fmt: skip
    except ValueError as exc:
        raise BioAnomalyError(str(exc)) from None
    path = write_sample(args.out_dir, config)
    print(f"wrote {config.n_images} images and {path}")
    return 0


def _progress_line(event: Any) -> str:
    """One line of terminal progress for a training event."""
    parts = [f"epoch {event.epoch + 1}/{event.epochs}", f"step {event.step}/{event.steps}"]
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.kind == "epoch":
        if event.val_f1 is not None:
            parts.append(f"val F1 {event.val_f1:.3f}  val IoU {event.val_iou:.3f}")
        if event.val_loss is not None:
            parts.append(f"val loss {event.val_loss:.4f}")
    else:
        if event.sec_per_step is not None:
            parts.append(f"{event.sec_per_step:.2f} s/step")
        if event.eta_s is not None:
            parts.append(f"ETA {int(event.eta_s) // 60}:{int(event.eta_s) % 60:02d}")
    return "  ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from .ml.train import train

    config = _train_config(args)
    dataset, report = annotations.open_dataset(args.annotations, args.images, _import_options(args))
    for line in _import_warnings(report, args):
        print(f"warning: {line}", file=sys.stderr)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    interactive = sys.stderr.isatty() and main_process
    gen = train(dataset, config, args.out, resume=args.resume)
    try:
        while True:
            event = next(gen)
            if not main_process:
                continue
            if event.kind in ("warning", "status"):
                prefix = "warning: " if event.kind == "warning" else ""
                print(f"\n{prefix}{event.message}", file=sys.stderr)
            elif event.kind == "epoch" or interactive:
                end = "\n" if event.kind == "epoch" else "\r"
                print(_progress_line(event).ljust(100), end=end, file=sys.stderr, flush=True)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        gen.close()
        raise
    if main_process:
        op = result.operating_point
        point = f"; operating point {op.describe()}" if op and op.source == "validation" else ""
        print(
            f"best model ({result.best_text()}{point}): {result.best}; "
            f"last state: {result.last}"
        )
    return 0


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def cmd_crossval(args: argparse.Namespace) -> int:
    from .ml.crossval import crossval

    config = _train_config(args)
    dataset, report = annotations.open_dataset(args.annotations, args.images, _import_options(args))
    for line in _import_warnings(report, args):
        print(f"warning: {line}", file=sys.stderr)
    gen = crossval(dataset, config, args.folds, args.out, args.group_by, args.iou)
    interactive = sys.stderr.isatty()
    try:
        while True:
            event = next(gen)
            if event.message:
                print(event.message, file=sys.stderr)
            elif event.scores is not None:
                sc = event.scores
                print(
                    f"fold {event.fold + 1}/{event.folds}: F1 {_fmt(sc['f1'])} pixel IoU "
                    f"{_fmt(sc['pixel_iou'])} image ROC-AUC {_fmt(sc['roc_auc'])}",
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
        result = stop.value
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    grouped = f", grouped by {args.group_by}" if args.group_by else ""
    print(f"{config.model}, {args.folds} folds{grouped}: mean +- standard deviation (min-max)")
    for name, s in result["summary"].items():
        if s["mean"] is None:
            print(f"  {name}: n/a")
            continue
        print(
            f"  {name}: {s['mean']:.3f} +- {s['std']:.3f} ({s['min']:.3f}-{s['max']:.3f}, "
            f"{s['folds']} folds)"
        )
    print(f"models and crossval.json in {args.out}")
    return 0


def _manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def _read_manifest(path: Path, model: str, shard_text: str) -> dict[str, ImageRecord]:
    """Images finished by an interrupted run of the same model and shard."""
    from .core.fileio import read_json
    from .core.via import read_via

    if not path.is_file():
        return {}
    data = read_json(path)
    if data.get("model") != model or data.get("shard") != shard_text:
        raise BioAnomalyError(
            f"{path}: manifest of another run ({data.get('model')}, shard {data.get('shard')}); "
            "delete it to start over"
        )
    if not data.get("done"):
        return {}
    done, _ = read_via(data["done"], str(path))
    return {im.filename: im for im in done.images}


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.fileio import write_json
    from .core.via import image_entry
    from .ml.predict import Ensemble, predict_dataset, shard

    source = Path(args.images)
    if source.is_dir():
        names = annotations.list_images(source)
        if not names:
            raise BioAnomalyError(f"{source}: no images (TIFF, PNG, JPEG) in this folder")
        dataset = Dataset(images=[ImageRecord(n) for n in names], root=source)
    else:  # an annotation file: predict its images, keep their attributes and order
        dataset, _ = annotations.load(source, read_images=False)
    shard_text = args.shard or "0/1"
    try:
        index, count = (int(v) for v in shard_text.split("/"))
    except ValueError:
        raise BioAnomalyError(f"--shard {shard_text!r}: expected I/N, e.g. 0/4") from None
    dataset = shard(dataset, index, count)
    out = Path(args.out)
    manifest = _manifest_path(out)
    # the manifest belongs to this model (or ensemble) with these settings
    model = " + ".join(str(Path(m).resolve()) for m in args.model) + (" (tta)" if args.tta else "")
    done = _read_manifest(manifest, model, shard_text)
    if done:
        print(f"resuming: {len(done)} image(s) already done ({manifest})", file=sys.stderr)
    predictor = Ensemble.load(args.model, args.device)
    if isinstance(predictor, Ensemble):
        print(f"ensemble of {len(predictor.members)} models, classes {predictor.classes}",
              file=sys.stderr)  # fmt: skip
    point = predictor.operating_point
    if args.threshold is not None or args.min_area is not None:
        point = OperatingPoint(
            point.threshold if args.threshold is None else args.threshold,
            point.min_area if args.min_area is None else args.min_area,
            class_min_area=point.class_min_area if args.min_area is None else {},
        )
    print(
        point.describe(scores=False)
        + (" (the model's, chosen on validation)" if point.source == "validation" else ""),
        file=sys.stderr,
    )
    entries = {f"{im.filename}{im.size}": image_entry(im, "class") for im in done.values()}
    gen = predict_dataset(
        predictor, dataset, args.threshold, args.min_area, done=done, heatmaps=args.heatmaps,
        tta=args.tta,
    )  # fmt: skip
    try:
        while True:
            event = next(gen)
            if event.message:
                print(f"warning: {event.message}", file=sys.stderr)
            if event.skipped:
                continue
            print(
                f"{event.index}/{event.total} {event.image}: {event.regions} region(s)",
                file=sys.stderr,
            )
            rec = event.record
            entries[f"{rec.filename}{rec.size}"] = image_entry(rec, "class")
            write_json(manifest, {"model": model, "shard": shard_text, "done": entries})
    except StopIteration as stop:
        predictions = stop.value
    annotations.save(predictions, out, "via")
    manifest.unlink(missing_ok=True)
    manifest.with_name(manifest.name + ".bak").unlink(missing_ok=True)
    print(
        f"{len(predictions.regions)} predicted regions on {len(predictions.images)} images -> {out}"
    )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    merged = Dataset()
    seen: dict[str, str] = {}
    for path in args.inputs:
        part, _ = annotations.load(path, read_images=False)
        for im in part.images:
            if im.filename in seen:
                raise BioAnomalyError(
                    f"image {im.filename!r} is in both {seen[im.filename]} and {path}: "
                    "shards must not overlap"
                )
            seen[im.filename] = path
            merged.images.append(im)
        merged.classes.extend(c for c in part.class_names() if c not in merged.classes)
        merged.class_attribute = part.class_attribute
    merged.images.sort(key=lambda im: im.filename)
    annotations.save(merged, args.out, "via")
    n_images, n_regions = len(merged.images), len(merged.regions)
    print(f"{n_images} images, {n_regions} regions from {len(args.inputs)} files -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv
    import io

    from .core.evaluate import evaluate
    from .core.fileio import atomic_write

    gt, _ = annotations.load(args.gt, args.images, read_images=True)
    pred, _ = annotations.load(args.pred, args.images or gt.root, read_images=False)
    excluded = [v for v in (args.exclude or "").split(",") if v]
    result = evaluate(gt, pred, args.iou, args.score, args.group_by, excluded, args.image_threshold)
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
        atomic_write(args.csv, lambda fh: fh.write(data))
    if args.plot:
        from .plots import save_curves

        save_curves(
            args.plot,
            [1 if r["n_gt"] else 0 for r in rows],
            [r["score"] for r in rows],
            args.image_threshold,
            f"{Path(args.pred).name} vs {Path(args.gt).name}",
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    missing = [im.filename for im in gt.images if im.shape is None]
    if missing:
        print(
            f"warning: {len(missing)} image(s) not found; regions used as they are", file=sys.stderr
        )

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

    print(line("all" + (f" (excluding {', '.join(excluded)})" if excluded else ""), result.summary))
    im = result.image_level
    fmt = _fmt
    print(
        f"images ({im['anomalous']} of {im['images']} anomalous): ROC-AUC {fmt(im['roc_auc'])}, "
        f"AP {fmt(im['average_precision'])}; at score {im['threshold']:g}: TPR {fmt(im['tpr'])} "
        f"TNR {fmt(im['tnr'])} PPV {fmt(im['ppv'])} NPV {fmt(im['npv'])} kappa {fmt(im['kappa'])}"
    )
    for name, summary in result.groups.items():
        print(line(f"{args.group_by}={name}", summary))
    for name, c in result.classes.items():
        found = "" if c["found"] is None else f"  found by any class {c['found']:.3f}"
        print(
            f"class {name}: GT {c['gt']}, predicted {c['pred']}: TP {c['tp']} FP {c['fp']} "
            f"FN {c['fn']}  precision {c['precision']:.3f} recall {c['recall']:.3f} "
            f"F1 {c['f1']:.3f}{found}"
        )
    agree = result.class_agreement
    if agree["matched"]:
        print(
            f"classes of {agree['matched']} matched regions: agreement "
            f"{agree['agreement']:.3f}, kappa {fmt(agree['kappa'])}"
        )
    if args.plot:
        print(f"curves -> {args.plot}")
    return 0


def cmd_qc(args: argparse.Namespace) -> int:
    from .core import via
    from .core.fileio import DiskChanged, dumps, file_digest, replace_if_unchanged, resolve_image
    from .core.images import read_image
    from .core.quality import QC_ATTRIBUTE, check, flags_to_text

    source = Path(args.input)
    found = annotations.find_annotation_file(source) if source.is_dir() else source
    read = file_digest(found) if found is not None and found.is_file() else None
    dataset, report = _open(args, read_images=False)
    root = dataset.root or Path(".")
    rows = []
    for im in dataset.images:
        try:
            quality = check(read_image(resolve_image(root, im.filename)))
            flags, focus = list(quality.flags), quality.focus
            rows.append({"image": im.filename, "flags": flags, "focus": focus})
        except BioAnomalyError as exc:
            rows.append({"image": im.filename, "flags": ["unreadable"], "error": str(exc)})
        im.file_attributes[QC_ATTRIBUTE] = flags_to_text(rows[-1]["flags"])
    flagged = [r for r in rows if r["flags"]]
    if args.save:
        if found is None:
            target, expected = source / "annotations.json", None
        else:
            target = annotations.edit_target(found, report.format)
            expected = read if target == found else file_digest(target)
        # compare and swap: an annotator that saved while qc ran is never overwritten
        raw = dumps(via.to_via_project(dataset))
        try:
            replace_if_unchanged(target, raw, expected)
        except DiskChanged:
            raise BioAnomalyError(
                f"{target}: changed on disk while qc ran (saved by another program); "
                "nothing written: run qc --save again"
            ) from None
        print(f"flags kept in {target} (file attribute {QC_ATTRIBUTE})", file=sys.stderr)
    if args.json:
        print(json.dumps({"images": len(rows), "flagged": len(flagged), "rows": rows}, indent=2))
        return 0
    for r in flagged:
        print(
            f"{r['image']}: {', '.join(r['flags'])}" + (f" ({r['error']})" if "error" in r else "")
        )
    print(f"{len(flagged)} of {len(rows)} images flagged")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    if args.dataset is not None and not Path(args.dataset).exists():
        raise BioAnomalyError(f"{args.dataset}: no such file or folder")
    import napari

    from ._sample_data import sample_folder

    viewer = napari.Viewer(title="napari-bioanomaly", show=not args.screenshot)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-bioanomaly", "Annotate anomalies")
    if not widget.open_path(args.dataset if args.dataset is not None else sample_folder()):
        raise BioAnomalyError(f"{args.dataset}: could not be opened")
    viewer.window.add_plugin_dock_widget("napari-bioanomaly", "Train a model", tabify=True)
    viewer.window.add_plugin_dock_widget("napari-bioanomaly", "Review predictions", tabify=True)
    widget.compact_dock_tabs()
    dock.raise_()  # the Annotate tab in front
    if args.screenshot:
        viewer.window.resize(1500, 1000)
        from napari.qt import get_qapp

        get_qapp().processEvents()  # let the window take its new size before the shot
        viewer.reset_view()
        viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
        print(f"screenshot saved to {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0


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


def _train_config(args: argparse.Namespace) -> Any:
    from .ml.settings import config_from_cli

    return config_from_cli(args)


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

    p = sub.add_parser("convert", help="convert annotations to VIA, COCO or label masks")
    p.add_argument(
        "input",
        metavar="IN",
        help="VIA or COCO JSON, ImageJ ROI zip, QuPath GeoJSON, or a dataset folder",
    )
    p.add_argument("--to", required=True, choices=annotations.EXPORT_FORMATS)
    p.add_argument(
        "output", metavar="OUT", help="output file (a folder for masks, imagej and geojson)"
    )
    _add_import_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("sample", help="write the synthetic brightfield sample dataset")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--images", type=int, default=12, metavar="N", help="number of images (12)")
    p.add_argument("--size", type=int, default=512, metavar="PX", help="image side (512)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    p.add_argument("--bit-depth", type=int, default=16, choices=(8, 16), help="16: TIFF, 8: PNG")
    p.add_argument(
        "--difficulty", choices=("easy", "hard"), default="easy",
        help="easy: clear anomalies (a first look); hard: faint anomalies among look-alike "
        "textures, uneven light, out-of-focus patches and unannotated specks (for judging models)",
    )  # fmt: skip
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("qc", help="image quality flags: uniform, binary, dim, saturated, blur")
    p.add_argument("input", metavar="DATASET", help="dataset folder or annotation file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--save",
        action="store_true",
        help="keep the flags in the annotation file (file attribute qc), for the image list "
        "and train --exclude-qc",
    )
    _add_import_options(p)
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("train", help="train a model (GPU when there is one)")
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="best checkpoint goes here")
    p.add_argument("--resume", metavar="CKPT", help="continue from a .last.pt checkpoint")
    _add_train_options(p)
    _add_import_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="K-fold cross-validation, grouped by a file attribute")
    p.add_argument("--out", required=True, metavar="DIR", help="fold models and results go here")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (5)")
    p.add_argument(
        "--group-by", metavar="ATTR", help="keep each value of this file attribute in one fold"
    )
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a match (0.5)")
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
    p.add_argument("--images", required=True, metavar="DIR", help="image folder or annotation file")
    p.add_argument(
        "--tta", action="store_true",
        help="test-time augmentation: average the 8 flips and 90-degree rotations (networks; "
        "8x the time)",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="PRED.json")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="anomaly probability (default: the model's, chosen on validation)")
    p.add_argument("--min-area", type=float, metavar="PX",
                   help="drop smaller regions (default: the model's, chosen on validation)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument(
        "--heatmaps", metavar="DIR", help="also write each image's anomaly map (float32 TIFF)"
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="predict images I, I+N, I+2N, ... (0-based, e.g. a SLURM array task id)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("merge", help="join prediction files of shards into one")
    p.add_argument("inputs", nargs="+", metavar="PRED.json")
    p.add_argument("--out", required=True, metavar="ALL.json")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--gt", required=True, metavar="GT.json")
    p.add_argument("--pred", required=True, metavar="PRED.json")
    p.add_argument("--images", metavar="DIR", help="image folder (default: beside GT.json)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a match (0.5)")
    p.add_argument("--score", type=float, default=0.0, help="ignore predictions scoring less")
    p.add_argument("--group-by", metavar="ATTR", help="file attribute to group by (cell_line)")
    p.add_argument("--exclude", metavar="V1,V2", help="groups to leave out of the summary")
    p.add_argument(
        "--image-threshold",
        type=float,
        default=0.5,
        help="image score from which an image is called anomalous (0.5)",
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
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as Unix tools do
        _quiet_stdout()
        return 0
    except (BioAnomalyError, OSError, ValueError) as exc:
        if os.environ.get("BIOANOMALY_DEBUG"):
            raise
        message: Any = exc
        if isinstance(exc, OSError) and exc.filename:
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
