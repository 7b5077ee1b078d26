"""The real-data preparation scripts (``benchmarks/real/``) keep the datasets' own defects:
KolektorSDD's traced outlines become one region each, however thin the crack at half size."""

from __future__ import annotations

import json
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


BSDATA = SCRIPT.with_name("prepare_bsdata.py")


def test_bsdata_keeps_one_framing_and_each_position_in_one_split(tmp_path):
    """Only type 2 drives' crop 2 images are used (crop 1 frames the spindle otherwise and
    is almost always pitted; type 1 has no defect-free image); every third position in
    sorted order is test; a LabelMe pitting becomes one region, scaled with its image."""
    import imageio.v3 as iio

    pytest.importorskip("PIL")
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "label").mkdir()
    items = []
    positions = ["100000_000", "200000_090", "300000_180", "400000_270"]
    for p, position in enumerate(positions):
        for t in range(4):
            pitted = t >= 2  # the later half of each position's images
            for crop, shape in (("2", (40, 100)), ("1", (50, 120))):
                name = f"01_20090{t}0000{p}_{position}_crop_{crop}.jpg"
                image = np.full((*shape, 3), 150, np.uint8)
                label = None
                if pitted:
                    image[10:20, 30:40] = 60
                    label = name.replace(".jpg", ".json")
                    pit = [[30, 10], [40, 10], [40, 20], [30, 20]]  # (x, y) on pixel edges
                    shapes = [{"label": "Pitting", "points": pit, "shape_type": "polygon"}]
                    (src / "label" / label).write_text(json.dumps({"shapes": shapes}))
                iio.imwrite(src / "data" / name, image)
                items.append({"filename": name, "type": 2, "annotations": label})
    iio.imwrite(src / "data" / "KGT1_crop_0.jpg", np.full((30, 30, 3), 150, np.uint8))
    items.append({"filename": "KGT1_crop_0.jpg", "type": 1, "annotations": None})
    (src / "image_data.json").write_text(json.dumps({"data": items}))
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(BSDATA), str(src), str(out), "--every", "1"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    train = annotations.load(out / "train.json")[0].images
    test = annotations.load(out / "test.json")[0].images
    assert {im.file_attributes["position"] for im in test} == {positions[0], positions[3]}
    assert {im.file_attributes["position"] for im in train} == {positions[1], positions[2]}
    assert len(train) == len(test) == 8  # 4 times x 2 positions, crop 2 only
    assert all(im.shape[:2] == (20, 50) for im in train + test)  # half of 40 x 100
    pitted = [im for im in train + test if im.regions]
    assert len(pitted) == 8 and all(not im.no_anomaly for im in pitted)
    assert all(im.no_anomaly for im in train + test if not im.regions)
    mask = polygon_to_mask(pitted[0].regions[0].polygon, pitted[0].shape)
    assert mask.sum() == 25 and mask[5:10, 15:20].all()  # the 10 x 10 px pit at half size


def test_bsdata_names_a_missing_annotation_file(tmp_path):
    import imageio.v3 as iio

    pytest.importorskip("PIL")
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    name = "01_200901010000_100000_000_crop_2.jpg"
    iio.imwrite(src / "data" / name, np.full((40, 100, 3), 150, np.uint8))
    items = [{"filename": name, "type": 2, "annotations": "gone.json"}]
    (src / "image_data.json").write_text(json.dumps({"data": items}))
    run = subprocess.run(
        [sys.executable, str(BSDATA), str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "gone.json: not a readable LabelMe file" in run.stderr
    assert "Traceback" not in run.stderr


PVCRACKS = SCRIPT.with_name("prepare_pvcracks.py")


def test_pvcracks_splits_by_module_and_keeps_busbars_unannotated(tmp_path):
    """Cracks (labels 2, 3) and inactive areas (1) become regions, busbars (4) do not; a
    module's cells stay in one split whatever the source's split (every third module in
    sorted order is test), and cells without a defect are flagged normal."""
    import imageio.v3 as iio

    pytest.importorskip("PIL")
    data = tmp_path / "src" / "examples" / "crack_segmentation" / "img_label_for_training"
    cells = {  # (source split, module_cell): what the label image holds
        ("train", "EL1_1"): "crack", ("val", "EL1_2"): "none",  # module EL1: test
        ("train", "EL2_1"): "inactive", ("testset", "EL2_7"): "none",  # EL2: train
        ("testset", "EL3_4"): "none",  # EL3: train
        ("train", "FSEC_4AB_9"): "crack",  # FSEC_4AB: test
    }  # fmt: skip
    for (part, stem), what in cells.items():
        labels = np.zeros((40, 40, 3), np.uint8)
        labels[5:8, :] = 4  # a busbar: the cell's own structure
        if what == "crack":
            labels[20, 5:30] = 3
            labels[20, 30:33] = 2  # where the crack crosses another
        elif what == "inactive":
            labels[25:40, 0:10] = 1
        image = np.where(labels[..., :1] > 0, 40, 160).repeat(3, axis=2).astype(np.uint8)
        for sub, name, array in (("img", f"{stem}.jpg", image), ("ann", f"{stem}.png", labels)):
            (data / part / sub).mkdir(parents=True, exist_ok=True)
            iio.imwrite(data / part / sub / name, array)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(PVCRACKS), str(tmp_path / "src"), str(out), "--every", "1"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    test = {im.filename: im for im in annotations.load(out / "test.json")[0].images}
    train = {im.filename: im for im in annotations.load(out / "train.json")[0].images}
    assert set(test) == {"images/EL1_1.png", "images/EL1_2.png", "images/FSEC_4AB_9.png"}
    assert set(train) == {"images/EL2_1.png", "images/EL2_7.png", "images/EL3_4.png"}
    crack = test["images/EL1_1.png"]
    assert [r.label for r in crack.regions] == ["crack"], "one crack, its crossing included"
    mask = polygon_to_mask(crack.regions[0].polygon, crack.shape)
    assert mask.sum() == 28 and mask[20, 5:33].all()
    assert [r.label for r in train["images/EL2_1.png"].regions] == ["inactive"]
    normal = [im for im in [*test.values(), *train.values()] if not im.regions]
    assert len(normal) == 3 and all(im.no_anomaly for im in normal)


def test_pvcracks_names_a_missing_copy(tmp_path):
    run = subprocess.run(
        [sys.executable, str(PVCRACKS), str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "no img/*.jpg; is" in run.stderr and "a PV-Vision copy?" in run.stderr
    assert "Traceback" not in run.stderr
