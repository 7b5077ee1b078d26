"""Shared by the real-data scripts: masks to VIA projects, and a fixed split.

A prepared dataset is a folder ``OUT`` with the images as 8-bit grayscale PNGs
in ``OUT/images/`` and two VIA 2 projects beside them: ``train.json`` and
``test.json``. Every image has the file attributes ``split`` (train/test) and
``defect`` (yes/no); images without a defect are marked "checked: no anomaly".
Ground truth polygons trace the pixel edges of each connected component of the
source mask, so rasterising them gives the mask back (the scripts print how
exactly; holes are opened by a one-pixel cut, as VIA polygons have none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from napari_bioanomaly.core import geometry  # noqa: E402
from napari_bioanomaly.core.annotations import save  # noqa: E402
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region  # noqa: E402

EIGHT = np.ones((3, 3), dtype=bool)


def parser(doc: str | None, source: str) -> argparse.ArgumentParser:
    """A preparation script's command line: ``SRC`` (a local copy of the ``source``
    repository) and ``OUT`` (the dataset folder to write); the script adds its options."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("src", type=Path, help=f"a local copy of the {source} repository")
    p.add_argument("out", type=Path, help="dataset folder to write")
    return p


def open_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole opened by a one-pixel cut upwards from the hole's top.

    VIA polygons have no holes: a crack network that closes a loop would
    otherwise be filled, turning the road it encloses into "crack".
    """
    mask = mask.copy()
    while True:
        holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
        if not n:
            return mask
        for sl in ndimage.find_objects(holes):
            r, c = sl[0].start, sl[1].start + int(np.argmax(holes[sl][0] > 0))
            r -= 1
            while r >= 0 and mask[r, c]:
                mask[r, c] = False
                r -= 1


def mask_polygons(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """Polygons ``(row, col)`` along the pixel edges of each 8-connected component.

    How it works: the component is upsampled 2x (nearest) and its outline found
    by marching squares at level 0.5; in the upsampled grid that outline runs
    along the original pixel edges (corners are cut by a quarter of a sub-pixel,
    far from any pixel centre), so :func:`~napari_bioanomaly.core.geometry.polygon_to_mask`
    gives the component back. Diagonal one-pixel links can pinch a ring; such
    rings are split by :func:`~napari_bioanomaly.core.geometry.clean_polygon`.
    """
    from skimage.measure import find_contours

    labels, _ = ndimage.label(open_holes(mask), structure=EIGHT)
    out = []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == index
        if comp.sum() < min_area:
            continue
        up = np.pad(np.kron(comp, np.ones((2, 2), dtype=bool)), 1).astype(np.float32)
        contour = max(find_contours(up, 0.5, fully_connected="high"), key=len)
        ring = (contour - 0.5) / 2 + (sl[0].start, sl[1].start)
        out.extend(geometry.clean_polygon(ring, mask.shape))
    return out


def round_trip_iou(mask: np.ndarray, polygons: list[np.ndarray]) -> float:
    """Pixel IoU of a mask and the rasterised polygons (1.0: exact)."""
    back = np.zeros(mask.shape, dtype=bool)
    for poly in polygons:
        back |= geometry.polygon_to_mask(poly, mask.shape)
    union = (back | mask).sum()
    return float((back & mask).sum() / union) if union else 1.0


def record(
    filename: str,
    shape: tuple[int, int],
    class_masks: dict[str, np.ndarray],
    split: str,
    extra: dict[str, str] | None = None,
) -> tuple[ImageRecord, float]:
    """The image's VIA record (one region per component and class) and its round-trip IoU."""
    regions = []
    all_mask = np.zeros(shape, dtype=bool)
    back_polys = []
    for label, mask in class_masks.items():
        polys = mask_polygons(mask)
        all_mask |= mask
        back_polys.extend(polys)
        regions.extend(Region(p, label, shape="polygon", class_attribute="class") for p in polys)
    attrs = {"split": split, "defect": "yes" if regions else "no", **(extra or {})}
    rec = ImageRecord(filename, shape, attrs, no_anomaly=not regions, regions=regions)
    return rec, round_trip_iou(all_mask, back_polys)


def add_image(
    out: Path,
    name: str,
    image: np.ndarray,
    class_masks: dict[str, np.ndarray],
    split: str,
    records: list[ImageRecord],
    ious: list[float],
) -> None:
    """Write ``image`` as ``out/name`` (8-bit grayscale) and append its record and IoU."""
    write_gray_png(out / name, image)
    rec, iou = record(name, image.shape[:2], class_masks, split)
    records.append(rec)
    ious.append(iou)


def write_projects(out: Path, records: list[ImageRecord], classes: list[str]) -> None:
    """``train.json`` and ``test.json`` (VIA 2 projects) of the records, by their split."""
    for split in ("train", "test"):
        images = [r for r in records if r.file_attributes["split"] == split]
        for r in images:
            r.size = (out / r.filename).stat().st_size
        ds = Dataset(images=images, root=out, classes=list(classes), class_attribute="class")
        save(ds, out / f"{split}.json", "via-project")


def write_gray_png(path: Path, image: np.ndarray) -> None:
    """An 8-bit grayscale PNG (RGB becomes luminance)."""
    import imageio.v3 as iio

    from napari_bioanomaly.core.images import to_grayscale

    gray = to_grayscale(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.clip(np.round(gray), 0, 255).astype(np.uint8))


def summary(
    name: str,
    records: list[ImageRecord],
    ious: list[float],
    against: str = "polygons rasterise back to the masks",
) -> None:
    """Print what was written: images per split, defect images, regions, round trip."""
    for split in ("train", "test"):
        sub = [r for r in records if r.file_attributes["split"] == split]
        n_def = sum(1 for r in sub if r.regions)
        n_reg = sum(len(r.regions) for r in sub)
        print(f"{name} {split}: {len(sub)} images, {n_def} with defects, {n_reg} regions")
    print(
        f"{name}: {against}: mean pixel IoU {np.mean(ious):.4f} (min {np.min(ious):.4f}; "
        "holes opened)"
    )
