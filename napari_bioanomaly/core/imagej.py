"""ImageJ/Fiji ROI sets: one ``.zip`` of ROIs per image, written and read with ``roifile``.

Coordinates: ImageJ's x/y in pixels with the origin at the top-left corner of the
top-left pixel, the same continuous convention as ours (x = column, y = row).
Vertices are written as sub-pixel (float32) coordinates, so polygons keep their
shape to about 1e-4 px at microscopy image sizes.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from . import geometry
from .fileio import atomic_write
from .model import FALLBACK_CLASS, Dataset, FormatError, ImageRecord, Region
from .paths import export_paths, set_aside_earlier_exports
from .report import ImportReport
from .text import counted

#: Suffix of a ROI set written for an image: ``<image stem>_rois.zip``.
SUFFIX = "_rois.zip"
_NAME = re.compile(r"^(?P<label>.*)-(?P<index>\d+)$")
#: ImageJ's automatic ROI names, which name no class: ``yyyy-xxxx`` (the centre, each part
#: zero-padded to the same 4 or more digits; roifile writes 5), ``zzzz-yyyy-xxxx`` in a
#: stack, with ``-n`` when the ROI Manager made a name unique; or a bare number (the
#: ROI's index, as scripts and Cellpose's ``save_rois`` name them). And roifile's: a ROI
#: made with ``ImagejRoi.frompoints`` without a name (older Cellpose's ``save_rois`` among
#: them) is named by a UUID (``57a347dc-f20a-11f1-...``), one per ROI.
AUTO_NAME = re.compile(
    r"\d+|\d{4,}(?:-\d{4,}){1,2}(?:-\d+)?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: Region attribute that keeps an automatic ROI name.
NAME_ATTRIBUTE = "name"


def write_roi_sets(
    dataset: Dataset, out_dir: str | os.PathLike[str]
) -> tuple[list[Path], list[str]]:
    """One ROI zip per image with regions; ROI names are ``<class>-<index>`` (1-based), or
    for a region without a class an automatic name of ImageJ's (:func:`roi_name`).

    Fiji's ROI Manager opens them (File > Open, or drag the zip onto Fiji). The ROI set an
    earlier export wrote for an image that gets none now is renamed to ``.bak``
    (:func:`~.paths.set_aside_earlier_exports`), so the folder reads back as written.
    """
    from roifile import ROI_TYPE, ImagejRoi

    out = Path(out_dir)
    written: list[Path] = []
    paths, warnings = export_paths(out, [im.filename for im in dataset.images if im.regions],
                                   SUFFIX)  # fmt: skip
    for im in dataset.images:
        if im.filename not in paths:
            continue
        path = paths[im.filename]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, region in enumerate(im.regions, start=1):
                name = roi_name(region, i)  # the class is read back from this
                roi = ImagejRoi.frompoints(region.polygon[:, ::-1].astype(np.float64), name=name)
                roi.roitype = ROI_TYPE.POLYGON
                stem = region.label if _has_class(region) else name
                zf.writestr(entry_name(stem, i), roi.tobytes())
        data = buf.getvalue()
        written.append(atomic_write(path, data))
    warnings += set_aside_earlier_exports(out, [im.filename for im in dataset.images], SUFFIX,
                                          written, ("Fiji ROI set", "Fiji ROI sets"))  # fmt: skip
    if not any(im.regions for im in dataset.images):
        warnings.append("no image has regions: no ROI set written")
    return written, warnings


def roi_name(region: Region, index: int) -> str:
    """The name of a region's ROI: ``<class>-<index>`` (``index`` 1-based, 3 digits or
    more), read back as the class. A region its file gave no class gets the automatic
    ImageJ name it was read with (its :data:`NAME_ATTRIBUTE`), else one as ImageJ's ROI
    Manager makes it (``yyyy-xxxx``, its centre), so that it is read back without a class
    too, not as the class ``anomaly``."""
    if _has_class(region):
        return f"{region.label}-{index:03d}"
    kept = region.attributes.get(NAME_ATTRIBUTE)
    if isinstance(kept, str) and AUTO_NAME.fullmatch(kept):
        return kept
    r0, c0, r1, c1 = region.bbox
    y, x = max(int((r0 + r1) / 2), 0), max(int((c0 + c1) / 2), 0)
    digits = max(4, len(str(y)), len(str(x)))
    return f"{y:0{digits}d}-{x:0{digits}d}"


def _has_class(region: Region) -> bool:
    """Whether the region has a class (given in its file, or in napari)."""
    return region.unlabelled is None or region.label != FALLBACK_CLASS


#: Characters kept in a zip entry name: letters, digits, ``_``, ``-``, ``+``, space and
#: brackets; anything else (``/``, ``\\``, ``.``, ``:``, control characters, ...) becomes
#: ``_``. Without dots no part of a name is a Windows device name (``NUL.x``).
_UNSAFE = re.compile(r"[^\w\-+ ()\[\]]")
_MAX_STEM = 64


def entry_name(label: str, index: int) -> str:
    """The zip entry of a region's ROI: ``<class>-<index>.roi`` with the class made safe to
    unzip anywhere (no folders, no ``..``, no control or reserved characters, at most
    64 characters); unique within the zip by its index. The class itself is kept
    as it is in the ROI's name, which the reader uses."""
    stem = _UNSAFE.sub("_", label).strip(" ")[:_MAX_STEM].strip(" ") or "roi"
    return f"{stem}-{index:03d}.roi"


def image_name(zip_path: Path, images_dir: Path | None) -> str:
    """The image a ROI set belongs to, by its file name (``x_rois.zip``, ``x.zip``,
    ``x.png_rois.zip``), found in ``images_dir`` if given (else ``.tif``)."""
    return _image_name(zip_path, images_dir)


def _image_name(zip_path: Path, images_dir: Path | None) -> str:
    stem = zip_path.name[: -len(SUFFIX)] if zip_path.name.endswith(SUFFIX) else zip_path.stem
    from .images import IMAGE_SUFFIXES

    if PurePosixPath(stem).suffix.lower() in IMAGE_SUFFIXES:  # x.png_rois.zip: a full name
        return stem
    if images_dir is not None:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (stem + suffix, stem + suffix.upper()):
                if (images_dir / candidate).is_file():
                    return candidate
    return stem + ".tif"


#: An ImageJ ROI is a 64-byte header and its coordinates (at most 65,535 points of
#: 2 x int16 plus 2 x float32): anything much larger is not a ROI. Zip entries
#: beyond these limits are not read (a zip bomb stays on disk).
MAX_ROI_BYTES = 4 * 1024 * 1024
MAX_ZIP_TOTAL = 512 * 1024 * 1024
MAX_ZIP_ENTRIES = 200_000
MAX_RATIO = 200  # ROI coordinates compress a few times, never 1000-fold


def _zip_entries(path: Path) -> list[tuple[str, bytes | str]]:
    """``(name, bytes)`` of the ``.roi`` entries of a zip, or ``(name, why not read)``.

    Names, sizes and compression ratios are checked before anything is inflated, and
    no read goes past :data:`MAX_ROI_BYTES` whatever the entry's header claims.
    """
    entries: list[tuple[str, bytes | str]] = []
    total = 0
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_ENTRIES:
            raise FormatError(f"{path}: {len(infos)} entries, more than any ROI set holds")
        for info in infos:
            name = info.filename
            if not name.lower().endswith(".roi"):
                entries.append((name, "not an ImageJ .roi file"))
                continue
            if info.file_size > MAX_ROI_BYTES:
                entries.append((name, f"{info.file_size} bytes, too large for a ROI; not read"))
                continue
            ratio = info.file_size // max(info.compress_size, 1)
            if info.file_size > 64 * 1024 and ratio > MAX_RATIO:
                entries.append((name, f"compressed {ratio}-fold, not a ROI; not read"))
                continue
            total += info.file_size
            if total > MAX_ZIP_TOTAL:
                entries.append((name, "the zip holds more ROI data than any ROI set; not read"))
                continue
            try:
                with zf.open(info) as fh:
                    raw = fh.read(MAX_ROI_BYTES + 1)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, EOFError,
                    RuntimeError) as exc:  # fmt: skip
                entries.append((name, f"cannot be read from the zip ({exc})"))
                continue
            if len(raw) > MAX_ROI_BYTES:
                entries.append((name, "larger than its zip header says; not read"))
                continue
            entries.append((name, raw))
    return entries


def read_roi_sets(
    paths: list[Path], images_dir: Path | None = None, polyline_width: float = 3.0
) -> tuple[Dataset, ImportReport]:
    """Regions from ImageJ ROI zips (or single ``.roi`` files), one image per file.

    Polygon, rectangle, oval, freehand and traced ROIs become polygons; polylines,
    free lines and lines become thin polygons of their stroke width (or
    ``polyline_width``); points and other types are reported and skipped. The
    class is the ROI name (else its entry's name, as ImageJ reads it) without a trailing
    ``-<number>`` (:func:`roi_class`); ROIs with ImageJ's automatic names have none,
    reported once per file.
    """
    from roifile import ROI_TYPE, ImagejRoi

    report = ImportReport(file=", ".join(str(p) for p in paths), format="imagej")
    dataset = Dataset()
    for path in paths:
        record = ImageRecord(_image_name(path, images_dir))
        dataset.images.append(record)
        try:
            if path.suffix.lower() == ".roi":
                if path.stat().st_size > MAX_ROI_BYTES:
                    raise FormatError(f"{path}: {path.stat().st_size} bytes, too large for a ROI")
                entries: list[tuple[str, bytes | str]] = [(path.name, path.read_bytes())]
            else:
                entries = _zip_entries(path)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
            raise FormatError(f"{path}: not a readable ImageJ ROI zip ({exc})") from None
        unnamed = 0
        for name, raw in entries:
            report.regions_found += 1
            if isinstance(raw, str):  # why the entry was not read
                report.shapes["not a roi" if raw.startswith("not an ImageJ") else "unreadable"] += 1
                report.add("skipped", f"{name}: {raw}", record.filename, name)
                continue
            try:
                roi = ImagejRoi.frombytes(raw)
                kind = ROI_TYPE(roi.roitype)
                xy = np.asarray(roi.coordinates(), dtype=np.float64)
            except Exception as exc:  # roifile raises ValueError, struct.error, ...
                report.shapes["invalid"] += 1
                report.add(
                    "skipped", f"{name}: not a valid ImageJ ROI ({exc})", record.filename, name
                )
                continue
            if xy.ndim != 2 or not len(xy) or not geometry.coordinates_in_range(xy):
                report.shapes["invalid"] += 1
                report.add("skipped", f"{name}: coordinates beyond +-{geometry.MAX_COORDINATE:g} "
                           "px, not finite, or none", record.filename, name)  # fmt: skip
                continue
            shape = kind.name.lower()
            report.shapes[shape] += 1

            def note(k: str, message: str, n: str = name, image: str = record.filename) -> None:
                report.add(k, message, image, n)

            if kind in (
                ROI_TYPE.POLYGON,
                ROI_TYPE.RECT,
                ROI_TYPE.OVAL,
                ROI_TYPE.FREEHAND,
                ROI_TYPE.TRACED,
            ):
                points = xy[:, ::-1]
            elif kind in (ROI_TYPE.POLYLINE, ROI_TYPE.FREELINE, ROI_TYPE.LINE) and len(xy) >= 2:
                width = float(roi.stroke_width or 0) or polyline_width
                points = geometry.polyline_polygon(geometry.drop_repeats(xy[:, ::-1]), width)
                note("converted", f"{shape} buffered to {width:g} px wide")
            else:
                note("skipped", f"{shape} ROI skipped (not an area)")
                continue
            roi_name = roi.name or PurePosixPath(name.replace("\\", "/")).stem  # as ImageJ
            label, attributes = roi_class(roi_name)
            unnamed += label is None
            parts = geometry.clean_polygon(points, None, note)
            if parts:
                report.regions_imported += 1
            for part in parts:
                record.regions.append(
                    Region(
                        part,
                        label or FALLBACK_CLASS,
                        dict(attributes),
                        shape="polygon" if shape != "polyline" else shape,
                        unlabelled=None if label else "",
                        origin=(str(path), name),
                    )
                )
        if unnamed:
            report.add("class", unnamed_note(unnamed), record.filename)
    report.images = len(dataset.images)
    return dataset, report


def roi_class(name: str) -> tuple[str | None, dict[str, str]]:
    """The class of a ROI named ``name``, and the region attributes its name gives.

    Our ``<class>-<index>`` names (and anyone's ``<class>-<number>``) give the class; a
    name without a trailing number is the class itself. An empty name, or one of
    ImageJ's or roifile's automatic names (:data:`AUTO_NAME`: ``0012-0345``,
    ``0001-0012-0345``, a bare number, a UUID), gives no class (``None``), the name kept
    as :data:`NAME_ATTRIBUTE`.
    """
    if not name:
        return None, {}
    if AUTO_NAME.fullmatch(name):
        return None, {NAME_ATTRIBUTE: name}
    match = _NAME.match(name)
    return (match.group("label") if match else name) or None, {}


def unnamed_note(count: int) -> str:
    """What the import report says, once per file, of its ROIs that name no class."""
    return (
        f"{counted(count, 'ROI')} without a class in the name (no name, or an automatic "
        f"name such as ImageJ's 0012-0345 or roifile's UUID): shown as {FALLBACK_CLASS!r}, "
        f"written back without a class; an automatic name is kept as the region attribute "
        f"{NAME_ATTRIBUTE!r}"
    )


def is_roi_set(path: Path) -> bool:
    """A ``.zip`` holding at least one ``.roi`` entry, or a ``.roi`` file."""
    if path.suffix.lower() == ".roi":
        return path.is_file()
    if path.suffix.lower() != ".zip" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.lower().endswith(".roi") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError):
        return False
