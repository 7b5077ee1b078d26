"""Solar cells in electroluminescence (cracks and inactive areas among dark process marks;
many defect-free images) as a dataset folder.

    git clone https://github.com/hackingmaterials/pv-vision  SRC
    .venv/bin/python benchmarks/real/prepare_pvcracks.py SRC OUT [--every 2]

The crack segmentation benchmark of Chen et al. (2022, "A Benchmark for Crack Segmentation
in Electroluminescence Images", DuraMAT, doi:10.21948/1871275), as committed in PV-Vision
(``SRC/examples/crack_segmentation/img_label_for_training/{train,val,testset}/``): 1,272
electroluminescence images of single solar cells, ``img/<module>_<cell>.jpg`` (400 x 400,
gray stored as RGB), each with a label image ``ann/<module>_<cell>.png`` (0 background,
1 dark inactive area, 2 crack crossing, 3 crack, 4 busbar). Busbars are the cell's own
structure (three bright-edged horizontal bands in every image) and stay unannotated; 729
images hold none of 1-3 and are flagged defect-free. The dark blotches and streaks of the
cells' material are not annotated either: they are what normal looks like here.

Used here: two classes, ``crack`` (labels 2 and 3: thin dark lines, often branched) and
``inactive`` (label 1: the dark area a crack cuts off), one region per 8-connected
component; every ``--every``-th image in sorted order (default 2: 636 images). The
source's own split puts cells of one module in several sets, so the split here is by
module, as a lab's normal images show other samples than the ones it checks: every third
module in sorted order is test. Writes ``OUT/images/<name>.png`` (8-bit grayscale),
``OUT/train.json`` and ``OUT/test.json``. Never downloads anything. Licence: BSD 3-Clause
(the repository's); cite the authors.
"""

from __future__ import annotations

from pathlib import Path

from _common import add_image, parser, summary, write_projects

#: where the benchmark lies in a PV-Vision copy
DATA = Path("examples/crack_segmentation/img_label_for_training")
#: the classes written and the source labels each is made of
CLASSES = {"crack": (2, 3), "inactive": (1,)}


def module_of(stem: str) -> str:
    """The module an image's cell belongs to: its name without the cell number."""
    return stem.rsplit("_", 1)[0]


def chosen_images(src: Path, every: int) -> list[tuple[Path, Path, str]]:
    """(image, label image, split) of the images used, in sorted order."""
    found = {}
    for part in ("train", "val", "testset"):
        for image in (src / DATA / part / "img").glob("*.jpg"):
            found[image.stem] = (image, image.parent.parent / "ann" / f"{image.stem}.png")
    if not found:
        raise SystemExit(f"{src / DATA}: no img/*.jpg; is {src} a PV-Vision copy?")
    modules = sorted({module_of(stem) for stem in found})
    test = set(modules[::3])
    return [
        (*found[stem], "test" if module_of(stem) in test else "train")
        for stem in sorted(found)[::every]
    ]


def main() -> None:
    p = parser(__doc__, "pv-vision")
    p.add_argument("--every", type=int, default=2, help="every k-th image (default 2)")
    args = p.parse_args()
    import imageio.v3 as iio
    import numpy as np

    records: list = []
    ious: list[float] = []
    for image_path, label_path, split in chosen_images(args.src, max(1, args.every)):
        try:
            labels = iio.imread(label_path)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{label_path}: not a readable label image ({exc})") from None
        labels = labels[..., 0] if labels.ndim == 3 else labels
        image = iio.imread(image_path)
        if labels.shape != image.shape[:2]:
            raise SystemExit(
                f"{label_path}: {labels.shape[1]} x {labels.shape[0]} px, its image "
                f"{image.shape[1]} x {image.shape[0]}"
            )
        masks = {name: np.isin(labels, values) for name, values in CLASSES.items()}
        name = f"images/{image_path.stem}.png"
        add_image(args.out, name, image, masks, split, records, ious)
    write_projects(args.out, records, list(CLASSES))
    summary("PV cracks", records, ious)


if __name__ == "__main__":
    main()
