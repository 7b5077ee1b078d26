"""VIA import: every version, every shape, and malformed entries reported, not fatal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import FormatError
from napari_bioanomaly.core.via import ImportOptions, detect_format, read_via, to_via_project
from tests.conftest import shared_file


def via2_export(regions, filename="a.png", size=-1, file_attributes=None):
    return {
        f"{filename}{size}": {
            "filename": filename,
            "size": size,
            "regions": regions,
            "file_attributes": file_attributes or {},
        }
    }


def polygon(xs, ys, **attrs):
    return {
        "shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
        "region_attributes": attrs,
    }


SQUARE = ([10, 20, 20, 10], [30, 30, 40, 40])


# --------------------------------------------------------------------------- shared real files

EXPECTED = {
    # file: (format, images, regions, shape counts) from ../shared/data/via/README.md
    "via1_all_shapes.json": (
        "via1-export",
        3,
        12,
        {"ellipse": 3, "rect": 2, "point": 5, "circle": 1, "polygon": 1},
    ),
    "via2_demo_export.json": ("via2-export", 2, 4, {"polygon": 1, "rect": 2, "ellipse": 1}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_via_files_import_with_readme_counts(name):
    path = shared_file(name)
    fmt, n_images, n_regions, shapes = EXPECTED[name]
    dataset, report = annotations.load(path, read_images=False)
    assert report.format == fmt
    assert report.images == len(dataset.images) == n_images
    assert report.regions_found == n_regions
    assert dict(report.shapes) == shapes
    points = shapes.get("point", 0)
    assert report.regions_imported == n_regions - points
    assert len(dataset.regions) == n_regions - points
    assert report.counts()["skipped"] == points


def test_shared_via1_points_as_discs_imports_everything():
    path = shared_file("via1_all_shapes.json")
    dataset, report = annotations.load(
        path, options=ImportOptions(point_radius=4), read_images=False
    )
    assert report.regions_imported == 12
    discs = [r for r in dataset.regions if r.shape == "point"]
    assert len(discs) == 5
    assert all(r.area == pytest.approx(math.pi * 16, rel=0.05) for r in discs)


def test_shared_via1_keeps_special_characters_and_closing_vertex_removed():
    dataset, report = annotations.load(shared_file("via1_all_shapes.json"), read_images=False)
    swan = dataset.image("sinus_test_pattern.jpg")
    assert swan.file_attributes["caption"] == 'a swan in geneve lake"'
    (region,) = swan.regions
    assert region.label == 'a "white" swan, good fortune'
    assert len(region.polygon) == 11  # 12 vertices in the file, the last repeats the first
    assert report.counts()["closed"] == 1
    assert dataset.image("a_swan_swimming_in_geneve_lake.jpg").file_attributes["caption"] == "  "


def test_shared_via2_demo_class_from_type_and_size_minus_one():
    dataset, _ = annotations.load(shared_file("via2_demo_export.json"), read_images=False)
    assert [im.filename for im in dataset.images] == [
        "adutta_swan.jpg",
        "wikimedia_death_of_socrates.jpg",
    ]
    assert all(im.size == -1 for im in dataset.images)
    labels = [r.label for r in dataset.regions]
    assert labels == ["bird", "human", "human", "cup"]
    socrates = dataset.images[1].regions[1]
    assert socrates.class_attribute == "type"
    assert socrates.attributes["name"] == "Socrates"
    assert socrates.attributes["image_quality"] == {"frontal": True, "good_illumination": True}


# --------------------------------------------------------------------------- versions


def test_detect_format_names_each_version():
    assert detect_format(via2_export([])) == "via2-export"
    v1 = {"a.png1": {"filename": "a.png", "size": 1, "regions": {}, "file_attributes": {}}}
    assert detect_format(v1) == "via1-export"
    assert detect_format({"_via_img_metadata": {}}) == "via2-project"
    assert detect_format({"project": {}, "metadata": {}, "file": {}}) == "via3-project"
    assert detect_format({"images": [], "annotations": []}) == "coco"
    for other in ({}, [], {"a": 1}, {"type": "FeatureCollection"}, "text", 3):
        assert detect_format(other) is None


def test_via1_regions_as_object_closed_polygon():
    data = {
        "x.png99": {
            "fileref": "",
            "size": 99,
            "filename": "x.png",
            "base64_img_data": "",
            "file_attributes": {},
            "regions": {
                "0": polygon([10, 20, 20, 10, 10], [30, 30, 40, 40, 30], anomaly="dust"),
            },
        }
    }
    dataset, report = read_via(data)
    assert report.format == "via1-export"
    (region,) = dataset.regions
    assert region.label == "dust"
    assert region.polygon.tolist() == [[30, 10], [30, 20], [40, 20], [40, 10]]  # row/col
    assert region.area == 100


def test_via2_project_order_attributes_and_version():
    meta = via2_export([polygon(*SQUARE, class_="x")], "b.png") | via2_export(
        [polygon(*SQUARE, **{"class": "scratch"})], "a.png"
    )
    project = {
        "_via_settings": {"core": {"buffer_size": "18"}},
        "_via_img_metadata": meta,
        "_via_attributes": {
            "region": {"class": {"type": "dropdown", "options": {"scratch": "", "dust": ""}}},
            "file": {},
        },
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": ["a.png-1", "b.png-1", "ghost.png-1"],
    }
    dataset, report = read_via(project)
    assert report.format == "via2-project" and report.version == "2.0.10"
    assert [im.filename for im in dataset.images] == ["a.png", "b.png"]
    assert dataset.classes == ["scratch", "dust"]
    assert dataset.settings == {"core": {"buffer_size": "18"}}
    assert any("ghost.png-1" in w and "no metadata" in w for w in report.warnings)


def test_via2_project_without_version_or_id_list():
    meta = via2_export([polygon(*SQUARE, type="hair")])
    dataset, report = read_via(
        {"_via_settings": {}, "_via_img_metadata": meta, "_via_attributes": {}}
    )
    assert report.format == "via2-project" and report.version is None
    assert dataset.regions[0].label == "hair"


def test_file_name_comes_from_filename_not_key():
    data = {"totally-wrong-key": {"filename": "sub\\dir\\c.png", "size": "12", "regions": []}}
    dataset, _ = read_via(data)
    assert dataset.images[0].filename == "sub/dir/c.png"
    assert dataset.images[0].size == 12


def test_via3_project_regions_files_and_temporal_segments():
    data = {
        "project": {"pid": "p", "rev": "1", "data_format_version": "3.1.1", "vid_list": ["1", "2"]},
        "config": {},
        "attribute": {
            "1": {
                "aname": "kind",
                "anchor_id": "FILE1_Z0_XY1",
                "type": 3,
                "options": {"0": "dust", "1": "scratch"},
                "default_option_id": "0",
            },
            "2": {"aname": "cell_line", "anchor_id": "FILE1_Z0_XY0", "type": 1},
        },
        "file": {
            "1": {"fid": 1, "fname": "one.png", "type": 2, "loc": 1, "src": ""},
            "2": {"fid": "2", "fname": "two.png", "type": 2, "loc": 1, "src": ""},
        },
        "view": {"1": {"fid_list": [1]}, "2": {"fid_list": ["2"]}},
        "metadata": {
            "1_a": {
                "vid": "1",
                "flg": 0,
                "z": [],
                "xy": [7, 10, 30, 20, 30, 20, 40],
                "av": {"1": "1"},
            },
            "1_b": {"vid": "1", "flg": 0, "z": [], "xy": [2, 0, 0, 10, 5], "av": {"1": "0"}},
            "1_c": {"vid": "1", "flg": 0, "z": [], "xy": [1, 5, 5], "av": {}},
            "1_d": {"vid": "1", "flg": 0, "z": [1.5, 3.0], "xy": [], "av": {}},
            "2_f": {"vid": "2", "flg": 0, "z": [], "xy": [], "av": {"2": "HeLa"}},
            "2_e": {"vid": "2", "flg": 0, "z": [], "xy": [4, 50, 50, 10, 5], "av": {}},
            "2_g": {"vid": "2", "flg": 0, "z": [], "xy": [6, 0, 0, 10, 0, 10, 10], "av": {}},
        },
    }
    dataset, report = read_via(data)
    assert report.format == "via3-project" and report.version == "3.1.1"
    assert report.regions_found == 5  # neither the file-level entry 2_f nor the time segment
    assert dict(report.shapes) == {
        "polygon": 1,
        "rect": 1,
        "point": 1,
        "temporal": 1,
        "ellipse": 1,
        "polyline": 1,
    }
    assert report.regions_imported == 4
    one, two = dataset.images
    assert [r.label for r in one.regions] == ["scratch", "dust"]  # option ids -> labels
    assert two.file_attributes == {"cell_line": "HeLa"}
    assert any("temporal" in w for w in report.warnings)
    polyline = two.regions[1]
    assert polyline.shape == "polyline"
    # buffered 3 px wide along 20 px of path: about 3 * 20 plus round caps
    assert 55 < polyline.area < 75


# --------------------------------------------------------------------------- shapes and classes


def test_rect_circle_ellipse_become_polygons_in_row_col():
    regions = [
        {"shape_attributes": {"name": "rect", "x": 10, "y": 20, "width": 30, "height": 5}},
        {"shape_attributes": {"name": "circle", "cx": 50, "cy": 60, "r": "10.5"}},
        {"shape_attributes": {"name": "ellipse", "cx": 50, "cy": 60, "rx": 20, "ry": 5}},
        {
            "shape_attributes": {
                "name": "ellipse",
                "cx": 50,
                "cy": 60,
                "rx": 20,
                "ry": 5,
                "theta": math.pi / 2,
            }
        },
    ]
    dataset, report = read_via(via2_export(regions))
    rect, circle, ellipse, rotated = dataset.regions
    assert rect.bbox == (20, 10, 25, 40)
    assert circle.area == pytest.approx(math.pi * 10.5**2, rel=0.01)
    assert ellipse.area == pytest.approx(math.pi * 100, rel=0.01)
    # unrotated: wide along columns (x); rotated by 90 degrees: tall along rows (y)
    r0, c0, r1, c1 = ellipse.bbox
    assert (c1 - c0, r1 - r0) == pytest.approx((40, 10), abs=0.1)
    r0, c0, r1, c1 = rotated.bbox
    assert (c1 - c0, r1 - r0) == pytest.approx((10, 40), abs=0.1)
    assert report.counts()["converted"] == 3


def test_polyline_width_is_configurable():
    line = {
        "shape_attributes": {"name": "polyline", "all_points_x": [0, 100], "all_points_y": [50, 50]}
    }
    thin, _ = read_via(via2_export([line]), options=ImportOptions(polyline_width=2))
    wide, _ = read_via(via2_export([line]), options=ImportOptions(polyline_width=8))
    # width x length, plus two round caps (at most a disc of that width)
    assert 200 < thin.regions[0].area < 200 + math.pi * 1**2
    assert 800 < wide.regions[0].area < 800 + math.pi * 4**2


@pytest.mark.parametrize(
    ("attrs", "label", "key"),
    [
        ({"class": "dust", "type": "x"}, "dust", "class"),
        ({"type": "hair", "label": "x"}, "hair", "type"),
        ({"Anomaly": "scratch", "note": "x"}, "scratch", "Anomaly"),
        ({"name": "spot"}, "spot", "name"),
        ({"name": "a", "note": "b"}, "anomaly", None),
        ({}, "anomaly", None),
        ({"class": {"dust": True, "hair": False}}, "dust", "class"),
        ({"class": "  "}, "anomaly", "class"),
    ],
)
def test_class_attribute_default_rule(attrs, label, key):
    dataset, _ = read_via(via2_export([polygon(*SQUARE, **attrs)]))
    (region,) = dataset.regions
    assert region.label == label
    assert region.class_attribute == key


def test_configured_class_attribute():
    regions = [polygon(*SQUARE, kind="dust", type="ignored")]
    dataset, _ = read_via(via2_export(regions), options=ImportOptions(class_attribute="kind"))
    assert dataset.regions[0].label == "dust"
    assert dataset.regions[0].attributes == {"type": "ignored"}


def test_score_source_and_no_anomaly_flag():
    regions = [polygon(*SQUARE, **{"class": "dust", "score": "0.875", "source": "model"})]
    data = via2_export(regions, file_attributes={"cell_line": "A549", "no_anomaly": "true"})
    dataset, _ = read_via(data)
    region = dataset.regions[0]
    assert region.score == 0.875 and region.source == "model"
    assert dataset.images[0].no_anomaly is True
    assert dataset.images[0].file_attributes == {"cell_line": "A549"}


# --------------------------------------------------------------------------- malformed input


def test_malformed_regions_are_reported_and_the_rest_loads():
    regions = [
        polygon([1, 2, 3], [1, 2], **{"class": "a"}),  # mismatched lengths
        polygon([1, "x", 3], [1, 2, 3]),  # non-numeric
        polygon([0, 10, 0, 10], [0, 10, 10, 0], **{"class": "bowtie"}),  # self-intersecting
        {"shape_attributes": {"name": "hexagon"}},  # unknown shape
        {"shape_attributes": {"name": "rect", "x": 0}},  # missing field
        {"region_attributes": {}},  # no shape
        "not a region",
        polygon([1, 1, 1], [2, 2, 2]),  # degenerate
        polygon(*SQUARE, **{"class": "good"}),
        polygon(["10", "20.5", 20, 10], [30, 30, "4e1", 40], **{"class": "strings"}),
    ]
    dataset, report = read_via(via2_export(regions), file="bad.json")
    assert report.regions_found == 10
    assert [r.label for r in dataset.regions] == ["bowtie", "bowtie", "good", "strings"]
    assert report.regions_imported == 3
    counts = report.counts()
    assert counts["skipped"] == 7
    assert counts["repaired"] == 1 and counts["split"] == 1
    text = "\n".join(report.warnings)
    for expected in (
        "region 0: polygon: 3 x coordinates but 2 y coordinates",
        "region 1: polygon: all_points_x[1] is not a number: 'x'",
        "region 3: hexagon: unknown shape",
        "region 4: rect: field 'y' missing",
        "region 5",
        "region 6: region is not an object",
        "region 7: degenerate polygon",
    ):
        assert expected in text
    per_region = [w for w in report.warnings
                  if "no class attribute" not in w and "(see 'skipped')" not in w]  # fmt: skip
    assert all(w.startswith("[") and "bad.json, image 'a.png'" in w for w in per_region)
    # the 7 regions not imported stay as they were, written back when the file is saved
    skipped = [regions[i] for i in (0, 1, 3, 4, 5, 6, 7)]
    assert sorted(map(repr, dataset.images[0].unread)) == sorted(map(repr, skipped))
    assert "7 regions not imported (see 'skipped') are kept as they are" in text
    written = to_via_project(dataset)["_via_img_metadata"]
    again = next(iter(written.values()))["regions"]
    assert [r for r in again if r in skipped] == dataset.images[0].unread
    back, report_again = read_via(written)
    assert report_again.counts()["skipped"] == 7 and len(back.regions) == 4


def test_non_via_json_gives_one_clear_error(write_json):
    path = write_json({"hello": "world"})
    with pytest.raises(FormatError, match=r"neither VIA .* nor COCO"):
        annotations.load(path)
    bad = path.with_name("broken.json")
    bad.write_text('{"a": [1, 2', encoding="utf-8")
    with pytest.raises(FormatError, match=r"broken.json: malformed JSON at line 1") as caught:
        annotations.load(bad)
    assert "the file ends early" in str(caught.value)  # a save or a copy cut short


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"a": "abc', "column 7: a string that starts here never ends (the file ends early"),
        ('{"a": tru', "column 7: expecting value (the file ends early"),  # cut in a word
        ('{"a": bad, "b": 1}', "column 7: expecting value"),
        ('{"a": "x\ny"}', "column 9: a line break, tab or other control character inside"),
        ('{"a" 1}', "column 6: expecting ':' delimiter"),
        ('{"a": 1}\nx', "line 2, column 1: extra data"),  # not "the file ends early"
        (" \n", "empty file: no JSON in it"),
    ],
)
def test_a_json_error_is_said_whole(tmp_path, text, said):
    """The standard library's "Unterminated string starting at" (and "Invalid control
    character at") end on a position they leave out: the message read cut off."""
    path = tmp_path / "x.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError) as caught:
        annotations.load(path)
    assert str(caught.value).startswith(f"{path}: ") and said in str(caught.value)
    assert not str(caught.value).endswith(" at")
    assert ("ends early" in said) == ("ends early" in str(caught.value))


def test_vertices_outside_the_image_are_clipped_once_the_size_is_known(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((50, 60), np.uint16))
    regions = [
        polygon([-10, 30, 30, -10], [-5, -5, 20, 20], **{"class": "edge"}),
        polygon([100, 120, 120], [100, 100, 120], **{"class": "outside"}),
    ]
    (tmp_path / "ann.json").write_text(json.dumps(via2_export(regions, "a.tif")))
    dataset, report = annotations.load(tmp_path / "ann.json")
    assert dataset.images[0].shape == (50, 60)
    (region,) = dataset.regions
    assert region.bbox == (0, 0, 20, 30)
    assert report.counts()["clipped"] == 1
    assert any("outside the 50x60 image" in w for w in report.warnings)
    assert report.regions_imported == 1


def test_every_message_names_the_region_by_its_index_in_the_file(tmp_path):
    """Clipping happens once the image is read, after points were skipped and polygons
    split: it still names the region as the file numbers it, and the file it is in."""
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((50, 60), np.uint16))
    point = {"shape_attributes": {"name": "point", "cx": 5, "cy": 5},
             "region_attributes": {"class": "dust"}}  # fmt: skip
    bowtie = polygon([0, 10, 0, 10], [0, 0, 10, 10], **{"class": "dust"})  # splits in two
    edge = polygon([40, 70, 70, 40], [40, 40, 45, 45], **{"class": "dust"})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(via2_export([point, point, bowtie, edge], "a.tif")))
    _, report = annotations.load(path)
    where = {(i.kind, i.region, i.file) for i in report.issues if i.region is not None}
    assert ("skipped", "0", str(path)) in where and ("skipped", "1", str(path)) in where
    assert ("split", "2", str(path)) in where
    clipped = [(i.region, i.file) for i in report.issues if i.kind == "clipped"]
    assert clipped == [("3", str(path))]

    # GeoJSON read as one file of a folder: the file, not the folder, and the feature index
    folder = tmp_path / "qp"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((50, 60), np.uint16))
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[1, 1], [5, 1], [5, 5], [1, 1]]], [[[10, 10], [15, 10], [15, 15], [10, 10]]]]}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [90, 40]]}},
    ]  # fmt: skip
    (folder / "a.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                  "features": features}))  # fmt: skip
    _, report = annotations.open_dataset(folder)
    clipped = [(i.region, i.file) for i in report.issues if i.kind == "clipped"]
    assert clipped == [("2", str(folder / "a.geojson"))]


def test_image_paths_cannot_escape_the_dataset_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.png").write_bytes(b"not really")
    path = tmp_path / "data" / "ann.json"
    path.write_text(json.dumps(via2_export([polygon(*SQUARE)], "../secret.png")))
    dataset, report = annotations.load(path)
    assert dataset.images[0].shape is None
    assert any("outside the dataset folder" in w for w in report.warnings)


def test_duplicate_file_names_are_merged_and_reported():
    data = via2_export([polygon(*SQUARE, **{"class": "a"})], size=1) | via2_export(
        [polygon(*SQUARE, **{"class": "b"})], size=2
    )
    dataset, report = read_via(data)
    assert len(dataset.images) == 1
    assert [r.label for r in dataset.regions] == ["a", "b"]
    assert any("more than one entry" in w for w in report.warnings)


def test_case_variants_of_class_names_are_warned(write_json):
    regions = [polygon(*SQUARE, **{"class": "Cell"}), polygon(*SQUARE, **{"class": "cell"})]
    _, report = annotations.load(write_json(via2_export(regions)), read_images=False)
    assert any("differ only in case" in w for w in report.warnings)


def test_bad_vertex_lists_are_named_by_the_first_bad_value():
    """What the fast reading of vertex lists hands to the named checks (booleans numpy
    would read as 0 and 1, NaN, infinity, coordinates out of range, nested lists)."""
    nan, inf = float("nan"), float("inf")
    regions = [
        polygon([1, True, 3], [1, 2, 3]),
        polygon([1, 2, 3], [1, 2, nan]),
        polygon([1, inf, 3], [1, 2, 3]),
        polygon([1, 2e8, 3], [1, 2, 3]),
        polygon([[1], [2], [3]], [1, 2, 3]),
        polygon([], []),
        polygon("1,2,3", [1, 2, 3]),
        polygon([0, 10, 10, 0], [0, 0, 1e7, 1e7], **{"class": "at the limit"}),
    ]
    dataset, report = read_via(via2_export(regions), file="bad.json")
    assert [r.label for r in dataset.regions] == ["at the limit"]
    text = "\n".join(report.warnings)
    for expected in (
        "region 0: polygon: all_points_x[1] is a boolean, expected a number",
        "region 1: polygon: all_points_y[2] is not finite: nan",
        "region 2: polygon: all_points_x[1] is not finite: inf",
        "region 3: polygon: all_points_x holds coordinates beyond +-1e+07 px",
        "region 4: polygon: all_points_x[0] is not a number: list",
        "region 5: degenerate polygon",
        "region 6: polygon: all_points_x is not a list",
    ):
        assert expected in text, text
