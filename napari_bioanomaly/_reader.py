"""napari readers: VIA/COCO annotation files, and dataset folders.

Readers return ``None`` for anything that is not theirs (napari then asks the
next reader) and never raise for files they declined.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._layers import LayerData, image_layer, shapes_layer
from .core import annotations as annotation_files
from .core.geojson import is_geojson
from .core.imagej import is_roi_set
from .core.jsonio import read_json
from .core.model import BioAnomalyError, Dataset, FormatError
from .core.report import ImportReport
from .core.text import counted
from .core.via import detect_format

ReaderFunction = Callable[[Any], list[LayerData]]


def _single_path(path: Any) -> str | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return str(path)


def get_annotation_reader(path: Any) -> ReaderFunction | None:
    """Reader for VIA (1.x/2.x/3.x), COCO, QuPath GeoJSON or ImageJ ROI zip files.

    ``None`` for any other file, so napari asks its other readers.
    """
    single = _single_path(path)
    if single is None or not Path(single).is_file():
        return None
    suffix = Path(single).suffix.lower()
    if suffix in (".zip", ".roi"):
        if not is_roi_set(Path(single)):
            return None
    elif suffix in (".json", ".geojson"):
        try:
            data = read_json(single)
        except FormatError:
            return None
        if detect_format(data) is None and not is_geojson(data):
            return None
    else:
        return None

    def read(_: Any) -> list[LayerData]:
        try:
            dataset, report = annotation_files.load(single)
        except BioAnomalyError as exc:
            warnings.warn(str(exc), stacklevel=2)
            return []
        return dataset_layers(dataset, report, Path(single))

    return read


def get_folder_reader(path: Any) -> ReaderFunction | None:
    """Reader for a folder holding images and a VIA/COCO annotation file."""
    single = _single_path(path)
    if single is None or not Path(single).is_dir():
        return None
    if annotation_files.find_annotation_file(single) is None:
        return None

    def read(_: Any) -> list[LayerData]:
        try:
            dataset, report, ann = annotation_files.open_folder(single)
        except BioAnomalyError as exc:
            warnings.warn(str(exc), stacklevel=2)
            return []
        return dataset_layers(dataset, report, ann)

    return read


def dataset_layers(dataset: Dataset, report: ImportReport, source: Path | None) -> list[LayerData]:
    """Image stack and ground-truth Shapes layers of a dataset; warns a summary of issues."""
    if source is None:
        name = dataset.root.name if dataset.root else "dataset"
    elif source.name in annotation_files.ANNOTATION_NAMES:
        name = source.parent.name  # "annotations.json" says less than its folder's name
    else:
        name = source.stem
    layers: list[LayerData] = []
    img = image_layer(dataset, name=f"{name} images")
    if img is not None:
        layers.append(img)
    data, kwargs, kind = shapes_layer(dataset, name=f"{name} anomalies")
    kwargs["metadata"]["bioanomaly"]["annotation_file"] = str(source) if source else None
    kwargs["metadata"]["bioanomaly"]["format"] = report.format
    layers.append((data, kwargs, kind))
    if report.issues:
        warnings.warn(
            f"{name}: {counted(len(report.issues), 'import issue')} ({report.format}, "
            f"{report.regions_imported}/{report.regions_found} regions imported):\n"
            + "\n".join(report.summary(3)),
            stacklevel=2,
        )
    return layers
