"""CrackForest (road cracks: thin dark structures, like scratches and hairs) as a dataset folder.

    git clone https://github.com/cuilimeng/CrackForest-dataset  SRC
    .venv/bin/python benchmarks/real/prepare_crackforest.py SRC OUT

``SRC/image/NNN.jpg`` (480x320 RGB) with ``SRC/groundTruth/NNN.mat`` (MATLAB:
``groundTruth.Segmentation``, 1 = road, 2 = crack) for the 118 annotated images.
Writes ``OUT/images/NNN.png`` (8-bit grayscale) and ``OUT/train.json`` /
``OUT/test.json``: the fixed split puts every third image (003, 006, ...) in
the test set (39 images), the other 79 in training. One class, ``crack``.
Never downloads anything. Licence: non-commercial research use (see SRC/README.md).
"""

from __future__ import annotations

from _common import add_image, parser, summary, write_projects


def main() -> None:
    p = parser(__doc__, "CrackForest-dataset")
    args = p.parse_args()
    import imageio.v3 as iio
    from scipy.io import loadmat

    gt_dir = args.src / "groundTruth"
    mats = sorted(gt_dir.glob("*.mat"))
    if not mats:
        raise SystemExit(f"{gt_dir}: no .mat ground truth files; is {args.src} a CrackForest copy?")
    records, ious = [], []
    for mat in mats:
        stem = mat.stem
        image = iio.imread(args.src / "image" / f"{stem}.jpg")
        seg = loadmat(mat)["groundTruth"][0, 0]["Segmentation"]
        split = "test" if int(stem) % 3 == 0 else "train"
        add_image(args.out, f"images/{stem}.png", image, {"crack": seg == 2}, split, records, ious)
    write_projects(args.out, records, ["crack"])
    summary("CrackForest", records, ious)


if __name__ == "__main__":
    main()
