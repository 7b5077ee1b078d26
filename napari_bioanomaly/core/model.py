"""The annotation model: datasets, images and regions, free of any GUI.

Coordinates are ``(row, col)`` in continuous pixel units: pixel ``(r, c)`` covers
``[r, r + 1) x [c, c + 1)``, so a vertex at ``(0, 0)`` is the top-left corner of
the image. This is VIA's and COCO's convention with the axes swapped; the swap
happens only in the format modules (``via``, ``coco``), and napari's half-pixel
offset only in ``napari_bioanomaly._layers``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

#: Allowed values of :attr:`Region.source`.
SOURCES = ("human", "model", "model-accepted")

#: Classes a new dataset starts with.
DEFAULT_CLASSES = ("dark spot", "scratch", "bacterial colony", "hair", "dust", "other")

#: Class given to a region whose file names none.
FALLBACK_CLASS = "anomaly"

#: Region attribute a dataset writes the classes to (VIA) when its file named none
#: (COCO, GeoJSON, Fiji ROI sets, a new dataset).
CLASS_ATTRIBUTE = "class"


class BioAnomalyError(Exception):
    """An error the user can act on; its message names the file and the item."""


class FormatError(BioAnomalyError):
    """A file is not in a format we read, or is unreadable as a whole."""


@dataclass
class Region:
    """One annotated anomaly.

    Parameters
    ----------
    polygon
        ``(N, 2)`` float array of ``(row, col)`` vertices, not closed (the first
        vertex is not repeated), ``N >= 3``.
    label
        The class of the anomaly.
    attributes
        Other region attributes as read from the file (strings, or dicts for
        VIA checkbox attributes); the class, score and source are not in here.
    score
        Model confidence in ``[0, 1]``, ``None`` for human annotations.
    source
        ``"human"``, ``"model"`` or ``"model-accepted"``.
    shape
        Shape name the region had in the file it came from (``polygon``,
        ``rect``, ``ellipse``, ...), kept for reports.
    class_attribute
        Name of the attribute the class was read from, so an export writes it
        back under the same name; ``None`` when the file named no class.
    unlabelled
        ``None`` when the file gave the region a class. Otherwise the region has
        the class :data:`FALLBACK_CLASS` and this holds, as JSON text, the empty
        value its class attribute had (``'""'``, ``'{}'``), or ``""`` when it had
        no class attribute: exports write that back instead of the fallback, so
        the user's own attribute never gains a value they did not give.
    origin
        ``(file, region)``: the file it was imported from and its index (or key, or
        id) there, so that a later report about it (clipped to the image once its
        size is known) names it as the import did; ``None`` for regions drawn or
        predicted. Not saved, not compared.
    """

    polygon: np.ndarray
    label: str = FALLBACK_CLASS
    attributes: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    source: str = "human"
    shape: str = "polygon"
    class_attribute: str | None = None
    unlabelled: str | None = None
    origin: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        poly = np.asarray(self.polygon, dtype=np.float64)
        if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
            raise ValueError(f"a region polygon needs (N>=3, 2) vertices, got shape {poly.shape}")
        if not np.isfinite(poly).all():
            raise ValueError("a region polygon needs finite vertices")
        self.polygon = poly
        if self.score is not None and not np.isfinite(self.score):
            raise ValueError(f"a region score must be finite, got {self.score}")
        if self.source not in SOURCES:
            raise ValueError(f"region source must be one of {SOURCES}, got {self.source!r}")

    @cached_property
    def area(self) -> float:
        """Polygon area in square pixels (shoelace formula; polygons are never changed in place)."""
        from .geometry import polygon_area

        return polygon_area(self.polygon)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(min_row, min_col, max_row, max_col)``."""
        lo = self.polygon.min(axis=0)
        hi = self.polygon.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def set_apart(attributes: dict[str, Any], name: str) -> str | None:
    """Move the attribute ``name`` out of the way of a value that must have that name
    (the class, written to the class attribute): to ``"<name> (imported)"``, or
    ``"<name> (imported 2)"``, ... when that is taken too.

    Parameters
    ----------
    attributes
        Region attributes, changed in place (the moved one keeps its place in the order).
    name
        The name to free.

    Returns
    -------
    str or None
        The new name of the moved attribute; ``None`` when there was none to move.
    """
    if name not in attributes:
        return None
    new, n = f"{name} (imported)", 1
    while new in attributes:
        n += 1
        new = f"{name} (imported {n})"
    moved = {(new if k == name else k): v for k, v in attributes.items()}
    attributes.clear()
    attributes.update(moved)
    return new


@dataclass
class ImageRecord:
    """One image of a dataset and its regions.

    Parameters
    ----------
    filename
        Path relative to the dataset root, with ``/`` separators.
    shape
        ``(rows, cols)`` once known (read from the image), else ``None``.
    file_attributes
        Image-level attributes, e.g. ``{"cell_line": "HeLa"}``.
    no_anomaly
        The annotator checked the image and found no anomaly.
    reviewed
        Someone reviewed this image's annotations (or predictions) and is done with it.
    regions
        The image's anomalies.
    size
        File size in bytes as VIA records it (``-1`` when unknown).
    unread
        Regions of a VIA file that were not imported (a point, a shape of no area, an
        entry that is not a region), as the file held them: written back unchanged when
        the dataset is saved as VIA, so that saving loses none of them.
    """

    filename: str
    shape: tuple[int, int] | None = None
    file_attributes: dict[str, Any] = field(default_factory=dict)
    no_anomaly: bool = False
    regions: list[Region] = field(default_factory=list)
    size: int = -1
    reviewed: bool = False
    unread: list[Any] = field(default_factory=list)

    @property
    def via_key(self) -> str:
        """The key VIA uses for this image: file name followed by its byte size."""
        return f"{self.filename}{self.size}"


@dataclass
class Dataset:
    """A root folder and its annotated images, in order.

    Parameters
    ----------
    images
        The images, in the dataset's order (VIA's image id list).
    root
        Folder that image file names are relative to; ``None`` when unknown.
    classes
        Known class names in display order; may include classes no region uses.
    class_attribute
        Region attribute that holds the class on export when a region does not
        say where its class came from.
    attribute_definitions
        VIA ``_via_attributes`` read from a project, kept for a lossless round trip.
    settings
        VIA ``_via_settings`` read from a project, kept for a lossless round trip.
    categories
        COCO categories read from a file, by class name (each its ``id``,
        ``supercategory`` and any other keys but ``name``), kept so that a COCO export
        writes them as read.
    """

    images: list[ImageRecord] = field(default_factory=list)
    root: Path | None = None
    classes: list[str] = field(default_factory=list)
    class_attribute: str = CLASS_ATTRIBUTE
    attribute_definitions: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def subset(self, indices: Sequence[int]) -> Dataset:
        """A dataset of some of the images, in that order, sharing everything else: folder,
        classes, class attribute, attribute definitions, settings and COCO categories (the
        one way to take a part of a dataset: folds, shards, validation images)."""
        return Dataset(
            images=[self.images[i] for i in indices],
            root=self.root,
            classes=list(self.classes),
            class_attribute=self.class_attribute,
            attribute_definitions=self.attribute_definitions,
            settings=self.settings,
            categories=self.categories,
        )

    @property
    def regions(self) -> list[Region]:
        """All regions of all images, in order."""
        return [r for im in self.images for r in im.regions]

    def class_names(self) -> list[str]:
        """Known classes followed by any class used by a region but not yet known."""
        names = list(self.classes)
        seen = set(names)
        for region in self.regions:
            if region.label not in seen:
                seen.add(region.label)
                names.append(region.label)
        return names

    def class_counts(self) -> Counter[str]:
        """Number of regions per class."""
        return Counter(r.label for r in self.regions)

    def image(self, filename: str) -> ImageRecord:
        """The image with this file name.

        Raises
        ------
        KeyError
            When no image has that name.
        """
        for im in self.images:
            if im.filename == filename:
                return im
        raise KeyError(filename)
