"""Exports stay inside the output folder, and images that share a stem keep their own files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_bioanomaly.core.geojson import image_for, write_geojson
from napari_bioanomaly.core.imagej import read_roi_sets, write_roi_sets
from napari_bioanomaly.core.masks import write_label_masks
from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord, Region
from napari_bioanomaly.core.paths import export_paths, output_path

HOSTILE = ["../escape.tif", "/tmp/elsewhere/abs.tif", "sub/../../up.tif", "C:\\data\\win.tif",
           "https://example.org/img/url.tif", "ok/inner.tif"]  # fmt: skip


def _dataset(names: list[str]) -> Dataset:
    square = np.array([[2.0, 2.0], [2.0, 10.0], [10.0, 10.0], [10.0, 2.0]])
    images = [ImageRecord(n, (32, 32), regions=[Region(square + k, "dust")])
              for k, n in enumerate(names)]  # fmt: skip
    return Dataset(images=images, classes=["dust"])


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("writer", [write_roi_sets, write_geojson, write_label_masks])
def test_exports_never_write_outside_the_output_folder(tmp_path, writer):
    out = tmp_path / "out"
    before = _files(tmp_path)
    written, _ = writer(_dataset(HOSTILE), out)
    root = out.resolve()
    assert all(root in p.resolve().parents for p in written)
    outside = _files(tmp_path) - before - {f"out/{f}" for f in _files(out)}
    assert not outside
    names = {p.relative_to(out).as_posix().split("_")[0].split(".")[0] for p in written}
    assert {"escape", "abs", "up", "win", "url", "ok/inner"} <= names  # base names kept


def test_a_symlink_inside_the_output_folder_that_leads_out_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "sub")
    with pytest.raises(BioAnomalyError, match=r"image 'sub/a.tif'.*outside the output folder"):
        write_geojson(_dataset(["sub/a.tif"]), out)
    assert not list(elsewhere.iterdir())


def test_output_path_refuses_a_name_that_is_only_dots(tmp_path):
    with pytest.raises(BioAnomalyError, match=r"image '\.\.': no file name"):
        output_path(tmp_path, "..", "image '..'")
    for name in ("/", "..", "./"):  # that image is left out and said; the others exported
        paths, skipped = export_paths(tmp_path, ["ok.tif", name], ".geojson")
        assert list(paths) == ["ok.tif"]
        assert skipped == [f"image {name!r}: no file name to name its export after; not exported"]


@pytest.mark.parametrize("writer", [write_roi_sets, write_geojson, write_label_masks])
def test_an_entry_whose_export_would_be_anothers_is_left_out_and_the_rest_exported(tmp_path,
                                                                                    writer):  # fmt: skip
    """``../b.png`` (refused when read: it leads out of the folder) and ``b.png`` both name
    ``b``'s export: the export stopped at the first file. The image as the folder names it
    keeps the file, the other is said and left out, every other image is exported."""
    out = tmp_path / "out"
    dataset = _dataset(["../b.png", "a.png", "b.png"])
    written, warnings = writer(dataset, out)
    assert len(written) == 2 + (writer is write_label_masks)  # and labels.csv
    kept = written[1].name  # b.png's, after a.png's, by its stem as if alone
    assert kept.startswith("b") and not kept.startswith("b.png")
    assert ("image '../b.png': its export would overwrite that of 'b.png'; not exported: "
            "rename the image in the annotations") in warnings  # fmt: skip
    assert sum("not exported" in w for w in warnings) == 1


def test_images_sharing_a_stem_get_their_own_export_files(tmp_path):
    paths, skipped = export_paths(tmp_path, ["x.tif", "x.png", "y.tif", "sub/x.tif"], ".geojson")
    assert not skipped
    assert paths["x.tif"].name == "x.tif.geojson" and paths["x.png"].name == "x.png.geojson"
    assert paths["y.tif"].name == "y.geojson"
    assert paths["sub/x.tif"] == tmp_path / "sub" / "x.geojson"  # another folder: no clash
    assert image_for(paths["x.png"], None) == "x.png"


def test_roi_sets_of_images_sharing_a_stem_read_back_to_their_images(tmp_path):
    ds = _dataset(["x.tif", "x.png"])
    written, _ = write_roi_sets(ds, tmp_path / "rois")
    assert len(written) == 2 and len(set(written)) == 2
    back, _ = read_roi_sets(sorted(written))
    by_name = {im.filename: im for im in back.images}
    assert set(by_name) == {"x.tif", "x.png"}
    for im in ds.images:  # each image gets its own square back
        np.testing.assert_allclose(by_name[im.filename].regions[0].polygon.min(axis=0),
                                   im.regions[0].polygon.min(axis=0), atol=0.5)  # fmt: skip


def test_label_masks_of_images_sharing_a_stem_are_both_written(tmp_path):
    written, _ = write_label_masks(_dataset(["x.tif", "x.png"]), tmp_path / "masks")
    assert {p.name for p in written} >= {"x.tif_labels.tif", "x.png_labels.tif"}
    table = (tmp_path / "masks" / "labels.csv").read_text()
    assert "x.tif_labels.tif" in table and "x.png_labels.tif" in table


def _roi_zip(path, extra: dict[str, bytes], compression=None):
    import zipfile

    write_roi_sets(_dataset(["a.tif"]), path.parent)
    src = path.parent / "a_rois.zip"
    with zipfile.ZipFile(src) as zf:
        good = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_DEFLATED) as zf:
        for name, data in {**good, **extra}.items():
            zf.writestr(name, data)
    return path


def test_a_zip_bomb_is_not_inflated(tmp_path):
    import tracemalloc

    bomb = _roi_zip(tmp_path / "bomb_rois.zip", {
        "huge.roi": bytes(64 * 1024 * 1024),  # 64 MiB of zeros: 64 kB compressed
        "dense.roi": bytes(1024 * 1024),  # under the size cap, but compressed 1000-fold
    })  # fmt: skip
    assert bomb.stat().st_size < 1024 * 1024
    tracemalloc.start()
    ds, report = read_roi_sets([bomb])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # the 64 MiB entry was never read
    assert len(ds.images[0].regions) == 1  # the real ROI is imported
    text = "\n".join(str(i) for i in report.issues)
    assert "huge.roi: 67108864 bytes, too large for a ROI" in text
    assert "dense.roi: compressed" in text and "-fold, not a ROI" in text


def test_a_corrupt_zip_entry_is_reported_and_the_rest_imported(tmp_path):
    import zipfile

    path = _roi_zip(tmp_path / "c_rois.zip", {"broken.roi": bytes(range(256)) * 40})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("broken.roi")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + 20] = bytes(20)  # break the deflate stream of that entry only
    path.write_bytes(bytes(data))
    ds, report = read_roi_sets([path])
    assert len(ds.images[0].regions) == 1
    assert "broken.roi: cannot be read from the zip" in "\n".join(str(i) for i in report.issues)


@pytest.mark.parametrize("to", ["imagej", "geojson"])
def test_a_folder_of_our_own_exports_reads_back(tmp_path, sample_dir, to, capsys):
    """``convert --to imagej|geojson OUT`` then ``convert OUT --to via``: the same regions on
    the same images (it used to read 0 images and exit 0)."""
    import shutil

    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core import annotations

    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    ds, _ = annotations.load(data / "annotations.json")
    moved = ds.images[0].filename
    (data / "sub").mkdir()
    (data / moved).rename(data / "sub" / moved)  # an image in a sub-folder keeps it
    ds.images[0].filename = f"sub/{moved}"
    annotations.save(ds, data / "annotations.json")
    assert main(["convert", str(data), "--to", to, str(tmp_path / "out")]) == 0
    back = tmp_path / "back.json"
    assert main(["convert", str(tmp_path / "out"), "--images", str(data), "--to", "via",
                 str(back)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "image file not found" not in err
    again, _ = annotations.load(back, images_dir=data)
    expected = {im.filename: sorted((r.label, round(r.area)) for r in im.regions)
                for im in ds.images if im.regions}  # fmt: skip
    got = {im.filename: sorted((r.label, round(r.area)) for r in im.regions)
           for im in again.images if im.regions}  # fmt: skip
    assert got == expected and f"sub/{moved}" in got
    # a folder with nothing to read is refused, naming it
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), "--to", "via", str(back)]) == 2
    assert "empty: no images (TIFF, PNG, JPEG), no annotation file" in capsys.readouterr().err


def test_a_folder_that_cannot_be_written_says_why(tmp_path, monkeypatch):
    """Checked before a run that would write there only at its end (training)."""
    import tempfile

    from napari_bioanomaly.core.paths import unwritable_reason

    assert unwritable_reason(tmp_path) is None
    assert unwritable_reason(tmp_path / "not" / "made" / "yet") is None  # made when written
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind
    (tmp_path / "notes.txt").write_text("x")
    assert unwritable_reason(tmp_path / "notes.txt" / "sub") == (
        f"{tmp_path / 'notes.txt'} is a file, not a folder"
    )

    def refused(*args, **kwargs):  # as a read-only folder answers (root writes anyway)
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert unwritable_reason(tmp_path) == "Permission denied"
