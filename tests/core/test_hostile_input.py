"""Hostile and messy annotation files: no crash, each bad item named, the rest imported,
and whatever loads can be saved again (issue 15, items 5, 6 and 12)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.session import AnnotationSession

GOOD = {"shape_attributes": {"name": "polygon", "all_points_x": [1, 10, 10],
                             "all_points_y": [1, 1, 10]},
        "region_attributes": {"class": "dust"}}  # fmt: skip


def via(regions=None, name="a.png", file_attributes=None, definitions=None) -> dict:
    """A VIA 2 project of one image: the given regions, then one good region."""
    return {
        "_via_settings": {},
        "_via_img_metadata": {f"{name}12": {
            "filename": name, "size": 12, "file_attributes": file_attributes or {},
            "regions": copy.deepcopy([*(regions or []), GOOD])}},
        "_via_attributes": definitions or {"region": {}, "file": {}},
    }  # fmt: skip


def shape(name: str, **fields) -> dict:
    return {"shape_attributes": {"name": name, **fields}, "region_attributes": {"class": "x"}}


#: stands for a list nested 1,000 deep (which ``json.dumps`` cannot write itself)
DEEP = "__nested 1000 deep__"


def nested(depth: int) -> list:
    """A list nested ``depth`` deep: within JSON's limit, beyond an attribute's (32)."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def write(tmp_path, data, name="hostile.json", raw: str | None = None):
    path = tmp_path / name
    raw = raw if raw is not None else json.dumps(data).replace(f'"{DEEP}"', "[" * 1000 + "]" * 1000)
    path.write_text(raw, encoding="utf-8")
    return path


def messages(report) -> str:
    return "\n".join(f"{i.kind}: {i.image} {i.region}: {i.message}" for i in report.issues)


CASES = {
    # coordinates that overflow or are not finite: that region skipped, by name
    "rect 1e308": (via([shape("rect", x=1e308, y=1, width=1e308, height=5)]),
                   r"skipped: a\.png 0: coordinates beyond"),
    "ellipse 1e308": (via([shape("ellipse", cx=5, cy=5, rx=1e308, ry=1e308, theta=0)]),
                      r"skipped: a\.png 0: ellipse: centre or radius beyond"),
    "400 digits": (via([shape("polygon", all_points_x=[int("9" * 400), 10, 10],
                              all_points_y=[1, 1, 10])]),
                   r"skipped: a\.png 0: polygon: all_points_x\[0\] is too large"),
    # a class with a lone surrogate (printed half, then crashed)
    "surrogate class": (via([{**GOOD, "region_attributes": {"class": "du\udc00st"}}]),
                        r"changed: .*region_attributes/class: text held invalid characters"),
    "surrogate attribute": (via(file_attributes={"note": "ok\ud800"}),
                            r"changed: .*file_attributes/note: .*lone surrogates"),
    "NaN attribute": (via(file_attributes={"ratio": float("nan")}),
                      r"changed: .*file_attributes/ratio: nan is no JSON number"),
    "options: 5": (via(definitions={"region": {"class": {"type": "dropdown", "options": 5}},
                                    "file": {}}),
                   r"changed: .*_via_attributes\.region\.class\.options is int"),
    "1,000 deep": (via(file_attributes={"x": DEEP}),
                   r"changed: .*file_attributes/x/0/.*nested more than 100 levels deep"),
    # attribute values deeper than an attribute may be (32): that value dropped, by name
    "region attribute 40 deep": (via([{**GOOD, "region_attributes": {"class": "dust",
                                                                     "x": nested(40)}}]),
                                 r"changed: a\.png 0: region attribute 'x' nested more than "
                                 r"32 levels deep: dropped"),
    "COCO file attribute 40 deep": (
        {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20,
                     "bioanomaly": {"file_attributes": {"x": nested(40), "ok": 1}}}],
         "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                          "segmentation": [[1, 1, 10, 1, 10, 10]],
                          "attributes": {"y": nested(40)}}],
         "categories": [{"id": 1, "name": "dust"}]},
        r"changed: a\.png None: file attribute 'x' nested more than 32 levels deep: dropped"
        r"(.|\n)*changed: a\.png 7: region attribute 'y' nested more than 32"),
    # image names no file system can hold: that image missing, the file kept
    "NUL in name": (via(name="a\x00b.png"), r"image: a\x00b\.png None: .*NUL byte"),
    "300-byte name": (via(name="x" * 300 + ".png"), r"image: x+\.png None: .*longer than 255"),
    "surrogate name": (via(name="a\ud800.png"), r"changed: .*filename: text held invalid"),
    "VIA 3 fid_list 5": ({"project": {"vid_list": ["1"]}, "config": {}, "attribute": {},
                          "file": {"1": {"fid": "1", "fname": "a.png", "type": 2}},
                          "view": {"1": {"fid_list": 5}}, "metadata": {}},
                         r"image: view 1 None: fid_list is not a list"),
    "COCO categories 1.5": ({"images": [{"id": 1, "file_name": "a.png", "width": 20,
                                         "height": 20}],
                             "annotations": [], "categories": 1.5},
                            r"file: None None: 'categories' is not a list"),
    "COCO list ids": ({"images": [{"id": [1], "file_name": "a.png"},
                                  {"id": 2, "file_name": "b.png"}],
                       "annotations": [{"id": 1, "image_id": [1], "category_id": 1,
                                        "segmentation": [[1, 1, 10, 1, 10, 10]]},
                                       {"id": 2, "image_id": 2, "category_id": {"a": 1},
                                        "segmentation": [[1, 1, 10, 1, 10, 10]]}],
                       "categories": [{"id": 1, "name": "dust"}]},
                      r"image: 0 None: image entry without an id"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_item_is_named_the_rest_imported_and_the_result_saves(tmp_path, case):
    data, expected = CASES[case]
    path = write(tmp_path, data)
    dataset, report = annotations.load(path)
    assert report.issues, case
    assert re.search(expected, messages(report)), messages(report)
    if "_via_img_metadata" in data:  # the good region is still there
        assert sum(len(im.regions) for im in dataset.images) >= 1
    # whatever loaded can be saved, in every format that holds it, and read back
    for fmt, name in (("via-project", "out.json"), ("coco", "out.coco.json")):
        annotations.save(dataset, tmp_path / name, fmt)
        again, _ = annotations.load(tmp_path / name)
        assert len(again.regions) == len(dataset.regions)


@pytest.mark.parametrize("case", ["surrogate attribute", "options: 5", "NaN attribute"])
def test_annotator_autosave_never_fails_on_what_loading_accepted(tmp_path, case):
    path = write(tmp_path, CASES[case][0])
    session = AnnotationSession.open(path)
    session.touch()
    assert session.save() is not None
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert "_via_img_metadata" in saved


def test_geojson_with_bad_coordinates_and_nan_scores_keeps_the_good_features(tmp_path):
    def feature(coords, score=0.5):
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {"classification": {"name": "dust"},
                               "measurements": {"score": score}}}  # fmt: skip

    good = [[[0, 0], [10, 0], [5, 5], [0, 0]]]
    raw = json.dumps({"type": "FeatureCollection", "features": [
        feature({}), feature([[[0, 0], [float("inf"), 0], [5, 5], [0, 0]]]),
        feature([[[0, 0], [1e300, 0], [5, 5], [0, 0]]]), feature(good, float("nan")),
        feature(good)]})  # fmt: skip
    path = write(tmp_path, None, "a.geojson", raw)
    dataset, report = annotations.load(path)
    text = messages(report)
    assert "0: Polygon: malformed coordinates (a polygon is not a list of rings)" in text
    assert "1: Polygon: malformed coordinates (outer ring holds coordinates beyond" in text
    assert "2: Polygon: malformed coordinates (outer ring holds coordinates beyond" in text
    assert "measurements/score: nan is no JSON number" in text
    scores = [r.score for r in dataset.images[0].regions]
    assert scores == [None, 0.5]  # the NaN score dropped, not the whole file


def test_cli_reports_hostile_items_without_an_internal_error(tmp_path, capsys):
    for case in ("rect 1e308", "400 digits", "COCO list ids", "1,000 deep", "NUL in name"):
        path = write(tmp_path, CASES[case][0])
        for to, out in (("via", "o.json"), ("imagej", "rois"), ("geojson", "geo")):
            code = main(["convert", str(path), "--to", to, str(tmp_path / out)])
            err = capsys.readouterr().err
            assert "internal error" not in err and "Traceback" not in err
            assert code == 0, (case, to, err)
            if case == "NUL in name" and to != "via":  # no file can be named after it: said
                assert r"image 'a\x00b.png': cannot name its export" in err


def test_round_trip_keeps_a_radio_class_attribute_and_adds_none_to_an_empty_project(tmp_path):
    radio = {"type": "radio", "description": "kind", "options": {"dust": "Dust"},
             "default_options": {}}  # fmt: skip
    data = via(definitions={"region": {"class": radio}, "file": {}})
    dataset, _ = annotations.load(write(tmp_path, data))
    annotations.save(dataset, tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())["_via_attributes"]["region"]["class"]
    assert saved["type"] == "radio" and saved["description"] == "kind"
    assert saved["options"]["dust"] == "Dust"  # the user's label for the option is kept
    empty = {"_via_settings": {}, "_via_img_metadata": {"b.png1": {
        "filename": "b.png", "size": 1, "file_attributes": {}, "regions": []}},
        "_via_attributes": {"region": {}, "file": {}}}  # fmt: skip
    dataset, _ = annotations.load(write(tmp_path, empty, "empty.json"))
    annotations.save(dataset, tmp_path / "empty-out.json")
    saved = json.loads((tmp_path / "empty-out.json").read_text())["_via_attributes"]
    assert saved == {"region": {}, "file": {}}


def test_round_trip_keeps_integers_beyond_64_bits(tmp_path):
    big = via(file_attributes={"plate": 2**70, "well": -(2**65)})
    big["_via_img_metadata"]["a.png12"]["regions"][0]["region_attributes"]["n"] = 2**64
    dataset, _ = annotations.load(write(tmp_path, big))
    annotations.save(dataset, tmp_path / "out.json")
    again, _ = annotations.load(tmp_path / "out.json")
    assert again.images[0].file_attributes == {"plate": 2**70, "well": -(2**65)}
    assert again.images[0].regions[0].attributes == {"n": 2**64}
    from napari_bioanomaly.core.jsonio import _long_digit_run

    # the fast reader is skipped exactly where it could change a number: 20 digits in a row
    assert _long_digit_run(b'{"n": 18446744073709551616}')
    assert not _long_digit_run(b'{"n": 1844674407370955161, "m": 1.8446744073709551e+19}')
    assert not _long_digit_run('{"n": "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠١"}'.encode())  # not ASCII


def test_slivers_left_by_repairing_a_polygon_are_dropped_and_reported(tmp_path):
    # an edge runs back along itself (a spike): the repair leaves a 0.01 px² sliver
    xs, ys = [0, 10, 10, 5, 5, 5.001, 0], [0, 0, 10, 10, 30, 10.5, 10]
    spike = {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
             "region_attributes": {"class": "dust"}}  # fmt: skip
    dataset, report = annotations.load(write(tmp_path, via([spike])))
    areas = [r.area for r in dataset.images[0].regions]
    assert len(areas) == 2 and min(areas) > 40  # the spike's body and the good region
    assert "1 sliver of the repair" in messages(report)


def test_regions_without_a_class_keep_the_users_attribute_empty(tmp_path):
    empty = {**GOOD, "region_attributes": {"Cell": ""}}
    bare = {**GOOD, "region_attributes": {}}
    boxes = {**GOOD, "region_attributes": {"kind": {}}}  # a checkbox with nothing ticked
    dataset, report = annotations.load(write(tmp_path, via([empty, bare, boxes])))
    text = messages(report)
    assert "0: empty class in attribute 'Cell': shown as 'anomaly', written back empty" in text
    assert "1 region has no class attribute" in text
    assert [r.label for r in dataset.images[0].regions][:3] == ["anomaly"] * 3
    annotations.save(dataset, tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())["_via_img_metadata"]["a.png12"]
    written = [r["region_attributes"] for r in saved["regions"]]
    assert written == [{"Cell": ""}, {}, {"kind": {}}, {"class": "dust"}]
    # a class given later (in napari) is written as usual
    dataset.images[0].regions[0].label = "dust"
    annotations.save(dataset, tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())["_via_img_metadata"]["a.png12"]
    assert saved["regions"][0]["region_attributes"] == {"Cell": "dust"}


def test_parts_of_via_projects_are_named_as_such(tmp_path):
    from napari_bioanomaly.core.model import FormatError

    for data, what in (({"_via_attributes": {"region": {}, "file": {}}}, "attributes"),
                       ({"region": {"class": {"type": "text"}}, "file": {}}, "attributes"),
                       ({"_via_settings": {"ui": {}}}, "settings")):  # fmt: skip
        with pytest.raises(FormatError, match=f"a VIA {what} file, without images or regions"):
            annotations.load(write(tmp_path, data))


def test_a_via3_project_of_a_video_reports_no_regions_and_names_the_video(tmp_path):
    project = {"project": {"vid_list": ["1"]}, "config": {}, "attribute": {},
               "file": {"1": {"fid": "1", "fname": "cells.mp4", "type": 4}},
               "view": {"1": {"fid_list": ["1"]}},
               "metadata": {f"1_{i}": {"vid": "1", "z": [i, i + 1], "xy": [], "av": {}}
                            for i in range(13)}}  # fmt: skip
    _dataset, report = annotations.load(write(tmp_path, project), read_images=False)
    assert report.regions_found == 0 and report.shapes["temporal"] == 13
    text = messages(report)
    assert "cells.mp4" in text and "view 1" not in text


def test_unreadable_images_are_named_with_the_reason(tmp_path, capfd):
    from napari_bioanomaly.core.images import ImageReadError, read_image

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage-garbage")
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    for name, reason in (("empty.png", "empty file (0 bytes)"),
                         ("bad.tif", "no image in the file"),
                         ("cut.png", "cannot read image"),
                         ("missing.png", "image file not found")):  # fmt: skip
        with pytest.raises(ImageReadError, match=re.escape(reason)) as info:
            read_image(tmp_path / name)
        assert name in str(info.value) and "pip install" not in str(info.value)
    assert capfd.readouterr().err == ""  # tifffile's log lines stay off stderr


def test_files_cut_short_are_found_from_their_end_without_decoding(tmp_path, monkeypatch):
    import tifffile
    from PIL import Image

    from napari_bioanomaly.core import images
    from napari_bioanomaly.core.images import ImageReadError, checked_shape, image_shape

    pixels = np.random.default_rng(0).integers(0, 65535, (96, 80), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ok.tif", pixels, compression="zlib")
    Image.fromarray(pixels).save(tmp_path / "ok.png")
    Image.fromarray((pixels >> 8).astype(np.uint8)).save(tmp_path / "ok.jpg")
    for name in ("ok.tif", "ok.png", "ok.jpg"):
        cut = tmp_path / f"cut{Path(name).suffix}"
        cut.write_bytes((tmp_path / name).read_bytes()[:500])
        assert image_shape(cut) == (96, 80)  # the header alone looks whole
        with pytest.raises(ImageReadError, match=r"cut\.\w+: cannot read image \("):
            checked_shape(cut)
    # whole files are not decoded: their end says so
    monkeypatch.setattr(images, "read_image", lambda path: pytest.fail(f"decoded {path}"))
    assert [checked_shape(tmp_path / n) for n in ("ok.tif", "ok.png", "ok.jpg")] == [(96, 80)] * 3
    monkeypatch.undo()
    # data after a PNG's end: decoded to be sure, and whole
    (tmp_path / "tail.png").write_bytes((tmp_path / "ok.png").read_bytes() + b"trailing")
    assert checked_shape(tmp_path / "tail.png") == (96, 80)


def test_big_images_are_read_whatever_pillows_limit_and_refused_beyond_ours(tmp_path, monkeypatch):
    from PIL import Image

    from napari_bioanomaly.core import images
    from napari_bioanomaly.core.images import ImageReadError, read_image

    Image.fromarray(np.full((300, 400), 7, np.uint16)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if it were 200 megapixels
    data = read_image(tmp_path / "big.png")
    assert data.shape == (300, 400) and data.dtype == np.uint16 and data.max() == 7
    assert Image.MAX_IMAGE_PIXELS == 1000  # the limit is back for everyone else
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100_000)
    with pytest.raises(ImageReadError, match=r"big\.png: 300x400 px .* crop or tile it first"):
        read_image(tmp_path / "big.png")


def test_file_names_match_across_unicode_forms_and_percent_is_warned(tmp_path):
    import unicodedata

    from PIL import Image

    composed = "c\u00e9llule.png"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / decomposed)  # as macOS
    dataset, report = annotations.load(write(tmp_path, via(name=composed)))
    assert dataset.images[0].shape == (32, 32), messages(report)  # found, size read
    folder, _, _ = annotations.open_folder(tmp_path)
    assert len(folder.images) == 1  # not listed twice, once per form
    dataset, _ = annotations.load(write(tmp_path, via(name="50%.png")), read_images=False)
    _, warned = annotations.save(dataset, tmp_path / "out.json")
    assert warned and "'%' in the file name stops the VIA 2 app" in warned[0]


def test_piping_the_cli_into_head_ends_quietly(tmp_path):
    import subprocess
    import sys

    closed = {"shape_attributes": {"name": "polygon", "all_points_x": [1, 10, 10, 1],
                                   "all_points_y": [1, 1, 10, 1]},
              "region_attributes": {"class": "dust"}}  # fmt: skip
    path = write(tmp_path, via([closed] * 5000))  # 5,000 lines of issues: more than a pipe holds
    code = (
        "import sys; from napari_bioanomaly.cli import main; "
        f"sys.exit(main(['inspect', {str(path)!r}, '--no-images', '--verbose']))"
    )
    import shlex

    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_clean_json_names_each_bad_number_and_text_in_lists_of_numbers():
    """Lists of numbers (a file's coordinates) are checked in one pass; one that holds a
    NaN, an infinity, a huge number, text or null is gone through item by item, each
    change named by its path, the rest kept as read."""
    from napari_bioanomaly.core.jsonio import clean_json

    data = {"x": [1, 2.5, True, None], "y": [1.0, float("nan"), 3], "z": [1e308, 1e308],
            "t": [1, "\ud800"], "w": [[1, float("-inf")], []], "ok": [1, 2.0]}  # fmt: skip
    cleaned, changes = clean_json(data)
    assert cleaned == {"x": [1, 2.5, True, None], "y": [1.0, None, 3], "z": [1e308, 1e308],
                       "t": [1, "\ufffd"], "w": [[1, None], []], "ok": [1, 2.0]}  # fmt: skip
    assert sorted(where for where, _ in changes) == ["/t/1", "/w/0/1", "/y/1"]
    assert all("NaN or Infinity" in what for where, what in changes if where != "/t/1")
