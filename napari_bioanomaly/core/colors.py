"""A stable colour per anomaly class, shared by napari layers and exports (QuPath)."""

from __future__ import annotations

import zlib

from .model import FALLBACK_CLASS

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
_EXTRA_COLORS = ["#ff6db6", "#490092", "#24ff24", "#920000", "#b6dbff", "#924900", "#006ddb"]


def class_color(name: str) -> str:
    """A stable colour for a class: the default palette, else one picked by a hash."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return _EXTRA_COLORS[zlib.crc32(name.encode("utf-8")) % len(_EXTRA_COLORS)]
