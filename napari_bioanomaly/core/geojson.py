"""QuPath GeoJSON: a FeatureCollection per image, written as QuPath writes it, and read back.

Coordinates: x/y in pixels, origin at the top-left corner of the top-left pixel
(QuPath's convention and ours). Rings are closed as GeoJSON requires.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import geometry
from .colors import CLASS_COLORS, EXTRA_COLORS
from .jsonio import object_at, shallow_attributes, write_json
from .model import (
    CLASS_ATTRIBUTE,
    FALLBACK_CLASS,
    Dataset,
    FormatError,
    ImageRecord,
    Region,
    set_apart,
)
from .paths import export_paths, set_aside_earlier_exports
from .report import ImportReport, class_clash
from .text import counted

SUFFIX = ".geojson"
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
#: The colours a GeoJSON export gives classes: a classification colour that is none of
#: these was the user's own (QuPath's), and is reported as not kept.
_OUR_COLORS = {c.lower() for c in (*CLASS_COLORS.values(), *EXTRA_COLORS)}
#: Feature property holding the region attributes that are not text (text ones are
#: written to QuPath's ``metadata``).
ATTRIBUTES = "attributes"


def _rgb(color: str) -> list[int]:
    color = color.lstrip("#")
    return [int(color[i : i + 2], 16) for i in (0, 2, 4)]


def feature_collection(
    image: ImageRecord, colors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """QuPath-style features of one image's regions (``colors``: of its dataset's classes,
    :func:`~.colors.dataset_colors`)."""
    from .colors import class_color

    colors = colors or {}
    features: list[dict[str, Any]] = []
    for region in image.regions:
        ring = np.round(region.polygon[:, ::-1], 4).tolist()
        ring.append(ring[0])
        attributes = dict(region.attributes)
        qupath = {k: attributes.pop(k) for k in QUPATH_PROPERTIES if _writable(k, attributes)}
        props: dict[str, Any] = {"objectType": qupath.get("objectType", "annotation")}
        if "name" in qupath:
            props["name"] = qupath["name"]
        if "color" in qupath:
            props["color"] = _rgb(qupath["color"])
        if region.unlabelled is None or region.label != FALLBACK_CLASS:
            color = _rgb(colors.get(region.label) or class_color(region.label))
            props["classification"] = _classification(region.label, color)
        # else: the file it came from gave it no class: it is written back without one
        if region.score is not None:
            props["measurements"] = {"score": region.score}
        if region.source != "human":
            props["source"] = region.source
        # QuPath keeps text as the object's metadata (a map of text); other values
        # (checkbox objects, numbers) go where QuPath ignores them and we read them back
        text = {k: v for k, v in attributes.items() if isinstance(v, str)}
        other = {k: v for k, v in attributes.items() if not isinstance(v, str)}
        if text:
            props["metadata"] = text
        if other:
            props[ATTRIBUTES] = other
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{image.filename}/{len(features)}")),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _writable(key: str, attributes: Mapping[str, Any]) -> bool:
    """Whether the region attribute ``key`` (one of :data:`QUPATH_PROPERTIES`) is written
    as QuPath's property: text, and for ``color`` a ``"#rrggbb"`` colour; otherwise it
    stays an attribute like any other."""
    value = attributes.get(key)
    if not isinstance(value, str) or not value:
        return False
    return key != "color" or _HEX.fullmatch(value) is not None


def write_geojson(
    dataset: Dataset, out_dir: str | os.PathLike[str]
) -> tuple[list[Path], list[str]]:
    """One ``<image stem>.geojson`` per image with regions (QuPath: File > Import objects);
    the file an earlier export wrote for an image that gets none now is renamed to ``.bak``
    (:func:`~.paths.set_aside_earlier_exports`), so the folder reads back as written."""
    from .colors import dataset_colors

    out = Path(out_dir)
    paths, warnings = export_paths(out, [im.filename for im in dataset.images if im.regions],
                                   SUFFIX)  # fmt: skip
    colors = dataset_colors(dataset)
    written = [
        write_json(paths[im.filename], feature_collection(im, colors))
        for im in dataset.images
        if im.filename in paths
    ]
    warnings += set_aside_earlier_exports(out, [im.filename for im in dataset.images], SUFFIX,
                                          written, ("GeoJSON file", "GeoJSON files"))  # fmt: skip
    if not any(im.regions for im in dataset.images):
        warnings.append("no image has regions: no GeoJSON written")
    return written, warnings


def is_geojson(data: Any) -> bool:
    """FeatureCollection, a single Feature, or a list of Features (older QuPath exports)."""
    if isinstance(data, dict):
        return data.get("type") in ("FeatureCollection", "Feature")
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(f, dict) and f.get("type") == "Feature" for f in data)
    )


def _features(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if data.get("type") == "Feature":
        return [data]
    features = data.get("features")
    if not isinstance(features, list):
        raise FormatError("FeatureCollection without a 'features' list")
    return features


#: How QuPath joins the parts of a derived class (``Tumor: Positive``) in its name.
_DERIVED = ": "


def _classification(label: str, color: list[int]) -> dict[str, Any]:
    """QuPath's ``classification`` of a class: a derived class (``Tumor: Positive``, as
    QuPath names it) is written both as QuPath 0.4+ writes it (``names``, its parts) and
    as ``name`` (what older QuPath and other readers understand; QuPath reads ``name``
    first and splits it back into the same parts)."""
    parts = label.split(_DERIVED)
    if len(parts) > 1 and all(parts):
        return {"names": parts, "name": label, "color": color}
    return {"name": label, "color": color}


def _label(props: dict[str, Any]) -> str | None:
    """The class of a feature: its classification's ``name``, else the parts of a
    derived class (QuPath 0.4+'s ``names``) joined as QuPath names it
    (``["Tumor", "Positive"]`` is ``Tumor: Positive``)."""
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        if not name and isinstance(cls.get("names"), list):
            name = _DERIVED.join(str(part) for part in cls["names"] if part not in (None, ""))
        return str(name) if name else None
    if isinstance(cls, str) and cls:
        return cls
    return None


def read_geojson(
    data: Any, file: str = "", image: str = "image.tif", polyline_width: float = 3.0
) -> tuple[Dataset, ImportReport]:
    """Regions of one image from QuPath GeoJSON.

    Polygon and MultiPolygon geometries become regions (holes are dropped and
    reported: VIA and COCO polygons have none); LineString becomes a thin
    polygon; points and unknown geometry types are reported and skipped; a
    feature without classification gets the class ``anomaly``, reported.
    Annotation and detection objects are both read; QuPath's ``name``, own ``color``
    and an ``objectType`` other than ``annotation`` become region attributes
    (:data:`QUPATH_PROPERTIES`), written back by :func:`feature_collection`. What is not
    kept (measurements but the score, classification colours, other properties) is
    reported once per file, with counts.
    """
    if not is_geojson(data):
        raise FormatError(f"{file or 'data'}: not GeoJSON (no FeatureCollection or Feature)")
    report = ImportReport(file=file, format="geojson")
    record = ImageRecord(image)
    try:
        features = _features(data)
    except FormatError as exc:
        raise FormatError(f"{file}: {exc}") from None
    dropped = _Dropped()
    for index, feature in enumerate(features):
        report.regions_found += 1
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            report.shapes["missing"] += 1
            report.add("skipped", "feature without a geometry", image, index)
            continue
        geom = feature["geometry"]
        kind = str(geom.get("type"))
        report.shapes[kind] += 1
        props = object_at(feature, "properties")
        label = _label(props)
        unlabelled = None
        if label is None:
            report.add("class", f"no classification: shown as {FALLBACK_CLASS!r}, written "
                       "back without one", image, index)  # fmt: skip
            label, unlabelled = FALLBACK_CLASS, ""

        def note(k: str, message: str, i: int = index) -> None:
            report.add(k, message, image, i)

        try:
            rings = _rings(geom, kind, polyline_width, note)
        except (TypeError, ValueError, IndexError) as exc:
            report.add("skipped", f"{kind}: malformed coordinates ({exc})", image, index)
            continue
        value = _measurement(props.get("measurements"), "score")
        score = _score(value)
        if value is not None and score is None:
            report.add("class", f"score {str(value)[:20]!r} is not a finite number; ignored",
                       image, index)  # fmt: skip
        source = props.get("source")
        if source not in ("model", "model-accepted"):
            source = "human"
        attributes = _attributes(props, note)
        _qupath_properties(feature, attributes, note, dropped)
        if moved := set_apart(attributes, CLASS_ATTRIBUTE):  # the classification is the class
            note("class", class_clash(CLASS_ATTRIBUTE, moved, attributes[moved],
                                      None if unlabelled is not None else label))  # fmt: skip
        imported = False
        origin = (file, str(index))
        for ring in rings:
            for part in geometry.clean_polygon(ring, None, note):
                record.regions.append(Region(part, label, dict(attributes), score, source,
                                             unlabelled=unlabelled, origin=origin))  # fmt: skip
                imported = True
        report.regions_imported += imported
    for message in dropped.messages():
        report.add("dropped", message, image)
    report.images = 1
    return Dataset(images=[record]), report


def _score(value: Any) -> float | None:
    """A finite score from a measurement value (numbers written as text accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        score = float(value)
    except (ValueError, OverflowError):
        return None
    return score if math.isfinite(score) else None


def _measurement(measurements: Any, name: str) -> Any:
    """A measurement's value: QuPath writes ``{name: value}``, older QuPath a list of
    ``{"name": name, "value": value}``; ``None`` when there is none."""
    if isinstance(measurements, dict):
        return measurements.get(name)
    if isinstance(measurements, list):
        for item in measurements:
            if isinstance(item, dict) and item.get("name") == name:
                return item.get("value")
    return None


def _attributes(props: dict[str, Any], note: Any) -> dict[str, Any]:
    """Region attributes of a feature: QuPath's object ``metadata`` (text) and our own
    :data:`ATTRIBUTES` (other values)."""
    attrs = {**object_at(props, "metadata"), **object_at(props, ATTRIBUTES)}
    attrs, dropped = shallow_attributes(attrs, "region")
    for message in dropped:
        note("changed", message)
    return attrs


#: QuPath feature properties kept as region attributes of the same name, and written back
#: as properties: the object's name, its own colour (``"#rrggbb"``), its type (only when
#: not ``annotation``: a detection stays a detection).
QUPATH_PROPERTIES = ("name", "color", "objectType")
#: Feature properties read (or, ``isLocked`` false, that lose nothing when dropped).
_READ = {"objectType", "classification", "name", "color", "measurements", "metadata",
         ATTRIBUTES, "source", "isLocked"}  # fmt: skip
#: Feature members read (``id``: QuPath's object id; we write ids of our own).
_FEATURE_READ = {"type", "id", "geometry", "properties", "bbox"}


@dataclass
class _Dropped:
    """What a file's features held that is not kept, counted for one report per file."""

    measurements: Counter[str] = field(default_factory=Counter)
    measured: int = 0
    class_colors: int = 0
    other: Counter[str] = field(default_factory=Counter)

    def messages(self) -> list[str]:
        """One line per kind of thing dropped, with counts and (some of) the names."""
        out = []
        if self.measured:
            names = ", ".join(list(self.measurements)[:5]) + (
                ", ..." if len(self.measurements) > 5 else ""
            )
            out.append(f"measurements of {counted(self.measured, 'feature')} not kept ({names}): "
                       "only 'score' is read; QuPath computes measurements again "
                       "(Analyze > Calculate features)")  # fmt: skip
        if self.class_colors:
            out.append(f"classification colours of {counted(self.class_colors, 'feature')} not "
                       "kept: each class gets napari-bioanomaly's colour, which a GeoJSON "
                       "export writes")  # fmt: skip
        if self.other:
            listed = ", ".join(f"{k} ({counted(n, 'feature')})" for k, n in self.other.items())
            out.append(f"not kept: {listed}")
        return out


def _qupath_properties(
    feature: dict[str, Any], attributes: dict[str, Any], note: Any, dropped: _Dropped
) -> None:
    """Add QuPath's name, own colour and object type of a feature to its region
    ``attributes`` (:data:`QUPATH_PROPERTIES`; an attribute of the metadata of the same
    name is moved aside and said), and count in ``dropped`` what is not kept.

    Parameters
    ----------
    feature
        The GeoJSON feature.
    attributes
        Its region attributes (from ``metadata`` and our ``attributes``), changed in place.
    note
        ``note(kind, message)`` reports about this feature.
    dropped
        Tally of what the file's features lose.
    """
    props = object_at(feature, "properties")
    # QuPath writes a name and an object type as text; a list or an object there is not
    # kept (said): one nested deep enough was lost by the next save
    texts = {k: props.get(k) for k in ("name", "objectType") if props.get(k) not in (None, "")}
    odd = {f"properties.{k}" for k, v in texts.items() if isinstance(v, (list, dict))}
    kept = {
        "name": texts.get("name") if "properties.name" not in odd else None,
        "color": _hex(props.get("color")) if props.get("color") is not None else None,
        "objectType": (
            texts.get("objectType")
            if "properties.objectType" not in odd and texts.get("objectType") != "annotation"
            else None
        ),
    }
    for key, value in kept.items():
        if value is None:
            continue
        if key in attributes and attributes[key] != value:
            moved = set_apart(attributes, key)
            note("changed", f"metadata {key!r} kept as {moved!r}: {key!r} holds QuPath's "
                 f"object {key}")  # fmt: skip
        attributes[key] = value
    names = _measurement_names(props.get("measurements")) - {"score"}
    if names:
        dropped.measured += 1
        dropped.measurements.update(sorted(names))
    cls = props.get("classification")
    if isinstance(cls, dict):
        color = _hex(cls["color"] if "color" in cls else cls.get("colorRGB"))
        if isinstance(color, str) and color not in _OUR_COLORS:
            dropped.class_colors += 1
    unread = {f"properties.{k}" for k in props if k not in _READ} | odd
    if props.get("isLocked"):
        unread.add("properties.isLocked")
    unread |= {k for k in feature if k not in _FEATURE_READ}
    dropped.other.update(sorted(unread))


def _hex(color: Any) -> Any:
    """``"#rrggbb"`` of a QuPath colour (``[r, g, b]``, or older QuPath's packed
    ``0xAARRGGBB`` integer); anything else as it was (kept, not understood)."""
    if isinstance(color, int) and not isinstance(color, bool):
        color = [(color >> 16) & 255, (color >> 8) & 255, color & 255]
    if (
        isinstance(color, list)
        and len(color) in (3, 4)
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        return "#{:02x}{:02x}{:02x}".format(*color[:3])
    return color


def _measurement_names(measurements: Any) -> set[str]:
    """The names of a feature's measurements (either form of :func:`_measurement`)."""
    if isinstance(measurements, dict):
        return {str(k) for k in measurements}
    if isinstance(measurements, list):
        return {str(m["name"]) for m in measurements if isinstance(m, dict) and "name" in m}
    return set()


def _points(value: Any, what: str) -> np.ndarray:
    """``(row, col)`` vertices of a GeoJSON position list ``[[x, y], ...]``, checked."""
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list of positions")
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} holds something other than [x, y] numbers") from None
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{what} is not a list of [x, y] positions")
    if not geometry.coordinates_in_range(a[:, :2]):
        raise ValueError(f"{what} holds coordinates beyond +-{geometry.MAX_COORDINATE:g} px "
                         "or not finite")  # fmt: skip
    return a[:, 1::-1]


def _rings(geom: dict[str, Any], kind: str, width: float, note: Any) -> list[np.ndarray]:
    if kind not in ("Polygon", "MultiPolygon", "LineString", "MultiLineString"):
        note("skipped", f"geometry type {kind!r} is not an area")
        return []
    coords = geom.get("coordinates")
    if kind.startswith("Multi"):
        if not isinstance(coords, list):
            raise ValueError("coordinates is not a list")
        parts = coords
    else:
        parts = [coords]
    if kind.endswith("LineString"):
        note("converted", f"{kind} buffered to {width:g} px wide")
        points = [_points(line, "line") for line in parts]
        return [geometry.polyline_polygon(p, width) for p in points if len(p) >= 2]
    if len(parts) > 1:
        note("split", f"MultiPolygon of {len(parts)} parts imported as {len(parts)} regions")
    out = []
    for poly in parts:
        if not isinstance(poly, list) or not poly:
            raise ValueError("a polygon is not a list of rings")
        if len(poly) > 1:
            note("repaired", f"{counted(len(poly) - 1, 'hole')} dropped")
        out.append(_points(poly[0], "outer ring"))
    return out


def image_for(path: Path, images_dir: Path | None) -> str:
    """The image a GeoJSON file belongs to: same stem, found in ``images_dir`` if given."""
    from .images import IMAGE_SUFFIXES

    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    if PurePosixPath(stem).suffix.lower() in IMAGE_SUFFIXES:  # x.png.geojson: a full name
        return stem
    if images_dir is not None:
        for suffix in IMAGE_SUFFIXES:
            if (images_dir / (stem + suffix)).is_file():
                return stem + suffix
    return stem + ".tif"
