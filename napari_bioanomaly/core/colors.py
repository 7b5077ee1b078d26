"""A colour per anomaly class, shared by napari layers and exports (QuPath)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from .model import FALLBACK_CLASS, Dataset

#: Colours of the default classes (colour-blind friendly, after Okabe-Ito).
CLASS_COLORS = {
    "dark spot": "#d55e00",
    "scratch": "#0072b2",
    "bacterial colony": "#009e73",
    "hair": "#cc79a7",
    "dust": "#e69f00",
    "other": "#56b4e9",
    FALLBACK_CLASS: "#f0e442",
}
#: Colours of a dataset's other classes, given in the order of its class list (after Paul
#: Tol's muted and vibrant schemes, away from the default classes' hues), so that the first
#: twelve of them never share a colour; later ones are picked by a hash.
EXTRA_COLORS = [
    "#882255", "#44aa99", "#332288", "#999933", "#ee3377", "#117733",
    "#aa4499", "#ddcc77", "#77aadd", "#bbcc33", "#cc6677", "#ee7733",
]  # fmt: skip


def class_color(name: str) -> str:
    """The colour of a class met alone (without its dataset's class list): its default
    colour, else one picked by a hash. In a dataset use :func:`class_colors`."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return EXTRA_COLORS[zlib.crc32(name.encode("utf-8")) % len(EXTRA_COLORS)]


def class_colors(classes: Iterable[str]) -> dict[str, str]:
    """A colour for each of ``classes``: a default class its own, the others the
    :data:`EXTRA_COLORS` in the order given (a class added later comes last, so the
    colours of the others stay; "bubble", "Dust" and "dust particle" all had one colour
    by the hash)."""
    out: dict[str, str] = {}
    extra = 0
    for name in classes:
        if name in out:
            continue
        if name in CLASS_COLORS:
            out[name] = CLASS_COLORS[name]
        elif extra < len(EXTRA_COLORS):
            out[name] = EXTRA_COLORS[extra]
            extra += 1
        else:
            out[name] = class_color(name)
    return out


def dataset_colors(dataset: Dataset) -> dict[str, str]:
    """The colour of each class of ``dataset`` (its class list, then classes only its
    regions use), as every layer and export of it shows them."""
    return class_colors(dataset.class_names())
