"""QuPath GeoJSON: a FeatureCollection per image, written as QuPath writes it, and read back.

Coordinates: x/y in pixels, origin at the top-left corner of the top-left pixel
(QuPath's convention and ours). Rings are closed as GeoJSON requires.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import geometry
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
from .paths import export_paths
from .report import ImportReport, class_clash
from .text import counted

SUFFIX = ".geojson"
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
        props: dict[str, Any] = {"objectType": "annotation"}
        if region.unlabelled is None or region.label != FALLBACK_CLASS:
            color = _rgb(colors.get(region.label) or class_color(region.label))
            props["classification"] = {"name": region.label, "color": color}
        # else: the file it came from gave it no class: it is written back without one
        if region.score is not None:
            props["measurements"] = {"score": region.score}
        if region.source != "human":
            props["source"] = region.source
        # QuPath keeps text as the object's metadata (a map of text); other values
        # (checkbox objects, numbers) go where QuPath ignores them and we read them back
        text = {k: v for k, v in region.attributes.items() if isinstance(v, str)}
        other = {k: v for k, v in region.attributes.items() if not isinstance(v, str)}
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


def write_geojson(
    dataset: Dataset, out_dir: str | os.PathLike[str]
) -> tuple[list[Path], list[str]]:
    """One ``<image stem>.geojson`` per image with regions (QuPath: File > Import objects)."""
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


def _label(props: dict[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name") or (cls.get("names") or [None])[0]
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
    Annotation and detection objects are both read.
    """
    if not is_geojson(data):
        raise FormatError(f"{file or 'data'}: not GeoJSON (no FeatureCollection or Feature)")
    report = ImportReport(file=file, format="geojson")
    record = ImageRecord(image)
    try:
        features = _features(data)
    except FormatError as exc:
        raise FormatError(f"{file}: {exc}") from None
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
