"""BSData (ball screw drives: pitting on a machined metal surface; many defect-free images) as a dataset folder.

    git clone https://github.com/2Obe/BSData  SRC
    .venv/bin/python benchmarks/real/prepare_bsdata.py SRC OUT [--scale 0.5] [--every 2]

BSData (Schlagenhauf and Landwehr, Data in Brief 2021, doi:10.1016/j.dib.2021.107643;
dataset doi:10.5445/IR/1000129520) holds 1,104 RGB JPEGs of ball screw drive spindles in
``SRC/data/``, 394 of them with the outlines of their pittings in ``SRC/label/`` (LabelMe
polygons, ``(x, y)`` in pixels, class ``Pitting``) and ``SRC/image_data.json`` naming each
image's annotation file (or none) and its drive type. The drive of type 2 was photographed
at 15 positions along the spindle (``01_<time>_<position>_<angle>_crop_<k>.jpg``) 69 times
while it wore: each position's images without an annotation come before its first
pitting (checked here: at most a few gaps), so they are taken as defect-free. Used here:

- the type 2 images of crop 2 (1130 x 460 px; 688 defect-free, 167 with pitting). Type 1
  has no defect-free image, and crop 1 is another framing (1540 x 645 px) with almost
  only pitted images, so an image's size would tell a defect apart;
- every ``--every``-th image of each position in time order (default 2: ~430 images);
- grayscale (luminance), resized by ``--scale`` (default 0.5: 565 x 230 px; the median
  pitting then covers ~420 px, the smallest tenth under ~25 px).

The fixed split keeps each position in one set, as a lab's normal images show other
fields than the ones it checks: every third position in sorted order (5 of 15) is test,
the others train. Defect-free images are flagged normal: the unsupervised models learn
from them only. One class, ``pitting``; each outline is one region. Writes
``OUT/images/<name>.png``, ``OUT/train.json`` and ``OUT/test.json``. Never downloads
anything. Licence: CC BY-SA 4.0 (the repository's; cite the authors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from _common import parser, round_trip_iou, summary, write_gray_png, write_projects

from napari_bioanomaly.core.model import ImageRecord, Region

#: ``01_<time>_<position>_<angle>_crop_<k>.jpg``: a type 2 image's name
NAME = re.compile(r"^01_(\d+)_(\d+)_(\d+)_crop_(\d+)\.jpg$")


def pitting_outlines(label_file: Path) -> list[np.ndarray]:
    """The ``(x, y)`` polygons of an annotation file's pittings (LabelMe JSON)."""
    try:
        shapes = json.loads(label_file.read_text()).get("shapes")
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"{label_file}: not a readable LabelMe file ({exc})") from None
    if not isinstance(shapes, list):
        raise SystemExit(f"{label_file}: no 'shapes' list; is it a LabelMe file?")
    out = []
    for n, shape in enumerate(shapes):
        xy = np.asarray(shape.get("points", []), dtype=float)
        if shape.get("shape_type", "polygon") != "polygon" or xy.ndim != 2 or len(xy) < 3:
            raise SystemExit(f"{label_file}: shapes[{n}] is not a polygon of 3 points or more")
        out.append(xy)
    return out


def pitting_record(
    filename: str, full: tuple[int, int], shape: tuple[int, int], xys: list[np.ndarray],
    split: str, position: str,
) -> tuple[ImageRecord, float]:  # fmt: skip
    """The image's VIA record (one region per outline, scaled to ``shape``) and the regions'
    pixel IoU with the outlines' mask at full size resized to ``shape``."""
    import shapely
    from skimage.draw import polygon
    from skimage.transform import resize

    scale = np.array([shape[0] / full[0], shape[1] / full[1]])
    regions, mask = [], np.zeros(full, dtype=bool)
    for xy in xys:
        rc = xy[:, ::-1]  # LabelMe's (x, y) on the pixels' edges -> (row, col)
        mask[polygon(rc[:, 0] - 0.5, rc[:, 1] - 0.5, full)] = True  # pixel centres inside
        valid = shapely.make_valid(shapely.polygons(rc))
        for part in getattr(valid, "geoms", [valid]):
            if part.geom_type == "Polygon" and part.area > 0:
                poly = np.asarray(part.exterior.coords)[:-1] * scale
                regions.append(Region(poly, "pitting", shape="polygon", class_attribute="class"))
    if shape != full:
        mask = resize(mask.astype(np.float32), shape, order=1) >= 0.5
    attrs = {"split": split, "defect": "yes" if regions else "no", "position": position}
    rec = ImageRecord(filename, shape, attrs, no_anomaly=not regions, regions=regions)
    return rec, round_trip_iou(mask, [r.polygon for r in regions])


def chosen_images(src: Path, every: int) -> list[tuple[str, str | None, str, str]]:
    """(image file, annotation file or None, position, split) of the images used."""
    table = json.loads((src / "image_data.json").read_text())
    items = next(iter(table.values())) if isinstance(table, dict) else table
    by_position: dict[str, list[tuple[str, str, str | None]]] = {}
    for item in items:
        match = NAME.match(item.get("filename", ""))
        if item.get("type") != 2 or match is None or match.group(4) != "2":
            continue
        position = f"{match.group(2)}_{match.group(3)}"
        entry = (match.group(1), item["filename"], item.get("annotations"))
        by_position.setdefault(position, []).append(entry)
    if not by_position:
        raise SystemExit(f"{src}/image_data.json: no type 2 images; is {src} a BSData copy?")
    chosen = []
    for k, position in enumerate(sorted(by_position)):
        split = "test" if k % 3 == 0 else "train"
        for _, filename, label in sorted(by_position[position])[::every]:
            chosen.append((filename, label, position, split))
    return chosen


def main() -> None:
    p = parser(__doc__, "BSData")
    p.add_argument("--scale", type=float, default=0.5, help="resize factor (default 0.5)")
    p.add_argument(
        "--every", type=int, default=2, help="every k-th image of each position (default 2)"
    )
    args = p.parse_args()
    import imageio.v3 as iio
    from skimage.transform import resize

    records, ious = [], []
    for filename, label, position, split in chosen_images(args.src, max(1, args.every)):
        image = iio.imread(args.src / "data" / filename)
        full = image.shape[:2]
        shape = tuple(max(1, round(s * args.scale)) for s in full)
        if shape != full:
            image = resize(image, shape, order=1, preserve_range=True, anti_aliasing=True)
        xys = pitting_outlines(args.src / "label" / label) if label else []
        name = f"images/{Path(filename).stem}.png"
        rec, iou = pitting_record(name, full, shape, xys, split, position)
        write_gray_png(args.out / name, image)
        records.append(rec)
        if xys:
            ious.append(iou)
    write_projects(args.out, records, ["pitting"])
    summary("BSData", records, ious, "regions against the resized outlines' masks")


if __name__ == "__main__":
    main()
