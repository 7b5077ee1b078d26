"""KolektorSDD (electrical commutators: fine cracks; grayscale; mostly defect-free) as a dataset folder.

    git clone https://github.com/stoy95536/KolektorSDD_Yolov8_Datasets  SRC
    .venv/bin/python benchmarks/real/prepare_kolektor.py SRC OUT [--scale 0.5]

The repository holds all 399 images of KolektorSDD (Tabernik et al., J. Intell.
Manuf. 2020; https://www.vicos.si/resources/kolektorsdd/): 347 defect-free and
52 with a crack, 8-bit grayscale JPEGs about 500x1250 px, in
``SRC/Datasets/images/{train,val}/NNN.jpg``, with the defect outlines in
``SRC/Datasets/labels/{train,val}/NNN.txt`` (YOLO segmentation lines ``0 x1 y1
x2 y2 ...``, coordinates as fractions of the width and height; an empty file is
a defect-free image). The outlines were traced from the original label masks,
so they are rasterised back to masks here, at ``--scale`` (default 0.5: about
250x620 px, as the KolektorSDD papers use, and what a 2-core CPU trains on).

The fixed split puts even-numbered images in the test set (26 defective, about
170 defect-free), odd ones in training. Defect-free images are flagged normal:
the unsupervised models learn from them only. One class, ``crack``.
Writes ``OUT/images/NNN.png``, ``OUT/train.json`` and ``OUT/test.json``.
Never downloads anything. Licence: CC BY-NC-SA 4.0 (the dataset's authors ask
to be cited).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import add_image, summary, write_projects


def outline_mask(label_file: Path, shape: tuple[int, int]) -> np.ndarray:
    """The defect mask of an image from its YOLO segmentation lines."""
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    for n, line in enumerate(label_file.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        xy = np.asarray(values[1:], dtype=float).reshape(-1, 2)
        if len(xy) < 3:
            raise SystemExit(f"{label_file}, line {n}: an outline needs 3 points, not {len(xy)}")
        rr, cc = polygon(xy[:, 1] * shape[0], xy[:, 0] * shape[1], shape)
        mask[rr, cc] = True
    return mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a local copy of the KolektorSDD_Yolov8_Datasets repository")
    p.add_argument("out", type=Path, help="dataset folder to write")
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
        mask = outline_mask(label_file, image.shape[:2])
        if args.scale != 1:
            shape = tuple(max(1, round(s * args.scale)) for s in image.shape[:2])
            image = resize(image, shape, order=1, preserve_range=True, anti_aliasing=True)
            mask = resize(mask.astype(np.float32), shape, order=1) >= 0.5
        split = "test" if int(jpg.stem) % 2 == 0 else "train"
        add_image(args.out, f"images/{jpg.stem}.png", image, {"crack": mask}, split, records, ious)
    write_projects(args.out, records, ["crack"])
    summary("KolektorSDD", records, ious)


if __name__ == "__main__":
    main()
