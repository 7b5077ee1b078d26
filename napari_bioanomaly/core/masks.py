"""Label-mask export: one uint16 instance-id TIFF per image, plus a class table."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import IO

import numpy as np

from .fileio import atomic_write
from .geometry import polygon_to_mask
from .images import unknown_size_text
from .model import BioAnomalyError, Dataset, ImageRecord
from .paths import export_paths
from .text import counted

#: A label mask is named after its image: ``<stem>_labels.tif``.
MASK_SUFFIX = "_labels.tif"

#: Name of the class table written beside the masks.
CLASS_TABLE = "labels.csv"


def label_mask(image: ImageRecord, root: Path | None = None) -> tuple[np.ndarray, int]:
    """Instance-label image of one image's regions, and the overlapping pixel count.

    Region ``i`` (in image order) gets label ``i + 1``; where regions overlap
    the later one wins. The image shape must be known.
    """
    if image.shape is None:
        raise BioAnomalyError(
            f"image {image.filename!r}: size unknown ({unknown_size_text(root, image.filename)})"
        )
    if len(image.regions) > np.iinfo(np.uint16).max:
        raise BioAnomalyError(
            f"image {image.filename!r}: more than 65535 regions for a uint16 mask"
        )
    labels = np.zeros(image.shape, dtype=np.uint16)
    overlap = 0
    for i, region in enumerate(image.regions, start=1):
        m = polygon_to_mask(region.polygon, image.shape)
        overlap += int(np.count_nonzero(labels[m]))
        labels[m] = i
    return labels, overlap


def write_label_masks(
    dataset: Dataset, out_dir: str | os.PathLike[str]
) -> tuple[list[Path], list[str]]:
    """Write a mask per image and ``labels.csv`` into ``out_dir``.

    The table has one row per instance: ``image, mask, label, class, class_id,
    score, source, area_px``. Class ids follow :meth:`Dataset.class_names`,
    starting at 1 (0 is background). Images of unknown size are skipped with a
    warning; every file is written atomically.

    Returns
    -------
    written, warnings
    """
    import tifffile

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BioAnomalyError(f"{out}: exists and is not a folder")
    class_ids = {name: i + 1 for i, name in enumerate(dataset.class_names())}
    written: list[Path] = []
    rows: list[list[object]] = []
    # images of unknown size get no mask (said below) and take no file name
    sized = [im.filename for im in dataset.images if im.shape is not None]
    paths, warnings = export_paths(out, sized, MASK_SUFFIX)
    for image in dataset.images:
        if image.shape is not None and image.filename not in paths:  # said by export_paths
            continue
        try:
            labels, overlap = label_mask(image, dataset.root)
        except BioAnomalyError as exc:
            warnings.append(f"{exc}; mask not written")
            continue
        path = paths[image.filename]
        name = path.relative_to(out).as_posix()
        if overlap:
            warnings.append(
                f"image {image.filename!r}: {overlap} pixels covered by several regions"
            )

        def write_tiff(fh: IO[bytes], labels: np.ndarray = labels) -> None:
            buf = io.BytesIO()
            tifffile.imwrite(buf, labels, compression="zlib")
            fh.write(buf.getvalue())

        written.append(atomic_write(path, write_tiff))
        areas = np.bincount(labels.ravel(), minlength=len(image.regions) + 1)
        for i, region in enumerate(image.regions, start=1):
            rows.append(
                [
                    image.filename,
                    name,
                    i,
                    region.label,
                    class_ids[region.label],
                    "" if region.score is None else region.score,
                    region.source,
                    int(areas[i]),
                ]
            )
    if dataset.images and not written:  # "0 mask files and labels.csv", and exit code 0
        why = f"{warnings[0]}{' ...' if len(warnings) > 1 else ''}" if warnings else ""
        if sized:
            raise BioAnomalyError(f"{out}: no mask written: {why}")
        raise BioAnomalyError(
            f"{out}: no mask written: the size of none of the "
            f"{counted(len(dataset.images), 'image')} is known ({why}); open the annotations "
            "where their images are (--images FOLDER on the command line)"
        )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "mask", "label", "class", "class_id", "score", "source", "area_px"])
    writer.writerows(rows)
    text = buf.getvalue().encode("utf-8")
    written.append(atomic_write(out / CLASS_TABLE, text))
    return written, warnings
