"""NEU-Seg (hot-rolled steel: inclusions, patches, scratches; grayscale) as a dataset folder.

    git clone https://github.com/Chris2wzk/UNet-NEU-SEG  SRC     (holds NEU-Seg in data_wenjian/)
    .venv/bin/python benchmarks/real/prepare_neuseg.py SRC OUT [--train 600 --test 300]

``SRC/data_wenjian/img_dir/{train,val,test}/*.jpg`` (200x200) with label PNGs
in ``ann_dir`` (0 background, 1 inclusion, 2 patches, 3 scratches). The fixed
split keeps the source's: its train and val images are ours to train on, its
test images are our test set. ``--train``/``--test`` take every k-th image of
each side so that a CPU run stays short (0 = all). Writes ``OUT/images/*.png``
and ``OUT/train.json`` / ``OUT/test.json``. Never downloads anything.
NEU surface defect database (Song and Yan, Northeastern University): free for research.
"""

from __future__ import annotations

from pathlib import Path

from _common import add_image, parser, summary, write_projects

CLASSES = {1: "inclusion", 2: "patches", 3: "scratches"}


def every_kth(items: list[Path], n: int) -> list[Path]:
    if not n or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def main() -> None:
    p = parser(__doc__, "UNet-NEU-SEG")
    p.add_argument(
        "--train", type=int, default=600, help="training images, every k-th (600; 0 = all 4,023)"
    )
    p.add_argument(
        "--test", type=int, default=300, help="test images, every k-th (300; 0 = all 447)"
    )
    args = p.parse_args()
    import imageio.v3 as iio

    base = args.src / "data_wenjian"
    sides = {
        "train": sorted((base / "img_dir" / "train").glob("*.jpg"))
        + sorted((base / "img_dir" / "val").glob("*.jpg")),
        "test": sorted((base / "img_dir" / "test").glob("*.jpg")),
    }
    if not sides["test"]:
        raise SystemExit(f"{base}/img_dir/test: no images; is {args.src} a UNet-NEU-SEG copy?")
    sides = {
        "train": every_kth(sides["train"], args.train),
        "test": every_kth(sides["test"], args.test),
    }
    records, ious = [], []
    for split, paths in sides.items():
        for path in paths:
            labels = iio.imread(base / "ann_dir" / path.parent.name / f"{path.stem}.png")
            if labels.ndim == 3:
                labels = labels[..., 0]
            masks = {label: labels == v for v, label in CLASSES.items() if (labels == v).any()}
            add_image(args.out, f"images/{path.stem}.png", iio.imread(path), masks, split,
                      records, ious)  # fmt: skip
    write_projects(args.out, records, list(CLASSES.values()))
    summary("NEU-Seg", records, ious)


if __name__ == "__main__":
    main()
