"""Commands of the command line that read and write annotation files: inspect, convert,
sample, merge, qc, gui; and the import options they share (see :mod:`.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .core import annotations as annotation_files
from .core.model import BioAnomalyError, Dataset
from .core.report import ImportReport
from .core.text import counted, printable
from .core.via import ImportOptions


def _file_progress(every: int = 10) -> Any:
    """A ``progress(done, total, name)`` printing on stderr: each file over itself on a
    terminal, every ``every``-th and the last on its own line in a log."""
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int, name: str) -> None:
        end = "\r" if interactive and done < total else "\n"
        if interactive or done == total or done % every == 0:
            # a name's line break or carriage return would break the line (or the \r's
            # overwriting): shown escaped
            line = f"{done}/{total} {printable(name)}"
            print(line.ljust(60) if interactive else line, end=end, file=sys.stderr, flush=True)

    return progress


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _refuse_input_as_output(out: str | Path, inputs: dict[str, Any], option: str = "--out") -> None:
    """Refuse an output path that is one of the command's inputs (``{what: path or paths}``):
    what the command makes would replace what it reads, its only copy the one ``.bak``."""
    for what, paths in inputs.items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path is not None and _same_file(Path(out), Path(path)):
                raise BioAnomalyError(
                    f"{option} {out}: is the {what} this command reads; writing there would "
                    f"replace it: choose another {option}"
                )


def _refuse_replacing_annotations(out: str | Path, option: str = "--out") -> None:
    """Refuse to replace an existing file at ``out`` with predictions unless it holds only
    predictions: regions drawn or accepted by a person are not written over (the one
    ``.bak`` would go at the next run), nor a file that is no annotation file at all."""
    path = Path(out)
    if not path.is_file():
        return
    try:
        existing, _ = annotation_files.load(path, read_images=False)
    except BioAnomalyError as exc:
        raise BioAnomalyError(
            f"{option} {out}: exists and is not a prediction file ({exc}); predictions would "
            f"replace it: choose another {option}"
        ) from None
    kept = [r for r in existing.regions if r.source != "model"]
    if kept:
        raise BioAnomalyError(
            f"{option} {out}: holds {counted(len(kept), 'region')} drawn or accepted by a "
            f"person; predictions would replace them: choose another {option}"
        )


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


def _warn_import(report: ImportReport, args: argparse.Namespace) -> None:
    """Print :func:`_import_warnings` to stderr: each kind's heading as a warning, its
    issues indented under it (``warning:     item`` read as a warning of its own), the
    further lines of an issue's text indented under that issue."""
    for line in _import_warnings(report, args):
        first, *more = line.split("\n")
        print(first if first.startswith(" ") else f"warning: {first}", file=sys.stderr)
        indent = " " * (len(first) - len(first.lstrip()) + 4)
        for part in more:
            print(indent + part, file=sys.stderr)


def _add_import_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("import options")
    g.add_argument(
        "--verbose",
        action="store_true",
        help="list every import issue (default: the first 5 of each kind)",
    )
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
    return annotation_files.open_dataset(source, args.images, options, read_images=read_images)


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


def cmd_versions(args: argparse.Namespace) -> int:
    """List an annotation file's kept versions (see :mod:`.core.history`), or restore one."""
    import time

    from .core import history

    path = Path(args.input)
    if path.is_dir():
        found = annotation_files.find_annotation_file(path)
        if found is None:
            raise BioAnomalyError(f"{path}: no annotation file in this folder")
        path = found
    path = annotation_files.edited_file(path)  # an import's edits: the project beside it
    kept = history.versions(path)
    if not kept and not path.is_file():
        raise BioAnomalyError(f"{path}: no such annotation file, and no earlier version of "
                              f"it in {history.history_dir(path)}")  # fmt: skip
    if args.restore is not None:
        if not 1 <= args.restore <= len(kept):
            raise BioAnomalyError(f"{path}: no version {args.restore} (there are {len(kept)}; "
                                  "list them without --restore)")  # fmt: skip
        version = kept[args.restore - 1]
        before = history.restore(path, version)
        print(f"{path}: back to {version.name}; {history.replaced_text(before)}")
        return 0
    if not kept:
        every = f"{history.INTERVAL / 60:g} minutes"
        print(f"{path}: no earlier version kept yet (one is kept every {every} of editing, "
              f"in {history.history_dir(path)})")  # fmt: skip
        return 0
    print(f"{path}: {counted(len(kept), 'earlier version')}, newest first "
          f"(in {history.history_dir(path)}):")  # fmt: skip
    for n, version in enumerate(kept, start=1):
        stat = version.stat()
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stat.st_mtime))
        try:
            dataset, _ = annotation_files.load(version, path.parent, read_images=False)
            images, regions = len(dataset.images), len(dataset.regions)
            what = f"{counted(images, 'image')}, {counted(regions, 'region')}"
        except (BioAnomalyError, OSError) as exc:
            what = f"unreadable: {exc}"
        print(f"{n:3d}  {when}  {stat.st_size / 1024:8.0f} KiB  {what}")
    return 0


def _annotation_files_read(source: Path) -> list[Path]:
    """The annotation files that opening ``source`` (a file or a dataset folder) reads or
    stands for: the file, or the folder's, and the saved edits of an import."""
    if source.is_dir():
        found = annotation_files.find_annotation_file(source)
    else:  # the name of an import's edits not saved yet: the import
        found = annotation_files.stands_for(source)
    if found is None or not found.is_file():
        return []
    edits = annotation_files.saved_edits(found)
    return [found] if edits is None else [found, edits]


def _elsewhere_note(dataset: Dataset, output: Path, fmt: str) -> str | None:
    """What to say of an output written away from the dataset's images: its image names
    stay relative to their folder (``images/x.png``), so read from where it is the images
    are not found; None where it lies beside them (or says no image's name)."""
    root = dataset.root
    if root is None or not dataset.images or fmt == "masks":
        return None
    folder = output if fmt in annotation_files.FOLDER_FORMATS else output.parent
    try:
        if folder.resolve() == Path(root).resolve():
            return None
    except OSError:
        return None
    return (f"the images are in {root}, not in {folder}: {output} names them as they are "
            f"named from their folder ({dataset.images[0].filename}); read it with --images "
            f"{root}, or write it into {root}")  # fmt: skip


def cmd_convert(args: argparse.Namespace) -> int:
    read = _annotation_files_read(Path(args.input))
    _refuse_input_as_output(args.output, {"annotation file": read}, option="output")
    if args.as_predictions and args.to != "via":
        raise BioAnomalyError(
            f"--as-predictions: only with --to via (the predictions file the Review widget "
            f"corrects); {args.to} would not keep the mark"
        )
    dataset, report = _open(args)
    marked = 0
    if args.as_predictions:  # what Review reads as a model's, correctable (see review.py)
        for region in dataset.regions:
            if region.source != "model":
                region.source, marked = "model", marked + 1
    replacing = args.to not in annotation_files.FOLDER_FORMATS and Path(args.output).is_file()
    replaced = None
    if replacing:
        from .core import history

        # the file replaced among its earlier versions (a person's annotations given as
        # the output by mistake were gone once the next write replaced the .bak)
        replaced = history.keep_version(args.output, force=True)
    written, warnings = annotation_files.save(dataset, args.output, args.to)
    if replaced is not None:
        print(f"note: {args.output} replaced; what it held is kept as an earlier version "
              f"(napari-bioanomaly versions {args.output})", file=sys.stderr)  # fmt: skip
    elif replacing:  # no history could be written there: the .bak alone holds it
        print(f"warning: {args.output} replaced; what it held is kept only as "
              f"{args.output}.bak, which the next write there replaces",
              file=sys.stderr)  # fmt: skip
    if marked:
        print(f"note: {counted(marked, 'region')} marked as a model's predictions (source "
              "'model')", file=sys.stderr)  # fmt: skip
    _warn_import(report, args)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if note := _elsewhere_note(dataset, Path(args.output), args.to):
        print(f"warning: {note}", file=sys.stderr)
    n_regions = len(dataset.regions)
    print(
        f"{args.to}: {counted(len(dataset.images), 'image')}, {counted(n_regions, 'region')} -> "
        f"{args.output}"
    )
    if args.to == "masks":
        print(f"  {len(written) - 1} mask files and {written[-1].name}")
    elif args.to in annotation_files.FOLDER_FORMATS:
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
    out = Path(args.out_dir)
    if out.is_dir():  # its images would be overwritten, with no backup
        there = annotation_files.list_images(out)
        there += ["annotations.json"] if (out / "annotations.json").exists() else []
        if there:
            more = f" and {len(there) - 3} more" if len(there) > 3 else ""
            raise BioAnomalyError(
                f"{out}: already holds {', '.join(there[:3])}{more}: the sample goes into a "
                "new or empty folder, so that nothing is overwritten"
            )
    path = write_sample(out, config)
    print(f"wrote {counted(config.n_images, 'image')} and {path}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    _refuse_input_as_output(args.out, {"prediction file": list(args.inputs)})
    _refuse_replacing_annotations(args.out)
    merged = Dataset()
    seen: dict[str, str] = {}
    for path in args.inputs:
        if str(path).endswith(".manifest.json"):  # a glob of pred.*.json picks these too
            raise BioAnomalyError(
                f"{path}: the manifest of a prediction run still unfinished (it goes when "
                f"the run ends): run that shard's predict again to finish it, then merge"
            )
        if any(_same_file(Path(path), Path(other)) for other in set(seen.values())):
            raise BioAnomalyError(f"{path}: given twice; merge each shard's file once")
        part, _ = annotation_files.load(path, read_images=False)
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
    annotation_files.save(merged, args.out, "via")
    n_images, n_regions = len(merged.images), len(merged.regions)
    print(
        f"{counted(n_images, 'image')}, {counted(n_regions, 'region')} from "
        f"{counted(len(args.inputs), 'file')} -> {args.out}"
    )
    return 0


def cmd_qc(args: argparse.Namespace) -> int:
    from .core import history, via
    from .core.fileio import DiskChanged, file_digest, replace_if_unchanged
    from .core.images import read_image
    from .core.jsonio import dumps
    from .core.paths import resolve_image
    from .core.quality import (
        FOCUS_GROUP,
        QC_ATTRIBUTE,
        QualityReport,
        among_peers,
        check,
        flags_to_text,
        focus_groups,
    )

    source = Path(args.input)
    if source.is_dir():
        found = annotation_files.find_annotation_file(source)
    else:  # the name of an import's edits not saved yet: the import (its edits go beside)
        found = annotation_files.stands_for(source)
    if found is not None and found.is_file():
        found = _annotation_files_read(found)[-1]  # what _open reads: the edits of an import
    read = file_digest(found) if found is not None and found.is_file() else None
    dataset, report = _open(args, read_images=False)
    if args.save:  # where the flags go, refused before any image is read
        from .core.paths import unwritable_reason

        target = source / "annotations.json" if found is None else found
        if found is not None:
            target = annotation_files.edit_target(found, report.format)
        if (why := unwritable_reason(target.absolute().parent)) is not None:
            raise BioAnomalyError(f"--save: cannot write the flags into {target} ({why})")
    root = dataset.root or Path(".")
    groups = focus_groups(dataset.images, args.group_by)
    if groups is None and args.group_by != FOCUS_GROUP:  # asked for, and nowhere
        print(f"warning: no image has the file attribute {args.group_by!r}: focus is judged "
              "among all the images", file=sys.stderr)  # fmt: skip
    if report.outside_links and not args.save:  # --save prints every import warning
        print(f"warning: {annotation_files.outside_links_note(root, report.outside_links)}",
              file=sys.stderr)  # fmt: skip
    reports: list[QualityReport | None] = []
    errors: dict[str, str] = {}
    progress = _file_progress(every=100)  # thousands of images: a sign of life meanwhile
    for done, im in enumerate(dataset.images, start=1):
        try:
            reports.append(check(read_image(resolve_image(root, im.filename))))
        except BioAnomalyError as exc:
            reports.append(None)
            errors[im.filename] = str(exc)
        progress(done, len(dataset.images), im.filename)
    # out of focus: blurrier than the others (of the image's group)
    judged, focus_rule = among_peers(reports, groups)
    rows: list[dict[str, Any]] = []
    for im, quality in zip(dataset.images, judged, strict=True):
        if quality is None:
            rows.append({"image": im.filename, "flags": ["unreadable"],
                         "error": errors[im.filename]})  # fmt: skip
        else:
            rows.append({"image": im.filename, "flags": list(quality.flags),
                         "focus": quality.focus})  # fmt: skip
        im.file_attributes[QC_ATTRIBUTE] = flags_to_text(rows[-1]["flags"])
    flagged = [r for r in rows if r["flags"]]
    if args.save:
        if found is None:
            target, expected = source / "annotations.json", None
        else:
            target = annotation_files.edit_target(found, report.format)
            expected = read if target == found else file_digest(target)
            if target != found and via.imported_from_setting(dataset.settings) is None:
                # a new project of an import's edits says whose they are, as napari's do
                dataset.settings = via.with_imported_from(
                    dataset.settings, dataset.class_attribute, found.name
                )
        # what the rewrite changes of the file, said as convert says it, and the file
        # before kept among its earlier versions (the .bak alone is replaced next time)
        _warn_import(report, args)
        if target == found:
            history.keep_version(target, force=True)
        # compare and swap: an annotator that saved while qc ran is never overwritten
        raw = dumps(via.to_via_project(dataset))
        try:
            replace_if_unchanged(target, raw, expected)
        except DiskChanged:
            raise BioAnomalyError(
                f"{target}: changed on disk while qc ran (saved by another program); "
                "nothing written: run qc --save again"
            ) from None
        as_project = (
            f"; it was a {report.format} file, now a VIA 2 project (the file before: .bak, "
            f"and `napari-bioanomaly versions {target}`)"
            if target == found and report.format != "via2-project"
            else ""
        )  # fmt: skip
        print(f"flags kept in {target} (file attribute {QC_ATTRIBUTE}{as_project})",
              file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps({"images": len(rows), "flagged": len(flagged), "out_of_focus": focus_rule,
                          "rows": rows}, indent=2))  # fmt: skip
        return 0
    for r in flagged:
        print(
            f"{r['image']}: {', '.join(r['flags'])}" + (f" ({r['error']})" if "error" in r else "")
        )
    print(f"{len(flagged)} of {counted(len(rows), 'image')} flagged (out of focus: {focus_rule})")
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
