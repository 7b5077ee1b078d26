"""COCO instance-segmentation JSON: polygon export with true areas, and import.

x/y become row/col here. COCO polygons use the same continuous pixel
coordinates as VIA (pixel edges at integers).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np

from . import geometry
from .images import unknown_size_text
from .jsonio import object_at, read_json, shallow_attributes
from .model import CLASS_ATTRIBUTE, Dataset, FormatError, ImageRecord, Region, set_apart
from .report import ImportReport, class_clash
from .text import counted
from .via import detect_format
from .via_parse import _EntryError, _num
from .via_write import rounded_polygons

#: Key under which we keep what COCO has no field for (file attributes, flags).
EXTRA_KEY = "bioanomaly"


def _clip(
    xy: np.ndarray, width: float, height: float
) -> tuple[list[np.ndarray], float, tuple[float, float, float, float]]:
    """The parts of an ``(x, y)`` polygon inside the image, their area and bounds."""
    import shapely
    from shapely.geometry import Polygon, box

    inside = shapely.make_valid(Polygon(xy)).intersection(box(0, 0, width, height))
    parts = [g for g in getattr(inside, "geoms", [inside]) if g.geom_type == "Polygon"]
    parts = [g for g in parts if not g.is_empty and g.area > 0]
    if not parts:
        return [], 0.0, (0.0, 0.0, 0.0, 0.0)
    rings = [np.round(np.asarray(g.exterior.coords)[:-1], 3) for g in parts]
    bounds = shapely.unary_union(parts).bounds
    return rings, float(sum(g.area for g in parts)), bounds


def to_coco(dataset: Dataset) -> tuple[dict[str, Any], list[str]]:
    """A COCO dict of the dataset, and warnings for images of unknown size.

    Image ``width``/``height`` come from :attr:`ImageRecord.shape`, which the
    caller fills by reading the images (:func:`annotations.attach_images`);
    an image of unknown size gets the extent of its regions and a warning.
    ``area`` is the polygon's own area, not its bounding box's.
    """
    warnings: list[str] = []
    categories = _categories(dataset)
    cat_ids = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    polygons = iter(rounded_polygons(dataset.regions))
    for image_id, im in enumerate(dataset.images, start=1):
        if im.shape is not None:
            height, width = im.shape
        else:
            ext = [r.polygon.max(axis=0) for r in im.regions] or [np.zeros(2)]
            height, width = (int(np.ceil(v)) for v in np.max(ext, axis=0))
            warnings.append(
                f"image {im.filename!r}: size unknown "
                f"({unknown_size_text(dataset.root, im.filename)}); "
                f"height x width set to the regions' extent, {height}x{width} px"
            )
        images.append(
            {
                "id": image_id,
                "file_name": im.filename,
                "width": int(width),
                "height": int(height),
                EXTRA_KEY: {
                    "file_attributes": im.file_attributes,
                    "no_anomaly": im.no_anomaly,
                    "reviewed": im.reviewed,
                },
            }
        )
        clipped = outside = 0
        for r in im.regions:
            xy = next(polygons)[:, ::-1]
            r0, c0, r1, c1 = r.bbox
            rings, area = [xy], r.area
            if r0 < 0 or c0 < 0 or r1 > height or c1 > width:  # COCO: inside the image
                rings, area, (c0, r0, c1, r1) = _clip(xy, width, height)
                if not rings:
                    outside += 1
                    continue
                clipped += 1
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_ids[r.label],
                "segmentation": [ring.ravel().tolist() for ring in rings],
                "area": round(area, 3),
                "bbox": [round(c0, 3), round(r0, 3), round(c1 - c0, 3), round(r1 - r0, 3)],
                "iscrowd": 0,
                "attributes": dict(r.attributes),
                EXTRA_KEY: {"source": r.source, "shape": r.shape},
            }
            if r.score is not None:
                ann["score"] = float(r.score)
            annotations.append(ann)
        if clipped:
            warnings.append(
                f"image {im.filename!r}: {counted(clipped, 'region')} "
                f"reach{'es' * (clipped == 1)} outside the image "
                f"(0..{width} x 0..{height}): clipped to it"
            )
        if outside:
            warnings.append(
                f"image {im.filename!r}: {counted(outside, 'region')} "
                f"lie{'s' * (outside == 1)} wholly outside the image "
                f"(0..{width} x 0..{height}): not written"
            )
    coco = {
        "info": {
            "description": "exported by napari-bioanomaly",
            "date_created": datetime.date.today().isoformat(),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return coco, warnings


def _categories(dataset: Dataset) -> list[dict[str, Any]]:
    """The COCO categories of the dataset's classes: a class read from COCO as it was read
    (its id, supercategory and other keys, :attr:`Dataset.categories`); others get ids
    after the highest one kept, and the supercategory ``anomaly``."""
    kept = {name: dataset.categories[name] for name in dataset.class_names()
            if name in dataset.categories}  # fmt: skip
    used: set[Any] = set()
    for cat in kept.values():
        ident = cat.get("id")
        if _id(ident) is not None and ident not in used:
            used.add(ident)
    fresh = max((i for i in used if isinstance(i, int)), default=0) + 1
    categories: list[dict[str, Any]] = []
    taken: set[Any] = set()
    for name in dataset.class_names():
        cat = {"id": None, "name": name, "supercategory": "anomaly"}
        if name in kept:
            cat = {**cat, **kept[name], "name": name}
        if cat["id"] is None or cat["id"] in taken or _id(cat["id"]) is None:
            while fresh in used or fresh in taken:
                fresh += 1
            cat["id"] = fresh
        taken.add(cat["id"])
        categories.append(cat)
    return categories


def _id(value: Any) -> int | float | str | None:
    """A COCO id (a number or text), or ``None`` for anything else (lists, objects, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        return None
    return value


def read_coco(data: Any, file: str = "") -> tuple[Dataset, ImportReport]:
    """A dataset from COCO JSON (polygon segmentations; bbox-only as rectangles).

    RLE segmentations and malformed annotations are reported and skipped.
    """
    from .paths import normalise_filename

    if detect_format(data) != "coco":
        raise FormatError(f"{file or 'data'}: not a COCO annotation file")
    report = ImportReport(file=file, format="coco")
    cats, kept = _read_categories(data, report)
    records: dict[Any, ImageRecord] = {}
    by_name: dict[str, ImageRecord] = {}
    images = data["images"] if isinstance(data["images"], list) else []
    if not isinstance(data["images"], list):
        report.add("file", f"'images' is not a list ({data['images']!r:.40}); none read")
    for i, entry in enumerate(images):
        if (
            not isinstance(entry, dict)
            or _id(entry.get("id")) is None
            or not isinstance(entry.get("file_name"), str)
            or not entry["file_name"]
        ):
            report.add("image", "image entry without an id (a number or text) or a file_name; "
                       "skipped", str(i))  # fmt: skip
            continue
        name = normalise_filename(str(entry["file_name"]))
        if name in by_name:
            report.add("image", "file name appears in more than one entry; regions merged", name)
            records[entry["id"]] = by_name[name]
            continue
        shape = None
        try:
            shape = (int(_num(entry["height"], "height")), int(_num(entry["width"], "width")))
        except (KeyError, _EntryError):
            report.add("image", "no valid width/height", name)
        extra = object_at(entry, EXTRA_KEY)
        attrs, dropped = shallow_attributes(object_at(extra, "file_attributes"), "file")
        for message in dropped:
            report.add("changed", message, name)
        rec = ImageRecord(name, shape, dict(attrs), bool(extra.get("no_anomaly", False)))
        rec.reviewed = bool(extra.get("reviewed", False))
        records[entry["id"]] = by_name[name] = rec
    anns = data["annotations"] if isinstance(data["annotations"], list) else []
    if not isinstance(data["annotations"], list):
        report.add("file", f"'annotations' is not a list ({data['annotations']!r:.40}); none read")
    for i, ann in enumerate(anns):
        report.regions_found += 1
        _coco_annotation(ann, i, records, cats, report)
    ds = Dataset(images=list(by_name.values()), classes=list(dict.fromkeys(cats.values())),
                 categories=kept)  # fmt: skip
    report.images = len(ds.images)
    return ds, report


def _read_categories(
    data: dict[str, Any], report: ImportReport
) -> tuple[dict[Any, str], dict[str, dict[str, Any]]]:
    """The class name of each category id, and each name's category as read (its id,
    supercategory and other keys, written back by :func:`_categories`)."""
    cats: dict[Any, str] = {}
    kept: dict[str, dict[str, Any]] = {}  # by name, written back as read
    categories = data.get("categories") or []
    if not isinstance(categories, list):
        report.add("file", f"'categories' is not a list ({categories!r:.40}); none read")
        categories = []
    for i, cat in enumerate(categories):
        if isinstance(cat, dict) and _id(cat.get("id")) is not None:
            name = str(cat.get("name", cat["id"])).strip()
            if not name:
                name = f"category {cat['id']}"
                report.add("class", f"category {cat['id']!r} has no name; its regions are "
                           f"class {name!r}")  # fmt: skip
            cats[cat["id"]] = name
            kept.setdefault(name, {k: v for k, v in cat.items() if k != "name"})
        else:
            report.add("file", f"category {i} has no id (a number or text); ignored")
    return cats, kept


def categories_of(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The categories of the COCO file ``path`` by class name (:attr:`Dataset.categories`);
    none where it is no longer a readable COCO file. Edits of a COCO import are saved as a
    VIA project, which has no place for them: read from the import, its ids and
    supercategories are kept when the edited dataset is exported to COCO again."""
    try:
        data = read_json(path)
    except FormatError:
        return {}
    if detect_format(data) != "coco":
        return {}
    return _read_categories(data, ImportReport())[1]


def _coco_annotation(
    ann: Any,
    index: int,
    records: dict[Any, ImageRecord],
    cats: dict[Any, str],
    report: ImportReport,
) -> None:
    if not isinstance(ann, dict):
        report.shapes["missing"] += 1
        report.add("skipped", "annotation is not an object", None, index)
        return
    ident = ann["id"] if _id(ann.get("id")) is not None else index
    rec = records.get(_id(ann.get("image_id")))
    image = rec.filename if rec else None
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
            report.shapes["polygon"] += 1
            rings = []
            for part in seg:
                if len(part) % 2:
                    raise _EntryError(f"odd number of coordinates ({len(part)})")
                v = np.array([_num(x, "coordinate") for x in part], dtype=np.float64)
                rings.append(np.column_stack([v[1::2], v[0::2]]))
        elif isinstance(seg, dict):
            report.shapes["rle"] += 1
            raise _EntryError(
                "RLE segmentation (crowd/mask) is not imported; convert it to polygons"
            )
        else:
            report.shapes["bbox"] += 1
            x, y, w, h = (_num(v, "bbox") for v in ann["bbox"])
            report.add("converted", "no segmentation: bbox imported as a rectangle", image, ident)
            rings = [geometry.rect_polygon(y, x, h, w)]
        if rec is None:
            raise _EntryError(f"refers to unknown image id {ann.get('image_id')!r}")
        if _id(ann.get("category_id")) not in cats:
            raise _EntryError(f"unknown category id {ann.get('category_id')!r:.40}")
        if not all(geometry.coordinates_in_range(r) for r in rings):
            raise _EntryError(f"coordinates beyond +-{geometry.MAX_COORDINATE:g} px")
    except (_EntryError, KeyError, TypeError, ValueError) as exc:
        report.add("skipped", str(exc), image, ident)
        return
    assert rec is not None
    label = cats[ann["category_id"]]
    extra = object_at(ann, EXTRA_KEY)
    attrs, dropped = shallow_attributes(object_at(ann, "attributes"), "region")
    for message in dropped:
        report.add("changed", message, image, ident)
    if moved := set_apart(attrs, CLASS_ATTRIBUTE):  # the category is the class
        report.add("class", class_clash(CLASS_ATTRIBUTE, moved, attrs[moved], label), image, ident)
    score = None
    if ann.get("score") is not None:
        try:
            score = _num(ann["score"], "score")
        except _EntryError as exc:
            report.add("class", f"{exc}; ignored", image, ident)
    source = extra.get("source", "model" if score is not None else "human")
    if source not in ("human", "model", "model-accepted"):
        source = "human"
    if len(rings) > 1:
        report.add(
            "split", f"polygon of {len(rings)} parts imported as {len(rings)} regions", image, ident
        )

    def note(kind: str, message: str) -> None:
        report.add(kind, message, image, ident)

    imported = False
    for ring in rings:
        for poly in geometry.clean_polygon(ring, rec.shape, note):
            rec.regions.append(
                Region(
                    poly,
                    label,
                    dict(attrs),
                    score,
                    source,
                    str(extra.get("shape", "polygon")),
                    origin=(report.file, str(ident)),
                )
            )
            imported = True
    report.regions_imported += imported
