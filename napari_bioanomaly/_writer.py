"""napari writer: Shapes layers to a VIA 2 project file (atomic, with backup)."""

from __future__ import annotations

from typing import Any

from ._layers import dataset_from_shapes
from .core.annotations import save
from .core.model import Dataset


def merge(datasets: list[Dataset]) -> Dataset:
    """One dataset from several: images with the same file name share their regions."""
    out = datasets[0]
    by_name = {im.filename: im for im in out.images}
    for other in datasets[1:]:
        for im in other.images:
            if im.filename in by_name:
                by_name[im.filename].regions.extend(im.regions)
            else:
                by_name[im.filename] = im
                out.images.append(im)
        out.classes.extend(c for c in other.classes if c not in out.classes)
    return out


def write_via(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """Write the given Shapes layers as one VIA 2 project JSON at ``path``."""
    datasets = [
        dataset_from_shapes(data, attrs, fallback_name=attrs.get("name") or "image")
        for data, attrs, kind in layer_data
        if kind == "shapes"
    ]
    if not datasets:
        return []
    written, _ = save(merge(datasets), path, "via-project")
    return [str(p) for p in written]
