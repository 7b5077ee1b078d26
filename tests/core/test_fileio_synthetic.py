"""Atomic writes with backups, safe paths, image reading, and the synthetic sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly.core import annotations, geometry
from napari_bioanomaly.core.fileio import atomic_write
from napari_bioanomaly.core.images import (
    ImageReadError,
    image_header,
    image_shape,
    percentile_range,
    percentiles,
    read_image,
)
from napari_bioanomaly.core.jsonio import write_json
from napari_bioanomaly.core.model import BioAnomalyError
from napari_bioanomaly.core.paths import resolve_image
from napari_bioanomaly.core.synthetic import SampleConfig, generate


def test_atomic_write_keeps_a_backup_and_survives_a_failing_writer(tmp_path):
    path = tmp_path / "ann.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert json.loads((tmp_path / "ann.json.bak").read_text()) == {"v": 1}

    def broken(fh):
        fh.write(b'{"v": 3, "half')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.json", "ann.json.bak"]
    atomic_write(path, b'{"v": 4}')  # bytes as they are
    assert json.loads(path.read_text()) == {"v": 4}
    assert json.loads((tmp_path / "ann.json.bak").read_text()) == {"v": 2}


def test_a_file_that_cannot_be_written_is_named_not_its_hidden_temporary(tmp_path, monkeypatch):
    import errno
    import tempfile

    from napari_bioanomaly.core import fileio

    target = tmp_path / "annotations.json"
    target.write_text("old")

    def refused(*args, prefix="", dir=None, **kwargs):
        name = f"{dir}/{prefix}abc123.tmp"
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(fileio.WriteError) as raised:
        atomic_write(target, b"new")
    said = str(raised.value)
    assert (
        said == f"{target}: cannot be written (Permission denied; the folder is read-only for you)"
    )
    assert isinstance(raised.value, OSError) and isinstance(raised.value, BioAnomalyError)
    monkeypatch.undo()

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        BioAnomalyError,
        match=r"annotations\.json: cannot be written \(No space left on device; the disk is full\)",
    ):
        atomic_write(target, full)
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
    # the lock file of a compare-and-swap save, too
    monkeypatch.setattr(
        fileio.os,
        "open",
        lambda *a, **k: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(fileio.lock_path(target)))
        ),
    )
    with pytest.raises(fileio.WriteError, match=r"annotations\.json: cannot be written"):
        with fileio.file_lock(target):
            pass


def test_write_json_refuses_nan_and_leaves_the_file(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"ok": True})
    with pytest.raises(ValueError):
        write_json(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"ok": True}


def test_resolve_image_stays_inside_the_root(tmp_path):
    assert resolve_image(tmp_path, "sub/a.png") == (tmp_path / "sub" / "a.png").resolve()
    assert resolve_image(tmp_path, "C:/lab/data/b.png") == (tmp_path / "b.png").resolve()
    assert resolve_image(tmp_path, "http://x.org/img/c.jpg") == (tmp_path / "c.jpg").resolve()
    for bad in ("../a.png", "sub/../../a.png"):
        with pytest.raises(BioAnomalyError, match="outside the dataset folder"):
            resolve_image(tmp_path, bad)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match=r"bad.tif: cannot read image"):
        read_image(bad)
    with pytest.raises(ImageReadError, match=r"bad.tif: cannot read image header"):
        image_shape(bad)
    with pytest.raises(ImageReadError, match=r"gone\.png: image file not found"):
        read_image(tmp_path / "gone.png")


def test_image_formats_and_percentiles(tmp_path):
    import imageio.v3 as iio
    import tifffile

    img16 = (np.arange(200 * 300).reshape(200, 300) % 4096).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", img16)
    rgb = np.zeros((20, 30, 3), np.uint8)
    iio.imwrite(tmp_path / "b.png", rgb)
    assert read_image(tmp_path / "a.tif").dtype == np.uint16
    assert image_shape(tmp_path / "a.tif") == (200, 300)
    assert read_image(tmp_path / "b.png").shape == (20, 30, 3)
    assert image_shape(tmp_path / "b.png") == (20, 30)
    lo, hi = percentile_range(img16)
    assert lo == pytest.approx(np.percentile(img16, 0.1), abs=5)
    assert hi == pytest.approx(np.percentile(img16, 99.9), abs=5)


def test_a_stack_is_read_as_its_first_plane_and_said_to_be_one(tmp_path):
    """Microscopes write z-stacks, time series and channels as multi-page TIFFs: the first
    plane is read, and the number of planes is known from the header, so that loading
    says so instead of silently using one plane of many."""
    import imageio.v3 as iio
    import tifffile

    z = np.arange(5 * 40 * 50, dtype=np.uint16).reshape(5, 40, 50)
    tifffile.imwrite(tmp_path / "z.tif", z, imagej=True, metadata={"axes": "ZYX"})
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for plane in z[:3]:
            tif.write(plane)
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((40, 50, 3), np.uint8), photometric="rgb")
    iio.imwrite(tmp_path / "one.png", np.zeros((40, 50), np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "z.tif"), z[0])
    assert image_header(tmp_path / "z.tif") == ((40, 50), 5)
    assert image_header(tmp_path / "pages.tif") == ((40, 50), 3)
    assert image_header(tmp_path / "rgb.tif") == ((40, 50), 1)  # samples are not planes
    assert image_header(tmp_path / "one.png") == ((40, 50), 1)
    with tifffile.TiffWriter(tmp_path / "preview.tif") as tif:  # an image and its thumbnail
        tif.write(z[0])
        tif.write(z[0, ::4, ::4], subfiletype=1)
    assert image_header(tmp_path / "preview.tif") == ((40, 50), 1)
    ds = annotations.Dataset(root=tmp_path, images=[annotations.ImageRecord(n) for n in
                                                     ("z.tif", "rgb.tif", "pages.tif")])  # fmt: skip
    report = annotations.ImportReport()
    annotations.attach_images(ds, report)
    said = [(i.image, i.message) for i in report.issues]
    assert said == [
        ("z.tif", "a stack of 5 planes (pages): only the first plane is used"),
        ("pages.tif", "a stack of 3 planes (pages): only the first plane is used"),
    ]
    # a folder without an annotation file says so too
    _, report, _ = annotations.open_folder(tmp_path)
    said = {(i.image, i.message) for i in report.issues}
    assert ("z.tif", "a stack of 5 planes (pages): only the first plane is used") in said
    assert not [s for s in said if s[0] in ("rgb.tif", "preview.tif", "one.png")]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int8, np.float32])
def test_percentiles_of_camera_images_equal_numpys(dtype):
    """Integer images go through a histogram: the very floats of np.percentile (taken on
    int64 values: numpy's own int16 interpolation overflows)."""
    rng = np.random.default_rng(0)
    qs = [0, 0.1, 1, 25, 33.3, 50, 99, 99.9, 100]
    lo, hi = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype != np.float32 else (-9, 9)
    for n in (1, 2, 3, 7, 1001, 50_000):
        values = rng.uniform(lo, hi, n).astype(dtype)
        exact = values.astype(np.float64) if dtype != np.float32 else values
        want = [float(v) for v in np.percentile(exact, qs)]
        assert percentiles(values, qs) == want, (dtype, n)
    flat = np.full((40, 50), 7, dtype=dtype)  # one grey level
    assert percentiles(flat, [0.1, 99.9]) == [7.0, 7.0]


def test_sample_is_deterministic_and_has_normal_images_and_cell_lines():
    a, imgs_a = generate(SampleConfig(n_images=10, size=96, seed=5))
    b, imgs_b = generate(SampleConfig(n_images=10, size=96, seed=5))
    c, _ = generate(SampleConfig(n_images=10, size=96, seed=6))
    for x, y in zip(imgs_a, imgs_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert [len(im.regions) for im in a.images] == [len(im.regions) for im in b.images]
    assert any(
        not np.array_equal(ra.polygon, rc.polygon)
        for ra, rc in zip(a.regions, c.regions, strict=False)
    )
    normal = [im for im in a.images if not im.regions]
    assert len(normal) == 2 and all(im.no_anomaly for im in normal)
    assert {im.file_attributes["cell_line"] for im in a.images} == {"HeLa", "U2OS", "A549"}
    assert set(a.class_counts()) <= {"dark spot", "scratch", "bacterial colony", "hair", "dust"}


def test_sample_polygons_are_where_the_anomalies_are_drawn():
    ds, images = generate(SampleConfig(n_images=8, size=128, seed=1, normal_fraction=0))
    darker = 0
    checked = 0
    for im, img in zip(ds.images, images, strict=True):
        for region in im.regions:
            if region.label == "scratch":
                continue  # scratches are drawn brighter
            mask = geometry.polygon_to_mask(region.polygon, img.shape)
            ring = geometry.polygon_to_mask(region.polygon, img.shape)
            from scipy import ndimage

            ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
            checked += 1
            darker += img[mask].mean() < img[ring].mean() - 0.05
    assert checked > 5 and darker == checked


def test_written_sample_loads_with_sizes_and_no_issues(sample_dir):
    dataset, report = annotations.load(sample_dir / "annotations.json")
    assert report.format == "via2-project" and not report.issues
    assert len(dataset.images) == 6 and all(im.shape == (128, 128) for im in dataset.images)
    assert read_image(sample_dir / dataset.images[0].filename).dtype == np.uint16


def test_paused_gc_restores_the_collector_as_it_found_it():
    import gc

    from napari_bioanomaly.core.fileio import paused_gc

    assert gc.isenabled()
    with pytest.raises(KeyError):
        with paused_gc():
            assert not gc.isenabled()
            with paused_gc():  # nested: the inner one leaves it paused
                pass
            assert not gc.isenabled()
            raise KeyError("an error while reading")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # paused by someone else: left paused
    finally:
        gc.enable()
