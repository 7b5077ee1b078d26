"""Glue between the annotation model and napari layer data (no Qt, no napari import).

Produces and consumes napari *layer data tuples* ``(data, kwargs, layer_type)``,
so readers, writers and widgets share one translation. The plugin's layers are
tagged in ``metadata["bioanomaly"]`` (role, image list, dataset info), so
renaming a layer breaks nothing.

Coordinates: the model's pixel ``(r, c)`` covers ``[r, r+1)``; napari centres
pixel ``(r, c)`` on ``(r, c)``. Model vertices are shifted by ``-0.5`` on the way
into napari and ``+0.5`` on the way back, here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.colors import EXTRA_COLORS, class_color, dataset_colors
from .core.images import percentile_range, read_image, with_finite_pixels
from .core.model import FALLBACK_CLASS, BioAnomalyError, Dataset, ImageRecord, Region
from .core.paths import resolve_image

LayerData = tuple[Any, dict[str, Any], str]

#: Metadata key of the plugin's tag on its layers.
TAG = "bioanomaly"
ROLE_IMAGE = "images"
ROLE_GROUND_TRUTH = "ground-truth"
ROLE_PREDICTION = "prediction"

#: Offset from model coordinates to napari data coordinates: model coordinates are
#: continuous with the origin at the top-left corner of the top-left pixel (as VIA, COCO,
#: ImageJ and QuPath), napari puts pixel centres at integers. Applied by :func:`to_napari`
#: and :func:`from_napari` only.
NAPARI_OFFSET = -0.5


def to_napari(points: np.ndarray | Sequence[float]) -> np.ndarray:
    """Model ``(row, col)`` coordinates (vertices or a point) as napari data coordinates."""
    return np.asarray(points, dtype=np.float64) + NAPARI_OFFSET


def from_napari(vertices: np.ndarray | Sequence[float]) -> np.ndarray:
    """napari data coordinates (the last two axes of a layer's vertices) as model ones."""
    return np.asarray(vertices, dtype=np.float64)[..., -2:] - NAPARI_OFFSET


# --------------------------------------------------------------------------- images


def _read_or_none(root: Path, image: ImageRecord) -> np.ndarray | None:
    try:
        return read_image(resolve_image(root, image.filename))
    except BioAnomalyError:  # missing, unreadable, or outside the root: already reported
        return None


def _stack_geometry(dataset: Dataset, first: np.ndarray) -> tuple[tuple[int, ...], np.dtype, bool]:
    shapes = [im.shape for im in dataset.images if im.shape is not None] or [first.shape[:2]]
    rows = max(s[0] for s in shapes)
    cols = max(s[1] for s in shapes)
    rgb = first.ndim == 3
    return (rows, cols, first.shape[-1]) if rgb else (rows, cols), first.dtype, rgb


def image_layer(dataset: Dataset, name: str = "images") -> LayerData | None:
    """A lazy image layer of the dataset; ``None`` when no image can be read.

    Several images become a ``(n, rows, cols)`` dask stack read one plane at a
    time (only the image on screen is in memory); smaller images are padded at
    the bottom and right, so their pixel coordinates stay those of the file.
    Missing or unreadable images show as black planes; NaN or infinite pixels as the
    median of the others (:data:`~.core.images.NON_FINITE`). Contrast comes from the
    0.1 and 99.9 percentiles of the first readable image.
    """
    import dask.array as da
    from dask import delayed

    root = dataset.root or Path(".")
    first = None
    for im in dataset.images:
        first = _read_or_none(root, im)
        if first is not None:
            break
    if first is None:
        return None
    frame, dtype, rgb = _stack_geometry(dataset, first)
    tag = {"role": ROLE_IMAGE, "root": str(root), "images": [im.filename for im in dataset.images]}
    kwargs: dict[str, Any] = {
        "name": name,
        "contrast_limits": percentile_range(first) if not rgb else None,
        "rgb": rgb,
        "metadata": {TAG: tag},
    }
    if not rgb:
        kwargs["colormap"] = "gray"
    kwargs = {k: v for k, v in kwargs.items() if v is not None}

    def plane(image: ImageRecord) -> np.ndarray:
        out = np.zeros(frame, dtype=dtype)
        data = _read_or_none(root, image)
        if data is None:
            return out
        data = with_finite_pixels(data)[0]  # NaN or infinite pixels: the others' median
        if data.ndim != len(frame):
            data = data[..., :3] if data.ndim == 3 else np.repeat(data[..., None], frame[-1], -1)
            if not rgb and data.ndim == 3:
                data = data.mean(axis=-1)
        r, c = min(data.shape[0], frame[0]), min(data.shape[1], frame[1])
        out[:r, :c] = data[:r, :c].astype(dtype, copy=False)
        return out

    if len(dataset.images) == 1:
        return plane(dataset.images[0]), kwargs, "image"
    planes = [da.from_delayed(delayed(plane)(im), frame, dtype) for im in dataset.images]
    return da.stack(planes), kwargs, "image"


# --------------------------------------------------------------------------- shapes


def shapes_layer(
    dataset: Dataset,
    name: str = "anomalies",
    role: str = ROLE_GROUND_TRUTH,
    show_text: bool = False,
) -> LayerData:
    """A Shapes layer of every region, coloured by class, with region features.

    With several images each vertex gets a leading image index, matching
    :func:`image_layer`'s stack. Features: ``class``, ``source``, ``score``
    (NaN for human annotations), ``image``, ``attributes`` (JSON text) and
    ``class_attribute``.
    """
    stacked = len(dataset.images) > 1
    data: list[np.ndarray] = []
    columns: dict[str, list[Any]] = {k: [] for k in FEATURE_DEFAULTS}
    for index, image in enumerate(dataset.images):
        for region in image.regions:
            verts = to_napari(region.polygon)
            if stacked:
                verts = np.column_stack([np.full(len(verts), index, dtype=np.float64), verts])
            data.append(verts)
            for k, v in region_row(region, image.filename).items():
                columns[k].append(v)
    classes = dataset.class_names() or [FALLBACK_CLASS]
    # napari's Shapes maps the sorted unique feature values onto the colour
    # cycle in order, so a cycle in sorted class order gives each class its colour.
    present = sorted(set(columns["class"]))
    colors = dataset_colors(dataset)
    edge_cycle = [colors.get(c) or class_color(c) for c in present] + EXTRA_COLORS
    face_cycle = [c + "40" for c in edge_cycle]  # same hue, 25% opaque
    tag = {
        "role": role,
        "root": str(dataset.root) if dataset.root else None,
        "dataset": dataset_info(dataset),
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "features": columns,
        "feature_defaults": {**FEATURE_DEFAULTS, "class": classes[0]},
        "edge_color": "class",
        "edge_color_cycle": edge_cycle,
        "face_color": "class",
        "face_color_cycle": face_cycle,
        "edge_width": 2,
        "text": {"string": "{class}", "visible": show_text, "color": "white", "size": 9},
        "ndim": 3 if stacked else 2,
        "metadata": {TAG: tag},
    }
    return data, kwargs, "shapes"


def region_row(region: Region, image: str = "") -> dict[str, Any]:
    """The Shapes-layer feature row of a region (see :data:`FEATURE_DEFAULTS`)."""
    return {
        "class": region.label,
        "source": region.source,
        "score": np.nan if region.score is None else float(region.score),
        "image": image,
        "attributes": json.dumps(region.attributes, ensure_ascii=False),
        "class_attribute": region.class_attribute or "",
        "unlabelled": json.dumps(region.unlabelled),
    }


#: Feature columns of the plugin's Shapes layers and their values for a new shape.
FEATURE_DEFAULTS: dict[str, Any] = {
    "class": FALLBACK_CLASS,
    "source": "human",
    "score": np.nan,
    "image": "",
    "attributes": "{}",
    "class_attribute": "",
    "unlabelled": "null",
}


def shape_ring(
    vertices: np.ndarray, shape_type: str, polyline_width: float = 3.0
) -> np.ndarray | None:
    """Model-coordinate polygon vertices of one napari shape (not yet validated).

    Polygons and rectangles keep their vertices; ellipses (napari stores their
    bounding box) become ellipse polygons; paths and lines (scratches, hairs)
    become thin polygons ``polyline_width`` px wide. ``None`` for a path of one point.
    """
    from .core import geometry

    verts = from_napari(vertices)
    if shape_type == "ellipse":
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        center, radii = (lo + hi) / 2, (hi - lo) / 2
        return geometry.ellipse_polygon(center[0], center[1], radii[0], radii[1])
    if shape_type in ("path", "line"):
        verts = geometry.drop_repeats(verts)
        if len(verts) < 2:
            return None
        return geometry.polyline_polygon(verts, polyline_width)
    return verts


def region_from_row(polygon: np.ndarray, shape_type: str, row: dict[str, Any]) -> Region:
    """A region from validated vertices and the shape's feature row."""
    try:
        attrs = json.loads(row.get("attributes") or "{}")
    except (TypeError, json.JSONDecodeError):
        attrs = {}
    score = row.get("score")
    source = row.get("source")
    label = row.get("class")
    try:
        unlabelled = json.loads(row.get("unlabelled") or "null")
    except (TypeError, json.JSONDecodeError):
        unlabelled = None
    return Region(
        polygon,
        str(label) if label not in (None, "") else FALLBACK_CLASS,
        attrs if isinstance(attrs, dict) else {},
        None if score is None or (isinstance(score, float) and np.isnan(score)) else float(score),
        source if source in ("human", "model", "model-accepted") else "human",
        "polyline" if shape_type in ("path", "line") else "polygon",
        row.get("class_attribute") or None,
        unlabelled if isinstance(unlabelled, str) else None,
    )


def regions_from_shapes(
    data: list[np.ndarray],
    shape_types: list[str],
    rows: list[dict[str, Any]],
    polyline_width: float = 3.0,
) -> list[Region | None]:
    """One region per napari shape (``None`` for shapes without area), validated in a batch.

    A shape that repairs into several pieces (a bow-tie) keeps its largest piece,
    so shapes and regions stay one to one.
    """
    from .core import geometry

    rings = [shape_ring(d, t, polyline_width) for d, t in zip(data, shape_types, strict=True)]
    present = [i for i, r in enumerate(rings) if r is not None]
    cleaned = geometry.clean_polygons([r for r in rings if r is not None])
    out: list[Region | None] = [None] * len(data)
    for i, parts in zip(present, cleaned, strict=True):
        if parts:
            poly = max(parts, key=geometry.polygon_area)
            out[i] = region_from_row(poly, shape_types[i], rows[i])
    return out


def dataset_info(dataset: Dataset) -> dict[str, Any]:
    """What a Shapes layer needs to rebuild the dataset around its polygons (JSON-ready)."""
    return {
        "images": [
            {
                "filename": im.filename,
                "shape": list(im.shape) if im.shape else None,
                "size": im.size,
                "file_attributes": im.file_attributes,
                "no_anomaly": im.no_anomaly,
                "reviewed": im.reviewed,
            }
            for im in dataset.images
        ],
        "classes": list(dataset.classes),
        "class_attribute": dataset.class_attribute,
        "attribute_definitions": dataset.attribute_definitions,
        "settings": dataset.settings,
        "categories": dataset.categories,
    }


def _features_column(features: Any, key: str, n: int, default: Any) -> list[Any]:
    if features is None:
        return [default] * n
    try:
        col = features[key]
    except (KeyError, IndexError, TypeError):
        return [default] * n
    values = list(col.tolist() if hasattr(col, "tolist") else col)
    return values if len(values) == n else [default] * n


def dataset_from_shapes(
    data: list[np.ndarray], attributes: dict[str, Any], fallback_name: str = "image"
) -> Dataset:
    """Rebuild a dataset from a Shapes layer's data and attributes (the writer's input).

    A layer made by this plugin gets its images, file attributes and order back
    from its tag. Any other Shapes layer becomes one image named after the layer
    (2D) or one image per plane (``fallback_name_0000``...). Paths, rectangles
    and ellipses are written as polygons; lines and paths with fewer than three
    vertices are skipped.
    """
    meta = (attributes.get("metadata") or {}).get(TAG) or {}
    info = meta.get("dataset") or {}
    shape_types = attributes.get("shape_type") or ["polygon"] * len(data)
    features = attributes.get("features")
    n = len(data)
    columns = {k: _features_column(features, k, n, v) for k, v in FEATURE_DEFAULTS.items()}
    dataset = Dataset(
        classes=list(info.get("classes", [])),
        class_attribute=info.get("class_attribute", "class"),
        attribute_definitions=info.get("attribute_definitions") or {},
        settings=info.get("settings") or {},
        categories=info.get("categories") or {},
        root=Path(meta["root"]) if meta.get("root") else None,
    )
    for im in info.get("images", []):
        dataset.images.append(
            ImageRecord(
                filename=im["filename"],
                shape=tuple(im["shape"]) if im.get("shape") else None,
                size=int(im.get("size", -1)),
                file_attributes=dict(im.get("file_attributes") or {}),
                no_anomaly=bool(im.get("no_anomaly", False)),
                reviewed=bool(im.get("reviewed", False)),
            )
        )
    tagged = len(dataset.images)
    rows = [{k: col[i] for k, col in columns.items()} for i in range(n)]
    regions = regions_from_shapes(list(data), list(shape_types), rows)
    for verts, region in zip(data, regions, strict=True):
        if region is None:
            continue
        verts = np.asarray(verts)
        plane = round(float(verts[0, -3])) if verts.shape[1] >= 3 else None
        if plane is not None and 0 <= plane < tagged:
            image = dataset.images[plane]
        elif plane is None and tagged == 1:
            image = dataset.images[0]
        else:
            name = f"{fallback_name}.png" if plane is None else f"{fallback_name}_{plane:04d}.png"
            image = _named_image(dataset, name)
        image.regions.append(region)
    return dataset


def _named_image(dataset: Dataset, name: str) -> ImageRecord:
    for im in dataset.images:
        if im.filename == name:
            return im
    record = ImageRecord(name)
    dataset.images.append(record)
    return record
