"""A per-image export (Fiji ROI sets, GeoJSON) into a folder that holds an earlier one: the
file of an image that gets none now is renamed to ``.bak``, so the folder reads back as
written (the earlier file brought deleted regions back)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.geojson import write_geojson
from napari_bioanomaly.core.imagej import write_roi_sets
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region

SUFFIXES = {"imagej": "_rois.zip", "geojson": ".geojson"}
WRITERS = {"imagej": write_roi_sets, "geojson": write_geojson}


def _regions(dataset):
    return {im.filename: sorted((r.label, round(r.area)) for r in im.regions)
            for im in dataset.images if im.regions}  # fmt: skip


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("to", ["imagej", "geojson"])
def test_an_image_whose_regions_were_all_deleted_does_not_get_them_back(tmp_path, sample_dir,
                                                                        to, capsys):  # fmt: skip
    """``convert --to imagej|geojson OUT``, delete every region of two images (one in a
    sub-folder), convert into OUT again: OUT reads back to the regions there are now, the
    earlier files are kept as ``.bak`` and said, other files stay as they were."""
    from napari_bioanomaly.cli import main

    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(sample_dir, data)
    ds, _ = annotations.load(data / "annotations.json")
    moved = ds.images[0].filename
    (data / "sub").mkdir()
    (data / moved).rename(data / "sub" / moved)
    ds.images[0].filename = f"sub/{moved}"
    annotations.save(ds, data / "annotations.json")
    assert main(["convert", str(data), "--to", to, str(out)]) == 0
    capsys.readouterr()
    suffix = SUFFIXES[to]
    first = _files(out)
    cleared = [im for im in ds.images if im.regions][:2]
    assert cleared[0].filename == f"sub/{moved}"
    stale = [f"{os.path.splitext(im.filename)[0]}{suffix}" for im in cleared]
    assert set(stale) <= first
    before = {name: (out / name).read_bytes() for name in stale}
    # files that are not what this export writes for an image of the dataset stay
    (out / "notes.txt").write_text("mine")
    shutil.copy(out / stale[1], out / f"elsewhere{suffix}")  # no such image in the dataset
    for im in cleared:
        im.regions = []
    annotations.save(ds, data / "annotations.json")

    assert main(["convert", str(data), "--to", to, str(out)]) == 0
    said = capsys.readouterr()
    with_regions = sum(1 for im in ds.images if im.regions)
    assert f"  {with_regions} files" in said.out
    what = "Fiji ROI sets" if to == "imagej" else "GeoJSON files"
    assert f"2 {what} in {out} named for images this export writes none for" in said.err
    assert f"set aside ({stale[0]} -> {stale[0].split('/')[-1]}.bak, {stale[1]} -> " in said.err
    for name in stale:
        assert not (out / name).exists()
        assert (out / f"{name}.bak").read_bytes() == before[name]  # kept, not lost
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / f"elsewhere{suffix}").read_bytes() == before[stale[1]]

    (out / f"elsewhere{suffix}").unlink()  # its image is not the dataset's
    back, _ = annotations.open_dataset(out, images=data)
    assert _regions(back) == _regions(ds)
    assert all(im.filename not in _regions(back) for im in cleared)


def _dataset(names: list[str]) -> Dataset:
    square = np.array([[2.0, 2.0], [2.0, 10.0], [10.0, 10.0], [10.0, 2.0]])
    images = [ImageRecord(n, (32, 32), regions=[Region(square + k, "dust")])
              for k, n in enumerate(names)]  # fmt: skip
    return Dataset(images=images, classes=["dust"])


def _read_back(out, images):
    names = annotations.per_image_files(out)
    back, _ = annotations.load_per_image(out, names, images)
    return names, back


@pytest.mark.parametrize("to", ["imagej", "geojson"])
def test_an_image_whose_stem_is_no_longer_shared_reads_back_once(tmp_path, to):
    """``x.tif`` and ``x.png`` got ``x.tif<suffix>`` and ``x.png<suffix>``; ``x.png``
    without regions now, ``x.tif`` gets ``x<suffix>``: both earlier files go to ``.bak``
    (``x.tif<suffix>`` would have read back as a second copy of ``x.tif``'s regions)."""
    suffix, write = SUFFIXES[to], WRITERS[to]
    out = tmp_path / "out"
    ds = _dataset(["x.tif", "x.png", "y.tif"])
    write(ds, out)
    assert _files(out) == {f"x.tif{suffix}", f"x.png{suffix}", f"y{suffix}"}
    ds.images[1].regions = []
    written, warnings = write(ds, out)
    assert sorted(p.name for p in written) == [f"x{suffix}", f"y{suffix}"]
    assert _files(out) == {f"x{suffix}", f"y{suffix}", f"y{suffix}.bak",  # y: replaced
                           f"x.tif{suffix}.bak", f"x.png{suffix}.bak"}  # fmt: skip
    assert any(f"x.tif{suffix} -> x.tif{suffix}.bak, x.png{suffix} -> x.png{suffix}.bak" in w
               for w in warnings)  # fmt: skip
    names, back = _read_back(out, tmp_path)
    assert sorted(names) == [f"x{suffix}", f"y{suffix}"]
    assert [(im.filename, len(im.regions)) for im in back.images] == [("x.tif", 1), ("y.tif", 1)]


@pytest.mark.parametrize("to", ["imagej", "geojson"])
def test_no_regions_left_sets_every_earlier_file_aside(tmp_path, to):
    suffix, write = SUFFIXES[to], WRITERS[to]
    out = tmp_path / "out"
    ds = _dataset(["a.tif", "sub/b.tif", "c.tif", "d.tif", "e.tif"])
    write(ds, out)
    for im in ds.images:
        im.regions = []
    written, warnings = write(ds, out)
    assert written == []
    assert _files(out) == {f"{n}{suffix}.bak" for n in ("a", "sub/b", "c", "d", "e")}
    assert (f"(a{suffix} -> a{suffix}.bak, sub/b{suffix} -> b{suffix}.bak, c{suffix} -> "
            f"c{suffix}.bak and 2 more)") in warnings[0]  # fmt: skip
    assert "no image has regions" in warnings[-1]
    assert annotations.per_image_files(out) == []


def test_an_earlier_file_that_cannot_be_renamed_is_said(tmp_path, monkeypatch):
    out = tmp_path / "out"
    ds = _dataset(["a.tif", "b.tif"])
    write_geojson(ds, out)
    ds.images[0].regions = []
    replace = os.replace

    def refused(src, dst):  # the current files are written; the rename to .bak fails
        if str(dst).endswith(".bak") and not os.path.basename(src).startswith("."):
            raise PermissionError(13, "Permission denied")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    _, warnings = write_geojson(ds, out)
    assert (f"1 GeoJSON file in {out} named for images this export writes none for could not "
            "be renamed to .bak: a.geojson (Permission denied); move it out of the folder") in (
        "\n".join(warnings))  # fmt: skip
    assert (out / "a.geojson").is_file()


def test_an_earlier_file_that_is_a_link_out_of_the_folder_is_left_alone(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "a.geojson").write_text("theirs")
    os.symlink(elsewhere / "a.geojson", out / "a.geojson")
    ds = _dataset(["a.tif", "b.tif"])
    ds.images[0].regions = []
    _, warnings = write_geojson(ds, out)
    assert (out / "a.geojson").is_symlink() and not (out / "a.geojson.bak").exists()
    assert (elsewhere / "a.geojson").read_text() == "theirs"
    assert _files(elsewhere) == {"a.geojson"}
    assert not any("set aside" in w for w in warnings)


def test_a_file_set_aside_replaces_no_earlier_backup(tmp_path):
    """Renamed over an existing ``x.geojson.bak`` (an earlier backup, or the user's own),
    that file was gone."""
    out = tmp_path / "out"
    ds = _dataset(["a.tif", "b.tif"])
    write_geojson(ds, out)
    (out / "a.geojson.bak").write_text("an older backup")
    (out / "a.geojson.bak.1").write_text("an older one still")
    ds.images[0].regions = []
    _, warnings = write_geojson(ds, out)
    assert not (out / "a.geojson").exists()
    assert (out / "a.geojson.bak").read_text() == "an older backup"
    assert (out / "a.geojson.bak.1").read_text() == "an older one still"
    assert is_geojson_text((out / "a.geojson.bak.2").read_text())
    assert any("set aside (a.geojson -> a.geojson.bak.2)" in w for w in warnings)


def test_a_file_this_export_wrote_is_not_set_aside_by_another_name(tmp_path):
    """A link inside the folder back into it (``sub -> .``): ``sub/x.geojson`` is the
    ``x.geojson`` just written, and was renamed, leaving the export empty."""
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(".", out / "sub")
    ds = _dataset(["x.tif", "sub/x.tif"])
    ds.images[1].regions = []
    written, _ = write_geojson(ds, out)
    assert [p.name for p in written] == ["x.geojson"] and written[0].is_file()
    assert not (out / "x.geojson.bak").exists()


def is_geojson_text(text: str) -> bool:
    import json

    return json.loads(text).get("type") == "FeatureCollection"
