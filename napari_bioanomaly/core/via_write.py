"""Writing VIA 2 exports and projects that the VIA 2 application opens again (see
:mod:`.via`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from . import geometry
from .jsonio import dumps, object_at, orjson
from .model import FALLBACK_CLASS, Dataset, ImageRecord, Region, set_apart
from .via_parse import (
    CLASS_ATTRIBUTE_CANDIDATES,
    NO_ANOMALY_ATTRIBUTE,
    REVIEWED_ATTRIBUTE,
    VIA2_VERSION,
    checked_options,
)


def export_warnings(dataset: Dataset) -> list[str]:
    """What the VIA 2 app will stumble on in this export (a ``%`` in a file name makes it
    fail to load the project: it URL-decodes names), and the region attributes written
    under another name (:func:`clashing_attributes`)."""
    out = [
        f"image {im.filename!r}: a '%' in the file name stops the VIA 2 app from loading "
        "this file (napari-bioanomaly reads it); rename the image to open it in VIA"
        for im in dataset.images
        if "%" in im.filename
    ]
    for im in dataset.images:
        for index, key, moved in clashing_attributes(im, dataset.class_attribute):
            out.append(f"image {im.filename!r}, region {index}: its attribute {key!r} has the "
                       f"name of the class attribute: written as {moved!r}, the class as "
                       f"{key!r}")  # fmt: skip
    return out


def clashing_attributes(im: ImageRecord, class_attribute: str) -> list[tuple[int, str, str]]:
    """``(index, name, written as)`` of the regions of ``im`` with an attribute named like
    the attribute their class is written to (imports move such attributes aside; one set
    in napari or by a script may remain): the class wins, the attribute is written under
    another name (:func:`~.model.set_apart`)."""
    out = []
    for i, r in enumerate(im.regions):
        key = r.class_attribute or class_attribute
        if key in r.attributes and _writes_class(r):
            out.append((i, key, set_apart(dict(r.attributes), key) or key))
    return out


def checkbox_value(label: str, options: Collection[str]) -> dict[str, bool]:
    """The VIA checkbox value of a class: ``{label: true}``, or, for a class that import
    made of several ticked options (their ids joined by ``+``, a ``+`` inside an id
    escaped: :func:`~.via_parse.checkbox_label`), those options ticked again."""
    return dict.fromkeys(checked_options(label, options), True)


def checkbox_classes(dataset: Dataset) -> dict[str, set[str]]:
    """The region attributes defined as checkboxes, with their option ids: a class held in
    one is written back as a checkbox object (:func:`checkbox_value`)."""
    region = dataset.attribute_definitions.get("region")
    if not isinstance(region, dict):
        return {}
    return {
        name: set(definition.get("options") or {})
        for name, definition in region.items()
        if isinstance(definition, dict) and definition.get("type") == "checkbox"
    }


def _region_attributes(
    region: Region, class_attribute: str, checkboxes: Mapping[str, Collection[str]]
) -> dict[str, Any]:
    """The VIA ``region_attributes`` of a region: its class under its class attribute
    (the class wins over an attribute of that name, which is written as
    ``"<name> (imported)"``, see :func:`clashing_attributes`), its other attributes,
    score and source."""
    key = region.class_attribute or class_attribute
    attrs: dict[str, Any] = {}
    if _writes_class(region):
        attrs[key] = region.label
        if key in checkboxes:
            attrs[key] = checkbox_value(region.label, checkboxes[key])
        if region.unlabelled is not None and region.label == FALLBACK_CLASS:
            # no class was given: write back what the file held, not the fallback; an
            # empty value where another attribute would be read as the class (from
            # GeoJSON, COCO)
            attrs[key] = json.loads(region.unlabelled) if region.unlabelled else ""
    rest = dict(region.attributes)
    if key in attrs:
        set_apart(rest, key)
    attrs.update(rest)
    if region.score is not None:
        attrs["score"] = repr(float(region.score))
    if region.source != "human":
        attrs["source"] = region.source
    return attrs


def _writes_class(region: Region) -> bool:
    """Whether a region's VIA attributes hold its class attribute: always but for a
    region its file gave no class attribute at all, unless its other attributes alone
    would be read as the class."""
    if region.unlabelled is None or region.label != FALLBACK_CLASS or region.unlabelled:
        return True
    return _reads_as_class(region.attributes)


def _reads_as_class(attributes: Mapping[str, Any]) -> bool:
    """Whether reading these attributes alone would take one of them for the class."""
    names = {k.lower() for k in attributes}
    return len(attributes) == 1 or any(n in names for n in CLASS_ATTRIBUTE_CANDIDATES)


def _unique_keys(dataset: Dataset) -> list[str]:
    keys: list[str] = []
    seen: set[str] = set()
    for im in dataset.images:
        key, n = im.via_key, 1
        while key in seen:
            n += 1
            key = f"{im.via_key}#{n}"
        seen.add(key)
        keys.append(key)
    return keys


def rounded_polygons(regions: list[Region]) -> list[np.ndarray]:
    """Vertices rounded to 3 decimals (as VIA writes them), without the repeated
    vertices rounding can create; one array per region, in order."""
    if not regions:
        return []
    lengths = np.array([len(r.polygon) for r in regions])
    rounded = np.round(np.concatenate([r.polygon for r in regions]), 3)
    return geometry.drop_repeats_many(np.split(rounded, np.cumsum(lengths)[:-1]))


def image_entry(
    im: ImageRecord,
    class_attribute: str,
    polygons: list[np.ndarray] | None = None,
    checkboxes: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """The VIA 2 metadata entry of one image (``polygons``: its rounded vertices, if known;
    ``checkboxes``: the dataset's :func:`checkbox_classes`)."""
    checkboxes = checkboxes or {}
    if polygons is None:
        polygons = rounded_polygons(im.regions)
    file_attrs = dict(im.file_attributes)
    if im.no_anomaly:
        file_attrs[NO_ANOMALY_ATTRIBUTE] = "true"
    if im.reviewed:
        file_attrs[REVIEWED_ATTRIBUTE] = "true"
    return {
        "filename": im.filename,
        "size": im.size,
        "regions": [
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": xy[:, 1].tolist(),
                    "all_points_y": xy[:, 0].tolist(),
                },
                "region_attributes": _region_attributes(r, class_attribute, checkboxes),
            }
            for r, xy in zip(im.regions, polygons, strict=True)
        ]
        + list(im.unread),  # regions not imported, as the file held them
        "file_attributes": file_attrs,
    }


def to_via_export(dataset: Dataset, cached: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The VIA 2 "annotations export" mapping of a dataset (regions as lists).

    ``cached`` maps file names to ready entries (e.g. pre-serialised JSON
    fragments) used instead of building them again; the session keeps those
    for unchanged images so an autosave costs little more than the edited image.
    """
    cached = cached or {}
    todo = [im for im in dataset.images if im.filename not in cached]
    polygons = iter(rounded_polygons([r for im in todo for r in im.regions]))
    out: dict[str, Any] = {}
    checkboxes = checkbox_classes(dataset)
    for key, im in zip(_unique_keys(dataset), dataset.images, strict=True):
        if im.filename in cached:
            out[key] = cached[im.filename]
        else:
            mine = [next(polygons) for _ in im.regions]
            out[key] = image_entry(im, dataset.class_attribute, mine, checkboxes)
    return out


def encode_entries(dataset: Dataset, cache: dict[str, bytes]) -> bool:
    """Put in ``cache`` the JSON of each image's VIA entry it lacks (see
    :func:`encode_cached`), and say whether the cache serves: orjson is there, and no two
    images have one name. What a worker reading a file ahead of its first save calls (the
    first save of 2,000 images otherwise encodes them all, 0.75 s on napari's thread)."""
    names = [im.filename for im in dataset.images]
    if orjson is None or len(set(names)) != len(names):  # entries are kept by name
        return False
    todo = [im for im in dataset.images if im.filename not in cache]
    polygons = iter(rounded_polygons([r for im in todo for r in im.regions]))
    checkboxes = checkbox_classes(dataset)
    for im in todo:
        mine = [next(polygons) for _ in im.regions]
        entry = image_entry(im, dataset.class_attribute, mine, checkboxes)
        cache[im.filename] = dumps(entry, check_finite=False)  # finite by the model
    return True


def encode_cached(
    build: Callable[[Mapping[str, Any] | None], dict[str, Any]],
    dataset: Dataset,
    cache: dict[str, bytes],
) -> bytes:
    """The JSON bytes of ``build(entries)`` (:func:`to_via_export` or :func:`to_via_project`
    of ``dataset``), encoding only the images not in ``cache`` (file name -> its entry's
    JSON, kept for images unchanged since; the caller drops the names it changes): a save
    after one correction costs little more than that image, not a walk over thousands.

    Without orjson (the only encoder that splices encoded JSON), for values it cannot
    encode (integers beyond 64 bits, which a VIA file may hold and reading keeps), or
    where two images have one name (the readers merge such entries), the whole document
    is encoded by :func:`.jsonio.dumps` instead.
    """
    names = [im.filename for im in dataset.images]
    if encode_entries(dataset, cache):
        assert orjson is not None
        fragments = {name: orjson.Fragment(cache[name]) for name in names}
        try:
            return orjson.dumps(build(fragments))
        except TypeError:  # an integer beyond 64 bits outside the entries (settings)
            pass
    return dumps(build(None), check_finite=False)


def _default_settings(class_attribute: str) -> dict[str, Any]:
    return {
        "ui": {
            "annotation_editor_height": 25,
            "annotation_editor_fontsize": 0.8,
            "leftsidebar_width": 18,
            "image_grid": {
                "img_height": 80,
                "rshape_fill": "none",
                "rshape_fill_opacity": 0.3,
                "rshape_stroke": "yellow",
                "rshape_stroke_width": 2,
                "show_region_shape": True,
                "show_image_policy": "all",
            },
            "image": {
                "region_label": class_attribute,
                "region_color": class_attribute,
                "region_label_font": "10px Sans",
                "on_image_annotation_editor_placement": "NEAR_REGION",
            },
        },
        "core": {"buffer_size": 18, "filepath": {}, "default_filepath": ""},
        "project": {"name": "napari-bioanomaly"},
    }


#: VIA 2 attribute types whose values are option ids.
_OPTION_TYPES = ("dropdown", "radio", "checkbox", "image")


def via_attribute_definitions(dataset: Dataset) -> dict[str, Any]:
    """``_via_attributes``: the definitions read, as they were (type, description, option
    labels, default options), with the classes no option names added as options; a class
    attribute without a definition becomes a dropdown of the classes."""
    attrs = copy.deepcopy(dataset.attribute_definitions) or {}
    region = attrs.setdefault("region", {})
    file = attrs.setdefault("file", {})
    if not isinstance(region, dict) or not isinstance(file, dict):
        attrs["region"], attrs["file"] = region, file = {}, {}
    class_names = dataset.class_names()
    if FALLBACK_CLASS not in dataset.classes and all(
        r.unlabelled is not None for r in dataset.regions if r.label == FALLBACK_CLASS
    ):
        # only shown for regions given no class: written back without one, not an option
        class_names = [c for c in class_names if c != FALLBACK_CLASS]
    keys = {r.class_attribute or dataset.class_attribute for r in dataset.regions}
    if class_names or dataset.class_attribute in region:
        keys.add(dataset.class_attribute)  # an empty project without classes gains none
    for key in sorted(keys):
        old = object_at(region, key)
        kind = old.get("type")
        if kind == "text":
            continue  # typed by hand in VIA: no options to add
        if kind not in _OPTION_TYPES:
            kind = "dropdown"
        options = dict(old.get("options") or {})
        for name in class_names:
            # a checkbox class may stand for several options, or one escaped in it
            ids = checkbox_value(name, options) if kind == "checkbox" else [name]
            for option in ids:
                options.setdefault(option, option)
        new = {**old, "type": kind, "options": options}
        if "description" not in old:
            new["description"] = "Anomaly class"
        if "default_options" not in old:
            new["default_options"] = {class_names[0] if class_names else FALLBACK_CLASS: True}
        region[key] = new
    used = {k for r in dataset.regions for k in r.attributes}
    if any(r.score is not None for r in dataset.regions):
        used.add("score")
    if any(r.source != "human" for r in dataset.regions):
        used.add("source")
    for key in sorted(used - set(region)):
        region[key] = {"type": "text", "description": "", "default_value": ""}
    file_used = {k for im in dataset.images for k in im.file_attributes}
    if any(im.no_anomaly for im in dataset.images):
        file_used.add(NO_ANOMALY_ATTRIBUTE)
    if any(im.reviewed for im in dataset.images):
        file_used.add(REVIEWED_ATTRIBUTE)
    for key in sorted(file_used - set(file)):
        file[key] = {"type": "text", "description": "", "default_value": ""}
    return attrs


#: Where a VIA project keeps the categories of the COCO file it holds the edits of (by
#: class name: id, supercategory, ...; read back by :func:`~.via.coco_categories_setting`):
#: a class renamed there keeps its id at the next COCO export, file reopened or not.
COCO_CATEGORIES = "coco_categories"


#: Where a VIA project that holds the edits of an import (COCO, Fiji ROI set, GeoJSON; see
#: :func:`~.annotations.edit_target`) names that import's file: two imports of one stem
#: (``cells.json`` and ``cells.zip``) would otherwise share ``cells.via.json``, each
#: opening the other's edits (read back by :func:`~.via.imported_from_setting`).
IMPORTED_FROM = "imported_from"


def with_imported_from(settings: dict[str, Any], class_attribute: str, name: str) -> dict[str, Any]:
    """VIA 2 project settings (a copy; the defaults where ``settings`` is empty) naming the
    imported file ``name`` whose edits the project holds (``project.imported_from``)."""
    out = copy.deepcopy(settings) or _default_settings(class_attribute)
    project = out.setdefault("project", {})
    if isinstance(project, dict):
        project[IMPORTED_FROM] = name
    return out


def with_class_attribute(settings: dict[str, Any], class_attribute: str) -> dict[str, Any]:
    """VIA 2 project settings (a copy; the defaults where ``settings`` is empty) recording
    ``class_attribute`` as the class attribute chosen (``project.class_attribute``, read
    back by :func:`~.via.class_attribute_setting`) and as the attribute VIA labels and
    colours regions by."""
    out = copy.deepcopy(settings) or _default_settings(class_attribute)
    project = out.setdefault("project", {})
    if isinstance(project, dict):
        project["class_attribute"] = class_attribute
    image = object_at(out, "ui").get("image")
    if isinstance(image, dict):
        image["region_label"] = image["region_color"] = class_attribute
    return out


def to_via_project(dataset: Dataset, cached: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A VIA 2.0.10 project: settings, metadata, attribute definitions, image order.

    ``cached``: see :func:`to_via_export`.
    """
    meta = to_via_export(dataset, cached)
    settings = copy.deepcopy(dataset.settings) or _default_settings(dataset.class_attribute)
    project = settings.get("project")
    if isinstance(project, dict):  # a COCO import's ids, kept for its next COCO export
        project.pop(COCO_CATEGORIES, None)
        if dataset.categories:
            project[COCO_CATEGORIES] = copy.deepcopy(dataset.categories)
    return {
        "_via_settings": settings,
        "_via_img_metadata": meta,
        "_via_attributes": via_attribute_definitions(dataset),
        "_via_data_format_version": VIA2_VERSION,
        "_via_image_id_list": list(meta),
    }
