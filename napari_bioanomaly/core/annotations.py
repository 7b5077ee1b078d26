"""One entry point for annotation files: load any supported format, save to any.

``load`` detects the format, builds the :class:`Dataset`, finds the images
(inside the dataset folder only), records their sizes, and clips regions to
them; ``save`` writes atomically with a backup of the previous file.
"""

from __future__ import annotations

import functools
import glob
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from . import coco, geojson, imagej, via
from .fileio import file_lock, paused_gc
from .geometry import clean_polygon
from .images import ImageReadError, image_header, is_image_file, stack_note
from .jsonio import clean_json, read_json, write_json
from .masks import write_label_masks
from .model import BioAnomalyError, Dataset, FormatError, ImageRecord, Region
from .paths import name_key, resolve_image
from .report import ImportReport
from .text import counted
from .via import ImportOptions, detect_format

#: Formats ``save`` writes, by the name the CLI uses.
EXPORT_FORMATS = ("via", "via-project", "coco", "masks", "imagej", "geojson")
#: Formats that ``save`` writes as a folder of files (one per image).
FOLDER_FORMATS = ("masks", "imagej", "geojson")
#: Formats an annotation session can save back to the file it read.
VIA_FORMATS = ("via1-export", "via2-export", "via2-project", "via3-project")
#: File names tried, in order, when a folder is opened.
ANNOTATION_NAMES = ("annotations.json", "via_project.json", "via_region_data.json")


def parse(
    data: Any, file: str = "", options: ImportOptions | None = None
) -> tuple[Dataset, ImportReport]:
    """Dataset and report from parsed JSON in any supported format.

    Text that UTF-8 cannot hold (lone surrogates) and values nested absurdly
    deep are changed first (see :func:`~.jsonio.clean_json`) and reported, so
    that whatever is loaded can be saved again.
    """
    data, changes = clean_json(data)
    fmt = detect_format(data)
    if fmt is None and geojson.is_geojson(data):
        stem = Path(file).stem if file else "image"
        dataset, report = geojson.read_geojson(data, file, image=f"{stem}.tif")
    elif fmt is None:
        part = via_part(data)
        if part:
            raise FormatError(f"{file or 'data'}: a VIA {part} file, without images or "
                              "regions: open the VIA project or annotations it belongs to "
                              "(VIA: Project > Export or Annotation > Export)")  # fmt: skip
        raise FormatError(
            f"{file or 'data'}: neither VIA (1.x, 2.x, 3.x) nor COCO annotations "
            "(no '_via_img_metadata', no VIA image entries, no COCO 'images'/'annotations')"
        )
    elif fmt == "coco":
        dataset, report = coco.read_coco(data, file)
    else:
        dataset, report = via.read_via(data, file, options)
    for where, what in changes:
        report.add("changed", f"{where or 'the file'}: {what}")
    return dataset, report


def via_part(data: Any) -> str | None:
    """What a VIA file that holds no annotations is: ``"attributes"`` (VIA 2's
    "Export attributes"), ``"settings"``, or ``None`` for anything else."""
    if not isinstance(data, dict) or not data or "_via_img_metadata" in data:
        return None
    keys = set(data)
    if keys <= {"_via_attributes", "_via_settings", "_via_data_format_version"}:
        return "attributes" if "_via_attributes" in keys else "settings"
    if "region" in keys and "file" in keys and keys <= {"region", "file"}:
        return "attributes"  # VIA 2 "Export attributes" writes the definitions bare
    return None


def load(
    path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    options: ImportOptions | None = None,
    read_images: bool = True,
    raw: bytes | None = None,
) -> tuple[Dataset, ImportReport]:
    """Load an annotation file; images are looked up in ``images_dir`` or beside it.

    With ``read_images``, every image's header is read for its size, missing or
    unreadable images are reported, and regions are clipped to the image. ``raw``:
    the JSON file's bytes, when the caller has read them (to fingerprint them). An
    imported file with edits saved beside it is read as those edits
    (:func:`saved_edits`), said in the report; not where ``raw`` is given.
    """
    path = Path(path)
    root = Path(images_dir) if images_dir is not None else path.parent
    if is_image_file(path.name) and path.is_file():  # read as JSON: "not UTF-8 text (byte 78)"
        raise FormatError(
            f"{path}: an image, not an annotation file: open its folder ({path.parent}) to "
            "annotate its images"
        )
    if raw is None and (edits := saved_edits(path)) is not None:
        dataset, report = load(edits, root, options, read_images)
        report.add("note", edits_note(path, edits))
        import_categories(dataset, path)
        return dataset, report
    options = options or ImportOptions()
    if path.suffix.lower() in (".zip", ".roi"):
        dataset, report = imagej.read_roi_sets([path], root, options.polyline_width)
    else:
        with paused_gc():
            data = read_json(path, raw)
            if detect_format(data) is None and geojson.is_geojson(data):
                data, changes = clean_json(data)
                image = geojson.image_for(path, root)
                dataset, report = geojson.read_geojson(data, str(path), image,
                                                       options.polyline_width)  # fmt: skip
                for where, what in changes:
                    report.add("changed", f"{where or 'the file'}: {what}")
            else:
                dataset, report = parse(data, str(path), options)
    dataset.root = root
    if read_images:
        attach_images(dataset, report)
    check_class_names(dataset, report)
    return dataset, report


def attach_images(dataset: Dataset, report: ImportReport | None = None) -> list[str]:
    """Read image sizes from the files and clip regions to them.

    Returns the file names of images that could not be read (also reported).
    """
    report = report or ImportReport()
    root = dataset.root or Path(".")
    missing: list[str] = []
    for image in dataset.images:
        try:
            shape, planes = image_header(resolve_image(root, image.filename))
        except (ImageReadError, BioAnomalyError) as exc:
            report.add("image", str(exc), image.filename)
            missing.append(image.filename)
            continue
        if planes > 1:
            report.add("image", stack_note(planes), image.filename)
        if image.shape is not None and tuple(image.shape) != shape:
            report.add(
                "image",
                f"recorded size {image.shape[0]}x{image.shape[1]} differs from the file's "
                f"{shape[0]}x{shape[1]}; using the file's",
                image.filename,
            )
        image.shape = shape
        clip_regions(image, report)
    return missing


def _fitted(
    region: Region, shape: tuple[int, int], note: Callable[[str, str], None]
) -> list[Region] | None:
    """``region`` cut to an image of ``shape``: its parts inside (none when it lies wholly
    outside), or None when it is inside already."""
    rows, cols = shape
    r0, c0, r1, c1 = region.bbox
    if r0 >= 0 and c0 >= 0 and r1 <= rows and c1 <= cols:
        return None
    parts = clean_polygon(region.polygon, shape, note)
    return [replace(region, polygon=p, attributes=dict(region.attributes)) for p in parts]


def clip_regions(image: ImageRecord, report: ImportReport) -> None:
    """Clip an image's regions to its known shape; report what changed, naming each region
    as its import did (:attr:`~.model.Region.origin`: the file it came from and its index
    there), else by its place in the image."""
    kept = []
    for index, region in enumerate(image.regions):
        file, where = region.origin or (None, str(index))

        def note(kind: str, message: str, where: str = where, file: str | None = file) -> None:
            report.add(kind, message, image.filename, where, file)

        parts = _fitted(region, image.shape or (0, 0), note)
        if parts is None:
            kept.append(region)
            continue
        if not parts:
            report.regions_imported -= 1
        kept.extend(parts)
    image.regions = kept


def inside_image(regions: list[Region], shape: tuple[int, int]) -> tuple[list[Region], int, int]:
    """Regions drawn past an image's edges cut to it: ``(regions, clipped, dropped)``, the
    counts of regions cut and of those wholly outside (dropped)."""
    kept: list[Region] = []
    clipped = dropped = 0
    for region in regions:
        parts = _fitted(region, shape, lambda kind, message: None)
        if parts is None:
            kept.append(region)
            continue
        clipped += bool(parts)
        dropped += not parts
        kept.extend(parts)
    return kept, clipped, dropped


def check_class_names(dataset: Dataset, report: ImportReport) -> None:
    """Warn about class names that differ only in case or surrounding spaces."""
    groups: dict[str, set[str]] = defaultdict(set)
    for name in dataset.class_names():
        groups[name.strip().casefold()].add(name)
    for names in groups.values():
        if len(names) > 1:
            listed = ", ".join(repr(n) for n in sorted(names))
            report.add("class", f"class names differ only in case or spaces: {listed}")


def edit_target(path: str | os.PathLike[str], fmt: str | None) -> Path:
    """Where edits of an annotation file of format ``fmt`` are saved: VIA files are
    saved in place; COCO, ImageJ and GeoJSON imports go to ``<stem>.via.json`` beside
    them (the original is never overwritten)."""
    path = Path(path)
    if fmt in VIA_FORMATS:
        return path
    target = _edits_name(path)
    other = _edits_owner(target)
    if other is not None and not _same_name(other, path.name):  # two imports of one stem
        own = _own_name(path, fmt)
        what = (f"rename {path.name} to {own} and open it under that name" if own
                else f"move {path.name} to a folder of its own")  # fmt: skip
        raise BioAnomalyError(
            f"{path}: its edits would be saved to {target.name}, which holds the edits of "
            f"{other} (imports named {path.stem}.* share it): {what}"
        )
    return target


def _same_name(a: str, b: str) -> bool:
    """Whether two file names in one folder name one file (a case-insensitive file
    system, macOS's or Windows', takes ``Cells.json`` for ``cells.json``)."""
    return a == b or a.casefold() == b.casefold()


def _edits_owner(target: Path) -> str | None:
    """The import whose edits the VIA project ``target`` says it holds (None: no such
    file, one that cannot be read, or one that does not say)."""
    try:
        return _edits_of(target) if target.is_file() else None
    except (FormatError, OSError):
        return None


def _own_name(path: Path, fmt: str | None) -> str | None:
    """A name for the import ``path`` whose edits no other import of its stem shares, and
    that still names its image (a Fiji ROI set's or a GeoJSON file's name says which:
    ``x_rois.zip``, ``x.tif.roi``, ``x.tif.geojson``); None where it has that name already."""
    suffix = path.suffix.lower()
    if suffix == ".zip" and not path.name.endswith(imagej.SUFFIX):
        name = f"{path.stem}{imagej.SUFFIX}"  # x_rois.zip: its image found as x.zip's was
    elif suffix == ".zip":  # x_rois.zip: x.tif_rois.zip, the image's whole name
        name = f"{imagej.image_name(path, path.parent)}{imagej.SUFFIX}"
    elif suffix == ".roi":
        name = f"{imagej.image_name(path, path.parent)}.roi"
    elif fmt == "geojson":
        name = f"{geojson.image_for(path, path.parent)}.geojson"
    else:
        name = f"{path.stem}-coco{path.suffix}"
    return None if _same_name(name, path.name) or (path.with_name(name)).exists() else name


def _edits_name(path: Path) -> Path:
    return path.with_name(path.stem + ".via.json")


def json_format(path: Path) -> str | None:
    """:func:`~.via.detect_format` of a JSON file, read once for as long as the file is
    unchanged (finding an import's edits asks it of both files, at every open)."""
    stat = path.stat()
    return _json_format(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _json_format(path: str, mtime_ns: int, size: int) -> str | None:
    return _json_facts(path, mtime_ns, size)[0]


@functools.lru_cache(maxsize=64)
def _json_facts(path: str, mtime_ns: int, size: int) -> tuple[str | None, str | None]:
    """A JSON file's format, and the import it holds the edits of (a VIA project's
    ``imported_from``), read once for as long as the file is unchanged."""
    data = read_json(path)
    settings = data.get("_via_settings") if isinstance(data, dict) else None
    return detect_format(data), via.imported_from_setting(settings)


def _edits_of(path: Path) -> str | None:
    """The name of the import whose edits the VIA project ``path`` holds, if it says."""
    stat = path.stat()
    return _json_facts(str(path.resolve()), stat.st_mtime_ns, stat.st_size)[1]


def _is_via(path: Path, unreadable: bool = False) -> bool:
    """Whether ``path`` is a VIA file (``unreadable``: what an unreadable one counts as)."""
    if path.suffix.lower() in (".zip", ".roi"):
        return False
    try:
        return json_format(path) in VIA_FORMATS
    except (FormatError, OSError):
        return unreadable


def saved_edits(path: str | os.PathLike[str]) -> Path | None:
    """The VIA project beside an imported annotation file (COCO, Fiji ROI set, GeoJSON)
    that holds its edits (see :func:`edit_target`), where one was saved; ``None`` for a
    VIA file (its edits are saved in place) or an import not edited yet.

    From its first save on, that project *is* the dataset: opening the imported file or
    its folder again opens the edits, never the import they started from (which would
    put the deleted regions back and, at the next save, overwrite the edits).
    Raises :class:`BioAnomalyError` where the project is there but unreadable, rather
    than open the import and overwrite it. A project that names another import of this
    stem as its own (``cells.json`` beside ``cells.zip``) is not this file's.
    """
    path = Path(path)
    target = _edits_name(path)
    if not target.is_file() or _is_via(path, unreadable=True):
        return None  # a VIA file is its own edits (an unreadable one says so when read)
    try:
        fmt = json_format(target)
    except FormatError as exc:
        fmt, why = None, str(exc)
    else:
        why = f"it is not a VIA project ({fmt or 'format not recognised'})"
    if fmt not in VIA_FORMATS:
        raise BioAnomalyError(
            f"{target}: should hold the edits of {path.name} saved by napari-bioanomaly, "
            f"but {why}; move it away to start again from {path.name}"
        )
    other = _edits_of(target)
    if other is not None and not _same_name(other, path.name):
        # another import of this stem: its edits are not this file's dataset, which is
        # read as it is (editing it is refused: see edit_target)
        return None
    return target


def unsaved_edits_of(target: str | os.PathLike[str]) -> list[Path]:
    """The imports (COCO, Fiji ROI set, GeoJSON) beside ``target``, a VIA project not saved
    yet, whose edits it is named to hold (``cells.json``'s are ``cells.via.json``): the
    name a session of an import edited but not saved goes by (the fields the widgets
    fill, a later open). Images (``cells.tif``) are no imports; VIA files their own edits."""
    target = Path(target)
    if target.exists() or not target.name.lower().endswith(".via.json"):
        return []
    stem = target.name[: -len(".via.json")]
    found = []
    for p in sorted(target.parent.glob(glob.escape(stem) + ".*")):
        suffix = p.suffix.lower()
        if _edits_name(p) != target or not p.is_file():
            continue
        if suffix == ".zip" and not imagej.is_roi_set(p):
            continue
        # an unreadable .json counts: opening it says what is wrong with it
        if suffix in PER_IMAGE_SUFFIXES or (suffix == ".json" and not _is_via(p)):
            found.append(p)
    return found


def stands_for(path: str | os.PathLike[str]) -> Path:
    """The file opening ``path`` reads: the import whose edits ``path`` names where they
    are not saved yet (:func:`unsaved_edits_of`), else ``path``. Raises
    :class:`BioAnomalyError` where two imports of that stem would share them (which one
    was meant is not guessed)."""
    imports = unsaved_edits_of(path)
    if len(imports) > 1:
        names = ", ".join(p.name for p in imports)
        raise BioAnomalyError(
            f"{path}: no such file; it would hold the edits of one of {names}: open the one meant"
        )
    return imports[0] if imports else Path(path)


def import_categories(dataset: Dataset, imported: str | os.PathLike[str]) -> None:
    """Give a dataset read from the edits of a COCO import (a VIA project, which has no
    place for them) the import's categories, so that its ids and supercategories are
    written back by a COCO export (:func:`.coco.categories_of`)."""
    if not dataset.categories and Path(imported).suffix.lower() == ".json":
        dataset.categories = coco.categories_of(imported)


def edited_file(path: str | os.PathLike[str]) -> Path:
    """The file that edits of the annotation file ``path`` are saved to, and whose earlier
    versions are kept: itself for a VIA file, the project beside an import (see
    :func:`edit_target`). A path with no file stands for itself (a deleted file, whose
    versions may bring it back); a file that is no annotation file is refused."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() in (".zip", ".roi"):
        return path if not path.is_file() else edit_target(path, "imagej")
    try:
        data = read_json(path)
    except FormatError as exc:
        why = str(exc).removeprefix(f"{path}: ")
        raise FormatError(f"{path}: not an annotation file ({why})") from None
    fmt = detect_format(data) or ("geojson" if geojson.is_geojson(data) else None)
    if fmt is None:
        raise FormatError(f"{path}: not an annotation file (VIA, COCO, Fiji ROI set, GeoJSON)")
    return edit_target(path, fmt)


def edits_note(imported: Path, edits: Path) -> str:
    """What the import report says when the saved edits of ``imported`` are opened."""
    note = f"opened {edits.name}, the edits of {imported.name} saved here"
    if imported.stat().st_mtime > edits.stat().st_mtime:
        note += (
            f"; {imported.name} changed after they were saved: to start again from it, "
            f"move {edits.name} away"
        )
    return note


def find_annotation_file(folder: str | os.PathLike[str]) -> Path | None:
    """The annotation file of a dataset folder, or ``None``.

    Tries :data:`ANNOTATION_NAMES`, then the only ``*.json`` in the folder
    that is VIA or COCO; an imported file and the project of its edits beside it
    (:func:`saved_edits`) count as one, the imported file returned. A model's
    predictions kept beside the dataset (``*.predictions.json``, what Predict & review
    writes) are never its annotation file.
    """
    folder = Path(folder)
    for name in ANNOTATION_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = []
    for p in sorted(folder.glob("*.json")):
        if is_predictions_name(p):
            continue
        try:
            if detect_format(read_json(p)) is not None:
                found.append(p)
        except FormatError:
            continue
    edits = {_edits_name(p) for p in found if _edits_name(p) in found and _is_edited(p)}
    # the edits of one per-image file (a.geojson's a.via.json) are not the folder's file
    singles = {_edits_name(p) for p in folder.iterdir() if p.suffix.lower() in PER_IMAGE_SUFFIXES}
    found = [p for p in found if p not in edits and p not in singles]
    return found[0] if len(found) == 1 else None


#: How the files of a model's predictions kept beside a dataset end
#: (:func:`~.review.predictions_path`).
PREDICTIONS_SUFFIX = ".predictions.json"


def is_predictions_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named as a model's predictions kept beside a dataset
    (``x.predictions.json``, or ``x.predictions.via.json``, its edits in Annotate)."""
    name = Path(path).name.lower()
    return name.endswith(PREDICTIONS_SUFFIX) or name.endswith(".predictions.via.json")


def predictions_note(folder: str | os.PathLike[str]) -> str | None:
    """What to say of a folder's model predictions (``*.predictions.json``), which are
    never its annotations (:func:`find_annotation_file`): where they are reviewed. None
    where there are none."""
    found = sorted(p.name for p in Path(folder).glob("*.json") if is_predictions_name(p))
    if not found:
        return None
    return (f"{', '.join(found[:3])}{' ...' if len(found) > 3 else ''}: a model's predictions, "
            "not this folder's annotations: the Review widget opens them beside these")  # fmt: skip


def _is_edited(path: Path) -> bool:
    try:
        return saved_edits(path) is not None
    except BioAnomalyError:
        return False  # the edits are unreadable: opening the file says so, finding it not


#: Suffix of the folders of anomaly maps that prediction writes beside its output.
HEATMAPS_SUFFIX = ".heatmaps"


def list_images(folder: str | os.PathLike[str], outside: list[str] | None = None) -> list[str]:
    """Image files under ``folder`` (recursively, hidden entries skipped), as sorted
    relative posix paths. Uses ``os.walk`` (no stat per file). Folders of anomaly maps
    written by prediction (``*.heatmaps``) are outputs, not images of the dataset.

    Symbolic links are followed only where they stay inside ``folder`` (the rule of
    :func:`~.paths.resolve_image`); the names of those that lead out are appended to
    ``outside``, if given, and never listed.
    """
    return list_files(folder, is_image_file, outside)


#: Why a link leading out of the folder listed is left out, as users are told.
OUTSIDE_LINK_WHY = (
    "only images inside the folder chosen are read (a dataset keeps to its folder, as an "
    "annotation file's names that lead out of it are refused); to use it, copy the image in "
    "(or hard-link it: ln without -s), or open the folder it is in"
)


def _link_target(folder: Path, name: str) -> str:
    """Where the link ``name`` under ``folder`` leads (as it reads), for messages."""
    try:
        return os.readlink(folder / name.rstrip("/"))
    except OSError:
        return "?"


def outside_links_note(folder: str | os.PathLike[str], names: list[str], limit: int = 3) -> str:
    """Says the links under ``folder`` that :func:`list_images` left out for leading
    outside it, where they lead, and why.

    Parameters
    ----------
    folder
        The folder listed.
    names
        The links' names relative to ``folder`` (what ``outside`` collected).
    limit
        How many are named; the others are counted.

    Returns
    -------
    str
        One line, empty when ``names`` is; e.g. ``1 link leads outside /data/r5 and is
        left out: raw.tif (-> /store/raw.tif); only files inside ...``.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return ""
    named = ", ".join(f"{n} (-> {_link_target(Path(folder), n)})" for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    verb = "leads" if len(names) == 1 else "lead"
    return (f"{counted(len(names), 'link')} {verb} outside {folder} and "
            f"{'is' if len(names) == 1 else 'are'} left out: {named}{more}; "
            f"{OUTSIDE_LINK_WHY}")  # fmt: skip


def report_outside_links(
    report: ImportReport, folder: str | os.PathLike[str], names: list[str]
) -> None:
    """Record the links of ``folder`` left out for leading outside it (see
    :func:`outside_links_note`): one ``image`` issue each, and in
    :attr:`~.report.ImportReport.outside_links`."""
    for name in dict.fromkeys(names):
        if name in report.outside_links:
            continue
        report.outside_links.append(name)
        target = _link_target(Path(folder), name)
        report.add("image", f"{name}: a link to {target}, outside the dataset folder; left "
                            f"out ({OUTSIDE_LINK_WHY})", name)  # fmt: skip


#: Suffixes of annotation files that hold one image each (our ImageJ and GeoJSON exports).
PER_IMAGE_SUFFIXES = (".zip", ".roi", ".geojson")


def per_image_files(folder: str | os.PathLike[str], outside: list[str] | None = None) -> list[str]:
    """ImageJ ROI sets (``.zip`` holding ROIs, ``.roi``) and GeoJSON files under ``folder``,
    as :func:`list_images` lists images: what ``convert --to imagej|geojson`` writes."""
    folder = Path(folder)
    names = list_files(folder, lambda n: n.lower().endswith(PER_IMAGE_SUFFIXES), outside)
    return [n for n in names if not n.lower().endswith(".zip") or imagej.is_roi_set(folder / n)]


#: Where Annotate saves the edits of a folder of per-image files (no annotation file):
#: the first of :data:`ANNOTATION_NAMES`, so that from its first save on it is the
#: folder's annotation file, which :func:`find_annotation_file` finds and
#: :func:`open_folder` reads instead of the per-image files it started from.
PER_IMAGE_EDITS = ANNOTATION_NAMES[0]
_PER_IMAGE_PLURAL = "ImageJ ROI sets or GeoJSON files"


def unread_per_image_note(folder: str | os.PathLike[str], ann: Path, limit: int = 3) -> str | None:
    """What a report says of the per-image files (:func:`per_image_files`) of ``folder``
    that are not read because the folder has the annotation file ``ann``; ``None``
    where there are none."""
    folder = Path(folder)
    names = [n for n in per_image_files(folder) if (folder / n) != ann]
    if not names:
        return None
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                        else "")  # fmt: skip
    return (
        f"{counted(len(names), 'ImageJ ROI set or GeoJSON file', _PER_IMAGE_PLURAL)} not "
        f"read ({shown}): the folder's annotation file {ann.name} is read "
        f"instead (where Annotate saved the edits of those files, it holds them); to read "
        f"them, move {ann.name} away"
    )


def list_files(
    folder: str | os.PathLike[str], accept: Any, outside: list[str] | None = None
) -> list[str]:
    """Files under ``folder`` whose name ``accept(name)`` is true (see :func:`list_images`)."""
    folder = Path(folder)
    root = folder.resolve()
    out = []

    def inside(path: Path) -> bool:
        real = path.resolve()
        return real == root or root in real.parents

    for base, dirs, files in os.walk(folder):
        rel = Path(base).relative_to(folder)
        kept = []
        for d in dirs:
            if d.startswith(".") or d.endswith(HEATMAPS_SUFFIX):
                continue
            if os.path.islink(os.path.join(base, d)) and not inside(Path(base) / d):
                if outside is not None:
                    outside.append((rel / d).as_posix() + "/")
                continue
            kept.append(d)
        dirs[:] = kept
        for name in files:
            if not name.startswith(".") and accept(name):
                if os.path.islink(os.path.join(base, name)) and not inside(Path(base) / name):
                    if outside is not None:
                        outside.append((rel / name).as_posix())
                    continue
                out.append((rel / name).as_posix())
    return sorted(out)


def load_per_image(
    folder: Path,
    names: list[str],
    images: str | os.PathLike[str],
    options: ImportOptions | None = None,
) -> tuple[Dataset, ImportReport]:
    """One dataset from per-image annotation files (see :func:`per_image_files`) under
    ``folder``: each file's regions go to the image it names, looked up in ``images``
    under the file's own sub-folder (``sub/x_rois.zip`` is the image ``sub/x.tif``)."""
    options = options or ImportOptions()
    images = Path(images)
    dataset = Dataset(root=images)
    report = ImportReport(file=str(folder), format="imagej+geojson folder")
    formats = set()
    for name in names:
        path = folder / name
        sub = PurePosixPath(name).parent
        where = images.joinpath(*sub.parts)
        if saved_edits(path) is not None:  # edited alone before: its edits, as load() reads
            part, part_report = load(path, where, options, read_images=False)
        elif path.suffix.lower() in (".zip", ".roi"):
            part, part_report = imagej.read_roi_sets([path], where, options.polyline_width)
        else:
            data, changes = clean_json(read_json(path))
            if not geojson.is_geojson(data):
                report.add("file", f"{name}: not GeoJSON; skipped")
                continue
            part, part_report = geojson.read_geojson(
                data, str(path), geojson.image_for(path, where), options.polyline_width
            )
            for at, what in changes:
                part_report.add("changed", f"{at or 'the file'}: {what}")
        formats.add(part_report.format)
        for record in part.images:
            record.filename = (sub / record.filename).as_posix()
        dataset.images.extend(part.images)
        report.merge(part_report)
    report.format = "+".join(sorted(formats)) + " folder"
    missing = [m for m in attach_images(dataset, report) if not (images / m).exists()]
    if missing:
        # a ROI set's or GeoJSON file's image is named from its own name: where no image
        # of that stem is there, the name (x.tif) is a guess; say so, and where to look
        report.add("note", f"{counted(len(missing), 'image')} of the ROI sets or GeoJSON "
                   f"files not found in {images} ({', '.join(missing[:3])}"
                   f"{' ...' if len(missing) > 3 else ''}): each file names its image by its "
                   "own name (x_rois.zip, x.geojson: x.tif where no x.* image is there): put "
                   "the files beside their images, or give the images' folder (--images "
                   "FOLDER on the command line)")  # fmt: skip
    return dataset, report


def open_folder(
    folder: str | os.PathLike[str],
    options: ImportOptions | None = None,
    images: str | os.PathLike[str] | None = None,
) -> tuple[Dataset, ImportReport, Path | None]:
    """A dataset from a folder: its annotation file if any, plus every image in it.

    Images present in the folder but absent from the annotation file are
    appended (not yet annotated). Without an annotation file, the ImageJ ROI
    sets and GeoJSON files of the folder (our per-image exports, from Fiji or
    QuPath) are read, their images looked up in ``images`` (default: the
    folder). Returns the annotation file used, if any.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BioAnomalyError(f"{folder}: not a folder")
    ann = find_annotation_file(folder)
    outside: list[str] = []
    per_image = per_image_files(folder, outside) if ann is None else []
    if ann is not None:
        dataset, report = load(ann, folder, options)
        if note := unread_per_image_note(folder, ann):
            report.add("note", note)
    elif per_image:
        dataset, report = load_per_image(folder, per_image, images or folder, options)
    else:
        dataset, report = Dataset(root=folder), ImportReport(file=str(folder), format="folder")
    known = {name_key(im.filename) for im in dataset.images}
    base = Path(images) if per_image and images is not None else folder
    for name in list_images(base, outside):
        if name_key(name) not in known and not name.endswith("_labels.tif"):
            record = ImageRecord(name)
            try:
                record.shape, planes = image_header(base / name)
            except ImageReadError as exc:
                report.add("image", str(exc), name)
            else:
                if planes > 1:
                    report.add("image", stack_note(planes), name)
            dataset.images.append(record)
    if per_image:  # the images with a file first, the others after: in name order, as a
        dataset.images.sort(key=lambda im: im.filename)  # folder without annotations lists
    report_outside_links(report, base, outside)
    if ann is None and not dataset.images:
        raise BioAnomalyError(
            f"{folder}: no images (TIFF, PNG, JPEG), no annotation file "
            f"({', '.join(ANNOTATION_NAMES)}) and no ImageJ ROI sets or GeoJSON files in this "
            "folder" + (f"; {outside_links_note(base, outside)}" if outside else "")
        )
    report.images = len(dataset.images)
    return dataset, report, ann


def open_dataset(
    source: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    options: ImportOptions | None = None,
    read_images: bool = True,
) -> tuple[Dataset, ImportReport]:
    """An annotation file, or a folder of images (with its annotation file, if any).

    The not-yet-saved annotation file of a new dataset (a folder opened in the
    Annotate widget, saved on the first change) stands for its folder, so a
    folder of images without any annotation can be trained on (unsupervised
    models) and predicted.
    """
    path = stands_for(source)  # an import's edits, not saved yet: the import
    if not path.exists() and path.parent.is_dir() and list_images(path.parent):
        existing = find_annotation_file(path.parent)
        if existing is not None or path.name not in ANNOTATION_NAMES:
            # a mistyped name must not open another file of the folder
            hint = f" (the folder's annotation file is {existing.name})" if existing else ""
            raise BioAnomalyError(f"{path}: no such file{hint}")
        path = path.parent  # the default annotation file of a folder not yet annotated
    if path.is_dir():
        dataset, report, _ = open_folder(path, options, images)
        return dataset, report
    return load(path, images, options, read_images=read_images)


def per_image_losses(dataset: Dataset, fmt: str) -> list[str]:
    """What the files of one image each (``masks``, ``imagej``, ``geojson``) do not keep
    of ``dataset``, said as warnings: file attributes, "reviewed" marks, the images
    without regions and their "checked: no anomaly" marks, (Fiji ROI sets) region scores
    and sources, and (Fiji ROI sets, label masks) region attributes."""
    out = []
    what = {"masks": "label masks", "imagej": "Fiji ROI sets", "geojson": "GeoJSON files"}[fmt]
    names = sorted({k for im in dataset.images for k in im.file_attributes})
    if names:
        out.append(f"{what} keep no file attributes: {', '.join(names)} not written")
    reviewed = sum(im.reviewed for im in dataset.images if im.regions or fmt == "masks")
    if reviewed:
        out.append(f"{what} keep no 'reviewed' marks: {counted(reviewed, 'image')} had one")
    empty = [im for im in dataset.images if not im.regions]
    if empty and fmt != "masks":  # an empty mask is written; an empty ROI set is not
        checked = sum(1 for im in empty if im.no_anomaly)
        marks = f", {checked} of them marked checked: no anomaly," if checked else ""
        verb = "gets" if len(empty) == 1 else "get"
        out.append(f"{counted(len(empty), 'image')} without regions{marks} {verb} no file")
    if fmt == "imagej":
        kept = sum(1 for r in dataset.regions if r.score is not None or r.source != "human")
        if kept:
            out.append(
                f"{what} keep no region scores or sources: {counted(kept, 'region')} had them"
            )
    if fmt in ("imagej", "masks"):  # GeoJSON writes them as feature properties
        lost = [_lost_attributes(r, fmt) for r in dataset.regions]
        having = [a for a in lost if a]
        names = sorted({k for a in having for k in a})
        if names:
            out.append(f"{what} keep no region attributes: {', '.join(names)} not written "
                       f"({counted(len(having), 'region')} had them)")  # fmt: skip
    return out


def _lost_attributes(region: Region, fmt: str) -> list[str]:
    """The attributes of ``region`` that a ``masks`` or ``imagej`` export does not write: all,
    but the automatic ImageJ name of a ROI without a class (its ROI name)."""
    names = list(region.attributes)
    if fmt == "imagej" and imagej.roi_name(region, 1) == region.attributes.get(
        imagej.NAME_ATTRIBUTE
    ):
        names.remove(imagej.NAME_ATTRIBUTE)
    return names


def save(
    dataset: Dataset, path: str | os.PathLike[str], fmt: str = "via-project"
) -> tuple[list[Path], list[str]]:
    """Write the dataset as ``fmt`` (one of :data:`EXPORT_FORMATS`).

    Every file is written atomically and the previous version is kept as
    ``.bak``. ``masks``, ``imagej`` and ``geojson`` write one file per image
    into the folder ``path``.

    Returns
    -------
    written, warnings
    """
    # numbers in these files come from validated regions: finite by construction
    if fmt == "via":
        data = via.to_via_export(dataset)
        # a predictions file: the Review widget writes its corrections by compare and swap
        # under this lock, so a prediction written now cannot fall between its check and
        # its write (it would be written over)
        with file_lock(path):
            out = write_json(path, data, check_finite=False)
        return [out], via.export_warnings(dataset)
    if fmt == "via-project":
        data = via.to_via_project(dataset)
        return [write_json(path, data, check_finite=False)], via.export_warnings(dataset)
    unread = sum(len(im.unread) for im in dataset.images)
    left_out = (
        [f"{counted(unread, 'region')} of the VIA file that were not imported (points, "
         "shapes of no area, ...; the import report names them) are not written"]
        if unread else []
    )  # fmt: skip
    if fmt == "coco":
        data, warnings = coco.to_coco(dataset)
        return [write_json(path, data, check_finite=False)], warnings + left_out
    writers = {"masks": write_label_masks, "imagej": imagej.write_roi_sets,
               "geojson": geojson.write_geojson}  # fmt: skip
    if fmt in writers:
        written, warnings = writers[fmt](dataset, path)
        return written, warnings + per_image_losses(dataset, fmt) + left_out
    raise BioAnomalyError(
        f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}"
    )
