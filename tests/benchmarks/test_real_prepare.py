"""The real-data preparation scripts (``benchmarks/real/``) keep the datasets' own defects:
KolektorSDD's traced outlines become one region each, however thin the crack at half size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.geometry import polygon_to_mask

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real" / "prepare_kolektor.py"


def _crack_outline(shape, r0, c0, r1, c1, half_width=1.0):
    """YOLO outline (fractions of width and height) of a thin straight crack: a quadrilateral
    through the centres of its edge pixels, as KolektorSDD's outlines were traced."""
    p0, p1 = np.array([r0, c0], float), np.array([r1, c1], float)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / np.hypot(*d) * half_width
    corners = np.array([p0 + n, p1 + n, p1 - n, p0 - n])
    xy = np.column_stack([corners[:, 1] / shape[1], corners[:, 0] / shape[0]])
    return "0 " + " ".join(f"{v:.6f}" for v in xy.ravel())


def test_kolektor_outlines_become_one_region_each_at_half_size(tmp_path):
    import imageio.v3 as iio

    pytest.importorskip("PIL")
    src = tmp_path / "src" / "Datasets"
    shape = (120, 300)
    for split, stem, outline in [("train", "001", ""), ("val", "002", None), ("val", "004", "")]:
        (src / "images" / split).mkdir(parents=True, exist_ok=True)
        (src / "labels" / split).mkdir(parents=True, exist_ok=True)
        image = np.full(shape, 128, np.uint8)
        if outline is None:  # a crack 2-3 px wide and 250 px long: about 1 px at half size
            outline = _crack_outline(shape, 20, 20, 100, 280)
            from skimage.draw import line

            image[line(20, 20, 100, 280)] = 40
        iio.imwrite(src / "images" / split / f"{stem}.jpg", image)
        (src / "labels" / split / f"{stem}.txt").write_text(outline)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "src"), str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "regions against the resized masks" in run.stdout

    test = {im.filename: im for im in annotations.load(out / "test.json")[0].images}
    train = annotations.load(out / "train.json")[0].images
    assert [im.filename for im in train] == ["images/001.png"] and train[0].no_anomaly
    cracked, plain = test["images/002.png"], test["images/004.png"]
    assert plain.no_anomaly and not plain.regions
    assert cracked.shape[:2] == (60, 150)
    assert len(cracked.regions) == 1, "one outline, one region"
    mask = polygon_to_mask(cracked.regions[0].polygon, cracked.shape)
    rows, cols = np.nonzero(mask)
    # the whole crack, end to end, at half size: (10, 10) to (50, 140), one or two pixels wide
    assert cols.min() <= 11 and cols.max() >= 139 and rows.min() <= 11 and rows.max() >= 49
    assert 130 <= mask.sum() <= 2.5 * 150
