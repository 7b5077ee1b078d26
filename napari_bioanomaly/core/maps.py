"""Anomaly and probability maps: where a prediction's maps are kept, and their outlines
as regions.

No torch here: the Review widget proposes regions from stored maps, and prediction
turns its probabilities into regions, with the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from .model import BioAnomalyError, Region
from .operating import vote

T = TypeVar("T")


def heatmap_name(filename: str) -> str:
    """A map's file name: a TIFF image's own, another image's with ``.tif`` added
    (``x.png.tif``: never the map of ``x.tif`` beside it)."""
    if Path(filename).suffix.lower() in (".tif", ".tiff"):
        return filename
    return filename + ".tif"


def heatmap_path(folder: str | Path, filename: str) -> Path:
    """Where the heatmap of an image goes: :func:`heatmap_name` inside ``folder``."""
    folder = Path(folder).resolve()
    target = (folder / heatmap_name(filename)).resolve()
    if not target.is_relative_to(folder):
        raise BioAnomalyError(f"{filename}: heatmap would be written outside {folder}")
    return target


def check_heatmap_folder(folder: str | Path, root: str | Path, filenames: Sequence[str]) -> None:
    """Refuse a folder for anomaly maps where maps would lie among the images: a TIFF's map
    keeps the image's name (:func:`heatmap_name`), so maps written into the image folder
    went over the images (their only copy a ``.bak``, replaced by the next run); a PNG's
    (``x.png.tif``) would be taken for an image by the next ``qc``, ``predict`` or
    Annotate of the folder."""
    images = {(Path(root) / name).resolve() for name in filenames}
    folders = {path.parent for path in images}
    targets = {name: heatmap_path(folder, name) for name in filenames}
    for name, target in targets.items():
        if target in images:
            raise BioAnomalyError(
                f"{target}: the anomaly map of {name} would be written over the image "
                f"itself; choose a folder for the maps apart from the images ({folder} "
                "holds them)"
            )
    for name, target in targets.items():
        if target.parent in folders:
            raise BioAnomalyError(
                f"{folder}: the anomaly maps would lie among the images ({target.name} beside "
                f"{name}), and be taken for images by the next qc, predict or Annotate of "
                "the folder; choose a folder for the maps apart from the images"
            )


def with_maps(done: Mapping[str, T], folder: str | Path | None) -> tuple[dict[str, T], list[str]]:
    """The images of a stopped run (``done``, by file name) that can be taken as they
    were when the run writes anomaly maps into ``folder``: those whose map is still
    there; and, in order, the names of the others (predicted again, so that the review
    has a map for every image). Without a ``folder`` every image is kept."""
    if folder is None:
        return dict(done), []
    kept: dict[str, T] = {}
    missing: list[str] = []
    for name, record in done.items():
        try:
            there = heatmap_path(folder, name).is_file()
        except BioAnomalyError:
            there = False
        if there:
            kept[name] = record
        else:
            missing.append(name)
    return kept, missing


def missing_maps_text(missing: Sequence[str], folder: str | Path | None) -> str:
    """Says that the ``missing`` images of a stopped run (:func:`with_maps`) are predicted
    again."""
    if len(missing) == 1:
        return (f"1 image predicted before the stop, {missing[0]}, has no anomaly map in "
                f"{folder} any more: it is predicted again")  # fmt: skip
    return (
        f"{len(missing)} images predicted before the stop have no anomaly map in {folder} "
        "any more: they are predicted again"
    )


def read_heatmap(folder: str | Path, filename: str) -> np.ndarray | None:
    """The stored anomaly map of an image (float32), or None when there is none.

    Raises
    ------
    BioAnomalyError
        Naming the file, when it is there but cannot be read.
    """
    try:
        path = heatmap_path(folder, filename)
    except BioAnomalyError:
        return None
    if not path.is_file():
        return None
    import tifffile

    try:
        return np.asarray(tifffile.imread(path), dtype=np.float32)
    except Exception as exc:  # a corrupt file: say which
        raise BioAnomalyError(f"{path}: cannot read the anomaly map ({exc})") from None


def regions_from_probabilities(
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float = 0.5,
    min_area: float = 16.0,
    tolerance: float = 0.5,
    class_min_area: Mapping[str, float] | None = None,
    min_peak: float | None = None,
    vote_weights: Mapping[str, float] | None = None,
) -> list[Region]:
    """Regions of the connected anomalies of a probability map.

    A region's class is the one its pixels' probabilities vote for (each class's votes
    counted ``vote_weights[name]`` times, 1 when not named); regions
    smaller than their class's ``class_min_area`` (``min_area`` for the others)
    are dropped, and with a ``min_peak`` those whose map nowhere exceeds it
    (hysteresis: see :class:`~.operating.OperatingPoint`).
    """
    import shapely
    from scipy import ndimage
    from shapely.geometry import Polygon
    from skimage.measure import find_contours

    fg = 1.0 - probs[0]
    labels, _ = ndimage.label(fg > threshold)
    class_min_area = dict(class_min_area or {})
    floor = min([min_area, *class_min_area.values()])
    rings, outlines, labels_scores = [], [], []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == index
        if comp.sum() < floor or (min_peak is not None and fg[sl][comp].max() <= min_peak):
            continue
        class_scores = probs[1:, sl[0], sl[1]][:, comp].sum(axis=1)
        label = classes[int(vote(class_scores, classes, vote_weights or {}))]
        least = class_min_area.get(label, min_area)
        if comp.sum() < least:
            continue
        filled = ndimage.binary_fill_holes(comp)
        contour = max(find_contours(np.pad(filled, 1).astype(np.float32), 0.5), key=len)
        # contour points are pixel centres of the padded crop: back to model coordinates
        contour = contour - 1 + (sl[0].start, sl[1].start) + 0.5
        poly = shapely.simplify(Polygon(contour), tolerance)
        # the minimum area is a count of pixels, as the operating point's sweep counts
        # them (a 4x4 blob's simplified outline is 12.5 px: it was dropped at 16 px, which
        # the sweep had kept); a blob simplified to nothing keeps its outline
        simple = isinstance(poly, Polygon) and not poly.is_empty and len(poly.exterior.coords) > 3
        ring = np.asarray(poly.exterior.coords)[:-1] if simple else contour[:-1]
        if len(ring) < 3:
            continue
        score = float(fg[sl][comp].mean())
        rings.append(ring)
        outlines.append(contour[:-1])  # find_contours closes the ring: the last is the first
        labels_scores.append((label, round(score, 4)))
    return [
        Region(ring, label, score=score, source="model", shape="polygon")
        for ring, (label, score) in zip(
            _covering(rings, outlines, fg.shape), labels_scores, strict=True
        )
        if ring is not None
    ]


def _covering(
    rings: list[np.ndarray], outlines: list[np.ndarray], shape: tuple[int, ...]
) -> list[np.ndarray | None]:
    """Each ring, or where it covers no pixel by the rasterisation the scores use
    (:func:`~.geometry.rasterise_spans`: pixel centres inside), its outline; None where
    neither does.

    Simplifying a speck's outline can leave a polygon that covers none of its pixel
    centres (a one-pixel region's diamond becomes a triangle of 0.25 px with the centre
    on its edge), which ``evaluate`` and the Review widget leave out as covering no
    pixel. Its unsimplified outline (the component's contour, through the midpoints
    between its pixels and the background) holds its pixel centres.
    """
    from .geometry import rasterise_spans

    def covers(polygons: list[np.ndarray]) -> np.ndarray:
        drawn = np.zeros(len(polygons), dtype=bool)
        drawn[rasterise_spans(polygons, shape[:2])[0]] = True
        return drawn

    out: list[np.ndarray | None] = list(rings)
    empty = np.flatnonzero(~covers(rings)).tolist()
    if empty:
        kept = covers([outlines[k] for k in empty])
        for k, ok in zip(empty, kept.tolist(), strict=True):
            out[k] = outlines[k] if ok else None
    return out
