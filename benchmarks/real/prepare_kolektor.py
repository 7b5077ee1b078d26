"""KolektorSDD (electrical commutators: fine cracks; grayscale; mostly defect-free) as a dataset folder.

    git clone https://github.com/stoy95536/KolektorSDD_Yolov8_Datasets  SRC
    .venv/bin/python benchmarks/real/prepare_kolektor.py SRC OUT [--scale 0.5]

The repository holds all 399 images of KolektorSDD (Tabernik et al., J. Intell.
Manuf. 2020; https://www.vicos.si/resources/kolektorsdd/): 347 defect-free and
52 with a crack, 8-bit grayscale JPEGs about 500x1250 px, in
``SRC/Datasets/images/{train,val}/NNN.jpg``, with the defect outlines in
``SRC/Datasets/labels/{train,val}/NNN.txt`` (YOLO segmentation lines ``0 x1 y1
x2 y2 ...``, coordinates as fractions of the width and height; an empty file is
a defect-free image). The outlines were traced from the original label masks
through the centres of their edge pixels; each becomes one region here, widened
by half a pixel to the pixels' edges and scaled by ``--scale`` (default 0.5:
about 250x620 px, as the KolektorSDD papers use, and what a 2-core CPU trains
on). One outline is one crack: tracing the resized mask's components instead
would break a thin crack into a region and slivers of a few pixels, each a
"defect" a proposal would have to find (46 regions on the test images' 29
outlines; the script prints how well the regions agree with that mask).

The fixed split puts even-numbered images in the test set (26 defective, about
170 defect-free), odd ones in training. Defect-free images are flagged normal:
the unsupervised models learn from them only. One class, ``crack``.
Writes ``OUT/images/NNN.png``, ``OUT/train.json`` and ``OUT/test.json``.
Never downloads anything. Licence: CC BY-NC-SA 4.0 (the dataset's authors ask
to be cited).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import parser, round_trip_iou, summary, write_gray_png, write_projects

from napari_bioanomaly.core.model import ImageRecord, Region


def outlines(label_file: Path) -> list[np.ndarray]:
    """The defect outlines of an image: ``(x, y)`` vertices as fractions of its width and height."""
    out = []
    for n, line in enumerate(label_file.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        xy = np.asarray(values[1:], dtype=float).reshape(-1, 2)
        if len(xy) < 3:
            raise SystemExit(f"{label_file}, line {n}: an outline needs 3 points, not {len(xy)}")
        out.append(xy)
    return out


def outline_region(
    xy: np.ndarray, full: tuple[int, int], shape: tuple[int, int]
) -> list[np.ndarray]:
    """A traced outline as the ``(row, col)`` polygon of its pixels in an image of ``shape``.

    The vertices are the centres of the edge pixels of a ``full``-sized mask;
    widened by half a pixel they enclose those pixels whole (a crack one pixel
    wide keeps its width), then they are scaled to ``shape``. An outline that
    crosses itself comes out as its valid parts.
    """
    import shapely

    ring = np.column_stack([xy[:, 1] * full[0], xy[:, 0] * full[1]]) + 0.5
    shape_ = shapely.make_valid(shapely.polygons(ring)).buffer(0.5, join_style="mitre")
    scale = np.array([shape[0] / full[0], shape[1] / full[1]])
    parts = getattr(shape_, "geoms", [shape_])
    return [np.asarray(g.exterior.coords)[:-1] * scale for g in parts if g.area > 0]


def outline_record(
    filename: str, full: tuple[int, int], shape: tuple[int, int], xys: list[np.ndarray], split: str
) -> tuple[ImageRecord, float]:
    """The image's VIA record (one region per outline) and the regions' pixel IoU with the
    mask the outlines rasterise to at full size, resized to ``shape``."""
    from skimage.draw import polygon
    from skimage.transform import resize

    regions = [
        Region(poly, "crack", shape="polygon", class_attribute="class")
        for xy in xys
        for poly in outline_region(xy, full, shape)
    ]
    mask = np.zeros(full, dtype=bool)
    for xy in xys:
        mask[polygon(xy[:, 1] * full[0], xy[:, 0] * full[1], full)] = True
    if shape != full:
        mask = resize(mask.astype(np.float32), shape, order=1) >= 0.5
    attrs = {"split": split, "defect": "yes" if regions else "no"}
    rec = ImageRecord(filename, shape, attrs, no_anomaly=not regions, regions=regions)
    return rec, round_trip_iou(mask, [r.polygon for r in regions])


def main() -> None:
    p = parser(__doc__, "KolektorSDD_Yolov8_Datasets")
    p.add_argument("--scale", type=float, default=0.5, help="resize factor (default 0.5)")
    args = p.parse_args()
    import imageio.v3 as iio
    from skimage.transform import resize

    root = args.src / "Datasets"
    jpgs = sorted((root / "images").glob("*/*.jpg"))
    if not jpgs:
        raise SystemExit(f"{root}/images: no JPEG images; is {args.src} a KolektorSDD copy?")
    records, ious = [], []
    for jpg in jpgs:
        label_file = root / "labels" / jpg.parent.name / f"{jpg.stem}.txt"
        if not label_file.is_file():
            raise SystemExit(f"{jpg}: no label file {label_file}")
        image = iio.imread(jpg)
        full = image.shape[:2]
        shape = tuple(max(1, round(s * args.scale)) for s in full)
        if shape != full:
            image = resize(image, shape, order=1, preserve_range=True, anti_aliasing=True)
        split = "test" if int(jpg.stem) % 2 == 0 else "train"
        rec, iou = outline_record(
            f"images/{jpg.stem}.png", full, shape, outlines(label_file), split
        )
        write_gray_png(args.out / rec.filename, image)
        records.append(rec)
        ious.append(iou)
    write_projects(args.out, records, ["crack"])
    summary("KolektorSDD", records, ious, "regions against the resized masks")


if __name__ == "__main__":
    main()
