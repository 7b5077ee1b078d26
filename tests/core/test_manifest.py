"""The manifest an interrupted prediction leaves: appended per image, read back whole, a
line cut short by a crash dropped, another run's or a broken file refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly.core.manifest import FORMAT, Manifest, OtherRun, run_identity
from napari_bioanomaly.core.model import BioAnomalyError, ImageRecord, Region


def record(i: int) -> ImageRecord:
    square = np.array([[i, i], [i, i + 5], [i + 5, i + 5], [i + 5, i]], float)
    return ImageRecord(f"img{i}.png", (50, 50), regions=[Region(square, "dust", score=0.5 + i / 100,
                                                                 source="model")])  # fmt: skip


def test_images_appended_one_line_each_are_read_back(tmp_path):
    out = tmp_path / "pred.json"
    manifest = Manifest(out, "run A")
    for i in range(5):
        manifest.append(record(i))
    lines = manifest.path.read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0]) == {"format": FORMAT, "model": "run A",
                                                          "shard": "0/1"}  # fmt: skip
    done = Manifest(out, "run A").read()
    assert sorted(done) == [f"img{i}.png" for i in range(5)]
    assert done["img3.png"].regions[0].score == pytest.approx(0.53)
    np.testing.assert_allclose(done["img3.png"].regions[0].polygon, record(3).regions[0].polygon)
    resumed = Manifest(out, "run A")
    resumed.read()
    resumed.append(record(5))  # appended after what was there
    assert len(Manifest(out, "run A").read()) == 6
    with pytest.raises(
        OtherRun,
        match=r"pred\.json\.manifest\.json: manifest of another run "
        r"\(run A, shard 0/1\); delete it to start over",
    ):
        Manifest(out, "run B").read()
    with pytest.raises(OtherRun):
        Manifest(out, "run A", "1/4").read()
    resumed.remove()
    assert not manifest.path.exists() and Manifest(out, "run A").read() == {}


def test_a_line_cut_short_by_a_crash_is_dropped_and_the_file_written_whole(tmp_path):
    out = tmp_path / "pred.json"
    manifest = Manifest(out, "run A")
    for i in range(3):
        manifest.append(record(i))
    raw = manifest.path.read_bytes()
    manifest.path.write_bytes(raw[:-25])  # killed while writing the third image's line
    again = Manifest(out, "run A")
    assert sorted(again.read()) == ["img0.png", "img1.png"]  # the third is predicted again
    again.append(record(2))  # the file is written whole, then lines follow
    again.append(record(3))
    assert manifest.path.read_bytes().count(b"\n") == 5
    assert sorted(Manifest(out, "run A").read()) == [f"img{i}.png" for i in range(4)]


def test_a_broken_manifest_is_named_and_kept(tmp_path):
    out = tmp_path / "pred.json"
    manifest = Manifest(out, "run A")
    for i in range(3):
        manifest.append(record(i))
    lines = manifest.path.read_bytes().split(b"\n")
    lines[2] = b'{"key": "img1.png-1"'  # broken in the middle: not a crash's doing
    manifest.path.write_bytes(b"\n".join(lines))
    before = manifest.path.read_bytes()
    with pytest.raises(
        BioAnomalyError,
        match=r"pred\.json\.manifest\.json, line 3: not an "
        r"image's entry; delete the manifest",
    ):
        Manifest(out, "run A").read()
    assert manifest.path.read_bytes() == before
    manifest.path.write_text("[1, 2]")
    with pytest.raises(BioAnomalyError, match="not a prediction manifest"):
        Manifest(out, "run A").read()


def test_the_first_format_is_read_and_then_written_as_lines(tmp_path):
    """A manifest of the first format (one JSON object, rewritten whole after each image)
    left by an interrupted run resumes, and what follows is appended in lines."""
    out = tmp_path / "pred.json"
    lines = Manifest(out, "run A")
    lines.add(record(0), record(1))
    entries = dict(lines.entries)
    lines.path.write_text(json.dumps({"model": "run A", "shard": "0/1", "done": entries}))
    old = Manifest(out, "run A")
    assert sorted(old.read()) == ["img0.png", "img1.png"]
    old.append(record(2))
    assert json.loads(old.path.read_text().splitlines()[0])["format"] == FORMAT
    assert sorted(Manifest(out, "run A").read()) == ["img0.png", "img1.png", "img2.png"]


def test_the_run_is_named_by_model_content_flips_and_maps(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    plain = run_identity([model], tta=False)
    assert str(model.resolve()) in plain
    assert run_identity([model], tta=True) == plain + " (tta)"
    assert run_identity([model], tta=False, heatmaps=True) == plain + " (heatmaps)"
    model.write_bytes(b"other weights")
    assert run_identity([model], tta=False) != plain


def test_images_whose_anomaly_maps_are_gone_are_predicted_again(tmp_path):
    """A stopped run that wrote maps is resumed only for the images whose map is still
    there (the user may have deleted the folder, or some of it, in between)."""
    from napari_bioanomaly.core.maps import heatmap_path, missing_maps_text, with_maps

    done = {r.filename: r for r in (record(i) for i in range(4))}
    assert with_maps(done, None) == (done, [])
    maps = tmp_path / "maps"
    assert with_maps(done, maps) == ({}, sorted(done))
    maps.mkdir()
    for name in ("img0.png", "img2.png"):
        heatmap_path(maps, name).write_bytes(b"a map")
    kept, missing = with_maps(done, maps)
    assert sorted(kept) == ["img0.png", "img2.png"] and missing == ["img1.png", "img3.png"]
    assert kept["img2.png"] is done["img2.png"]
    outside = {"../elsewhere.png": record(9)}  # a map it may not write is not there
    assert with_maps(outside, maps) == ({}, ["../elsewhere.png"])
    assert missing_maps_text(missing, maps) == (
        f"2 images predicted before the stop have no anomaly map in {maps} any more: they are "
        "predicted again")  # fmt: skip
    assert "1 image predicted before the stop, img1.png, has" in missing_maps_text(["img1.png"],
                                                                                   maps)  # fmt: skip


def test_images_named_alike_get_maps_of_their_own(tmp_path):
    """``x.png`` and ``x.tif`` in one folder: each its own map (``x.png.tif``, ``x.tif``);
    a map is never written outside its folder."""
    import pytest

    from napari_bioanomaly.core.maps import heatmap_path
    from napari_bioanomaly.core.model import BioAnomalyError

    maps = tmp_path / "maps"
    names = ["x.png", "x.tif", "x.TIFF", "sub/x.png", "x.jpg"]
    paths = [heatmap_path(maps, n) for n in names]
    assert len(set(paths)) == len(names)
    assert [p.relative_to(maps.resolve()).as_posix() for p in paths] == [
        "x.png.tif", "x.tif", "x.TIFF", "sub/x.png.tif", "x.jpg.tif"
    ]  # fmt: skip
    with pytest.raises(BioAnomalyError, match="outside"):
        heatmap_path(maps, "../x.png")


def test_maps_are_refused_where_they_would_replace_the_images(tmp_path):
    """The image folder as the maps' folder: a TIFF's map has the image's name and would be written over it; PNG images get
    ``x.png.tif`` maps and may share their folder."""
    import pytest

    from napari_bioanomaly.core.maps import check_heatmap_folder
    from napari_bioanomaly.core.model import BioAnomalyError

    images = tmp_path / "images"
    with pytest.raises(BioAnomalyError, match=r"anomaly map of a\.tif would be written over"):
        check_heatmap_folder(images, images, ["a.png", "a.tif"])
    with pytest.raises(BioAnomalyError, match=r"sub/b\.tiff"):
        check_heatmap_folder(images, images, ["x.png", "sub/b.tiff"])
    # a PNG's map (a.png.tif) is no image's name, but would be listed as an image next time
    with pytest.raises(BioAnomalyError, match=r"would lie among the images \(a\.png\.tif"):
        check_heatmap_folder(images, images, ["a.png", "b.jpg"])
    with pytest.raises(BioAnomalyError, match="among the images"):
        check_heatmap_folder(images, images, ["sub/b.png"])  # images/sub/b.png.tif
    check_heatmap_folder(tmp_path / "maps", images, ["a.tif", "sub/b.png"])
