"""Out of focus among its peers: the quality check's focus rule on real image folders.

    .venv/bin/python benchmarks/bench_qc.py FOLDER [FOLDER ...] [--blurred 20]

For each folder of images (e.g. the prepared real sets' ``images/``): how many sharp
images each rule flags out of focus (false alarms: the folders hold no blurred image),
and of ``--blurred`` of them blurred by a Gaussian of sigma 1, 2 and 3 px (and stored in
their own pixel type again, as a camera would), how many each rule flags when checked
among the sharp ones. The reference, in the same run: the fixed
limit every image was judged by before (variance of the Laplacian below
``QualityThresholds.focus_min``); the rule: below ``FOCUS_SHARE`` of the folder's median.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_bioanomaly.core.annotations import list_images
from napari_bioanomaly.core.images import read_image, to_grayscale
from napari_bioanomaly.core.quality import (
    OUT_OF_FOCUS,
    QualityReport,
    QualityThresholds,
    among_peers,
    check,
)

SIGMAS = (1.0, 2.0, 3.0)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` blurred, in its own pixel type (integers rounded)."""
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    if np.issubdtype(image.dtype, np.integer):
        out = np.clip(np.round(out), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
    return out.astype(image.dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--blurred", type=int, default=20, help="images blurred per folder")
    args = p.parse_args()
    fixed = QualityThresholds().focus_min
    mixed: list[tuple[str, list[QualityReport], list[QualityReport]]] = []
    for folder in args.folders:
        t0 = time.perf_counter()
        names = list_images(folder)
        images = [to_grayscale(read_image(folder / n)) for n in names]
        reports = [check(x) for x in images]
        judged, rule = among_peers(reports)
        seconds = (time.perf_counter() - t0) / max(len(names), 1)
        ref_sharp = sum(OUT_OF_FOCUS in r.flags for r in reports)
        new_sharp = sum(OUT_OF_FOCUS in r.flags for r in judged if r is not None)
        print(f"{folder}: {len(names)} images, {1000 * seconds:.1f} ms an image; {rule}")
        print(f"  sharp images flagged: reference (focus below {fixed:g}) {ref_sharp}, "
              f"among peers {new_sharp}")  # fmt: skip
        picks = np.linspace(0, len(images) - 1, min(args.blurred, len(images))).astype(int)
        for sigma in SIGMAS:
            blurred = [check(blur(images[i], sigma)) for i in picks]
            ref = sum(OUT_OF_FOCUS in r.flags for r in blurred)
            among, _ = among_peers([*reports, *blurred])
            new = sum(OUT_OF_FOCUS in r.flags for r in among[len(reports) :] if r is not None)
            print(f"  blurred, sigma {sigma:g} px: reference {ref} of {len(picks)}, "
                  f"among peers {new} of {len(picks)}")  # fmt: skip
            if sigma == 2.0:
                mixed.append((folder.parent.name or folder.name, reports, blurred))
    if len(mixed) > 1:
        together(mixed)


def together(mixed: list[tuple[str, list[QualityReport], list[QualityReport]]]) -> None:
    """The folders' images (and their 2 px blurs) checked as one folder: flagged out of
    focus per folder, all as one group and grouped by folder."""
    reports = [r for _, sharp, blurred in mixed for r in [*sharp, *blurred]]
    owners = [name for name, sharp, blurred in mixed for _ in range(len(sharp) + len(blurred))]
    kinds = ["sharp" if i < len(sharp) else "blurred" for _, sharp, blurred in mixed
             for i in range(len(sharp) + len(blurred))]  # fmt: skip
    print(f"all {len(reports)} images together (sharp, and 2 px blurs):")
    for label, groups in (("one group", None), ("grouped by folder", owners)):
        judged, _ = among_peers(reports, groups)
        counts = {}
        for owner, kind, r in zip(owners, kinds, judged, strict=True):
            counts.setdefault((owner, kind), [0, 0])
            counts[(owner, kind)][0] += r is not None and OUT_OF_FOCUS in r.flags
            counts[(owner, kind)][1] += 1
        text = ", ".join(f"{o} {k} {n}/{t}" for (o, k), (n, t) in counts.items())
        print(f"  {label}: out of focus {text}")


if __name__ == "__main__":
    main()
