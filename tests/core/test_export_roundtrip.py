"""VIA and COCO export, and round trips VIA <-> model <-> COCO that lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly.core import annotations, coco, via
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region
from napari_bioanomaly.core.session import AnnotationSession
from tests.conftest import shared_file


def rich_dataset() -> Dataset:
    sq = np.array([[10.0, 10.0], [10.0, 30.5], [25.25, 30.5], [25.25, 10.0]])
    tri = np.array([[40.0, 40.0], [60.0, 45.0], [50.0, 70.125]])
    return Dataset(
        images=[
            ImageRecord(
                "b/one.tif",
                shape=(100, 120),
                size=1234,
                file_attributes={"cell_line": "HeLa", "note": 'quoted "x" £'},
                regions=[
                    Region(sq, "dust", {"comment": "near edge", "flags": {"blur": True}}),
                    Region(tri, "scratch", score=0.8125, source="model"),
                ],
            ),
            ImageRecord(
                "a/two.tif", shape=(100, 120), file_attributes={"cell_line": "A549"}, reviewed=True
            ),
            ImageRecord(
                "c.tif",
                shape=(80, 90),
                no_anomaly=True,
                regions=[Region(tri, "hair", source="model-accepted", class_attribute="type")],
            ),
        ],
        classes=["dust", "scratch", "hair", "unused"],
    )


def assert_same(a: Dataset, b: Dataset, *, attributes: bool = True) -> None:
    assert [im.filename for im in a.images] == [im.filename for im in b.images]
    for ia, ib in zip(a.images, b.images, strict=True):
        assert (ia.no_anomaly, ia.reviewed) == (ib.no_anomaly, ib.reviewed)
        assert ia.file_attributes == ib.file_attributes
        assert len(ia.regions) == len(ib.regions)
        for ra, rb in zip(ia.regions, ib.regions, strict=True):
            np.testing.assert_allclose(ra.polygon, rb.polygon, atol=5e-4)
            assert (ra.label, ra.score, ra.source) == (rb.label, rb.score, rb.source)
            if attributes:
                assert ra.attributes == rb.attributes


def test_via_export_round_trip_loses_nothing():
    ds = rich_dataset()
    back, report = via.read_via(json.loads(json.dumps(via.to_via_export(ds))))
    assert report.format == "via2-export" and not report.issues
    assert_same(ds, back)
    assert back.images[2].regions[0].class_attribute == "type"
    assert back.images[0].size == 1234


def test_via_project_round_trip_and_attribute_definitions():
    ds = rich_dataset()
    project = via.to_via_project(ds)
    assert project["_via_data_format_version"] == "2.0.10"
    assert project["_via_image_id_list"] == list(project["_via_img_metadata"])
    cls = project["_via_attributes"]["region"]["class"]
    assert cls["type"] == "dropdown"
    assert list(cls["options"]) == ["dust", "scratch", "hair", "unused"]
    assert project["_via_attributes"]["region"]["type"]["type"] == "dropdown"
    assert "cell_line" in project["_via_attributes"]["file"]
    back, report = via.read_via(json.loads(json.dumps(project)))
    assert report.format == "via2-project" and not report.issues
    assert_same(ds, back)
    assert back.classes == ["dust", "scratch", "hair", "unused"]
    again = via.to_via_project(back)
    assert again == project


def _checkbox_project() -> dict:
    square = {"name": "rect", "x": 10, "y": 10, "width": 20, "height": 20}
    regions = [
        {"shape_attributes": square, "region_attributes": {"type": {"dust": True, "hair": True}}},
        {"shape_attributes": square, "region_attributes": {"type": {"hair": True}}},
    ]
    definitions = {
        "region": {
            "type": {"type": "checkbox", "description": "what", "default_options": {"dust": True},
                     "options": {"dust": "Dust particle", "hair": "Hair", "scratch": ""}},
            "stage": {"type": "dropdown", "description": "", "options": {"early": "Early"},
                      "default_options": {}},
        },
        "file": {},
    }  # fmt: skip
    return {
        "_via_settings": {},
        "_via_img_metadata": {"a.png1": {"filename": "a.png", "size": 1, "regions": regions,
                                         "file_attributes": {}}},
        "_via_attributes": definitions,
    }  # fmt: skip


def test_checkbox_class_attribute_is_written_back_as_it_was_read(tmp_path):
    project = _checkbox_project()
    src = tmp_path / "proj.json"
    src.write_text(json.dumps(project))
    ds, _ = annotations.load(src, read_images=False)
    assert [r.label for r in ds.regions] == ["dust+hair", "hair"]  # documented: ids joined
    out = tmp_path / "out.json"
    annotations.save(ds, out, "via-project")
    saved = json.loads(out.read_text())
    # type, option labels, description and default options as they were: no "dust+hair"
    # option, no default added to the dropdown whose default was empty
    assert saved["_via_attributes"] == project["_via_attributes"]
    values = [r["region_attributes"] for r in saved["_via_img_metadata"]["a.png1"]["regions"]]
    assert values == [{"type": {"dust": True, "hair": True}}, {"type": {"hair": True}}]
    session = AnnotationSession.open(src)  # the Annotate widget's save, entry by entry
    session.save(force=True)
    assert json.loads(src.read_text())["_via_img_metadata"] == saved["_via_img_metadata"]
    # a class given in napari is written as a ticked option, and added as an option
    ds.regions[1].label = "fiber"
    annotations.save(ds, out, "via-project")
    saved = json.loads(out.read_text())
    assert saved["_via_img_metadata"]["a.png1"]["regions"][1]["region_attributes"] == {
        "type": {"fiber": True}
    }
    assert saved["_via_attributes"]["region"]["type"]["options"] == {
        "dust": "Dust particle", "hair": "Hair", "scratch": "", "fiber": "fiber"}  # fmt: skip


def test_checkbox_values_of_an_export_stay_checkboxes(tmp_path):
    export = _checkbox_project()["_via_img_metadata"]
    ds, _ = via.read_via(json.loads(json.dumps(export)))
    again = via.to_via_export(ds)["a.png1"]["regions"]
    assert [r["region_attributes"] for r in again] == [
        {"type": {"dust": True, "hair": True}}, {"type": {"hair": True}}]  # fmt: skip
    definition = via.to_via_project(ds)["_via_attributes"]["region"]["type"]
    assert definition["type"] == "checkbox" and set(definition["options"]) == {"dust", "hair"}


def test_via_export_regions_are_open_polygons_in_xy():
    ds = rich_dataset()
    region = via.to_via_export(ds)["b/one.tif1234"]["regions"][0]
    shape = region["shape_attributes"]
    assert shape["name"] == "polygon"
    assert shape["all_points_x"] == [10.0, 30.5, 30.5, 10.0]
    assert shape["all_points_y"] == [10.0, 10.0, 25.25, 25.25]
    assert region["region_attributes"]["class"] == "dust"


@pytest.mark.parametrize("name", ["via1_all_shapes.json", "via2_demo_export.json"])
def test_shared_files_survive_via_round_trip(name):
    ds, first = annotations.load(shared_file(name), read_images=False)
    back, report = via.read_via(json.loads(json.dumps(via.to_via_project(ds))))
    # regions the file gave no class are written back without one, and said so again;
    # regions not imported (points) are written back as they were, and skipped again
    again = [i.message for i in first.issues
             if "no class attribute" in i.message or i.kind == "skipped" or "kept as" in i.message]  # fmt: skip
    assert sorted(i.message for i in report.issues) == sorted(again)
    assert [im.unread for im in back.images] == [im.unread for im in ds.images]
    assert_same(ds, back)
    assert [r.unlabelled for r in back.regions] == [r.unlabelled for r in ds.regions]


def test_coco_export_loads_in_pycocotools_with_true_areas(tmp_path):
    pycoco = pytest.importorskip("pycocotools.coco")
    ds = rich_dataset()
    path = tmp_path / "coco.json"
    written, warnings = annotations.save(ds, path, "coco")
    assert written == [path] and warnings == []
    api = pycoco.COCO(str(path))
    assert len(api.getImgIds()) == 3 and len(api.getAnnIds()) == 3
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == [
        "dust",
        "scratch",
        "hair",
        "unused",
    ]
    ann = api.loadAnns(api.getAnnIds(imgIds=[1]))[0]
    assert ann["area"] == pytest.approx(20.5 * 15.25)  # the polygon's area, not its bbox's
    assert ann["iscrowd"] == 0
    assert ann["bbox"] == [10.0, 10.0, 20.5, 15.25]
    tri = api.loadAnns(api.getAnnIds(imgIds=[1]))[1]
    assert tri["area"] < tri["bbox"][2] * tri["bbox"][3] / 2 + 1
    mask = api.annToMask(ann)
    assert mask.shape == (100, 120)
    assert abs(int(mask.sum()) - 20.5 * 15.25) < 40


def test_coco_round_trip_keeps_polygons_classes_and_attributes():
    ds = rich_dataset()
    data, _ = coco.to_coco(ds)
    back, report = coco.read_coco(json.loads(json.dumps(data)))
    assert report.format == "coco" and not report.issues
    assert report.regions_found == report.regions_imported == 3
    assert_same(ds, back)
    assert back.images[0].shape == (100, 120)
    assert back.classes == ["dust", "scratch", "hair", "unused"]


def test_coco_to_coco_keeps_category_ids_and_supercategories(tmp_path):
    """Category ids and supercategories read from COCO are written back as read (they
    became 1, 2, ... and 'anomaly'); a class added since gets an id after them."""
    data = {
        "images": [{"id": 1, "file_name": "a.tif", "width": 64, "height": 64}],
        "categories": [
            {"id": 7, "name": "nucleus", "supercategory": "cell"},
            {"id": 3, "name": "debris", "supercategory": "artefact", "keypoints": []},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "area": 100, "iscrowd": 0,
             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]], "bbox": [10, 10, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 3, "area": 100, "iscrowd": 0,
             "segmentation": [[30, 30, 40, 30, 40, 40, 30, 40]], "bbox": [30, 30, 10, 10]},
        ],
    }  # fmt: skip
    (tmp_path / "in.json").write_text(json.dumps(data))
    ds, _ = annotations.load(tmp_path / "in.json", read_images=False)
    ds.images[0].regions.append(Region(ds.regions[0].polygon + 30, "new class"))
    _, warnings = annotations.save(ds, tmp_path / "out.json", "coco")
    assert not warnings
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["categories"] == [
        {"id": 7, "name": "nucleus", "supercategory": "cell"},
        {"id": 3, "name": "debris", "supercategory": "artefact", "keypoints": []},
        {"id": 8, "name": "new class", "supercategory": "anomaly"},
    ]
    assert [a["category_id"] for a in out["annotations"]] == [7, 3, 8]
    back, _ = annotations.load(tmp_path / "out.json", read_images=False)
    assert [r.label for r in back.regions] == ["nucleus", "debris", "new class"]
    # a part of the dataset (a fold) keeps them too
    assert coco.to_coco(ds.subset([0]))[0]["categories"] == out["categories"]


def test_via_to_coco_to_via_round_trip(tmp_path):
    ds = rich_dataset()
    annotations.save(ds, tmp_path / "a.json", "via-project")
    first, _ = annotations.load(tmp_path / "a.json", read_images=False)
    annotations.save(first, tmp_path / "b.json", "coco")
    second, _ = annotations.load(tmp_path / "b.json", read_images=False)
    annotations.save(second, tmp_path / "c.json", "via")
    third, _ = annotations.load(tmp_path / "c.json", read_images=False)
    assert_same(ds, third)


def test_coco_import_reports_rle_bbox_and_bad_references():
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        "categories": [{"id": 7, "name": "dust"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 6, 10, 4]},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": {"counts": "abc"}},
            {"id": 3, "image_id": 9, "category_id": 7, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 4, "image_id": 1, "category_id": 8, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 5, "image_id": 1, "category_id": 7, "segmentation": [[0, 0, 5, 0, 5]]},
            {
                "id": 6,
                "image_id": 1,
                "category_id": 7,
                "segmentation": [[0, 0, 5, 0, 5, 5], [20, 20, 30, 20, 30, 30]],
            },
        ],
    }
    ds, report = coco.read_coco(data, "c.json")
    assert report.regions_found == 6 and report.regions_imported == 2
    assert [r.bbox for r in ds.regions] == [(6, 5, 10, 15), (0, 0, 5, 5), (20, 20, 30, 30)]
    text = "\n".join(report.warnings)
    for expected in ("region 2: RLE", "unknown image id 9", "unknown category id 8", "odd number"):
        assert expected in text


def test_coco_export_of_missing_image_warns_and_uses_region_extent():
    ds = rich_dataset()
    ds.images[0].shape = None
    data, warnings = coco.to_coco(ds)
    assert data["images"][0]["width"] == 71 and data["images"][0]["height"] == 60
    assert "size unknown" in warnings[0]


def test_converting_an_unreadable_image_says_it_could_not_be_read_and_why(tmp_path, capsys):
    from napari_bioanomaly.cli import main

    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage" * 3)
    ds = Dataset(images=[ImageRecord("corrupt.png"), ImageRecord("gone.png")], root=tmp_path)
    _, warnings = coco.to_coco(ds)
    assert warnings[0].startswith("image 'corrupt.png': size unknown (image could not be "
                                  "read: cannot read image header (")  # fmt: skip
    assert warnings[1].startswith("image 'gone.png': size unknown (image not found)")
    # as convert says it, for a folder holding such a file
    (tmp_path / "out").mkdir()
    assert main(["convert", str(tmp_path), "--to", "coco", str(tmp_path / "out" / "c.json")]) == 0
    assert "'corrupt.png': size unknown (image could not be read: " in capsys.readouterr().err


def test_coco_export_clips_regions_to_the_image_and_says_so():
    """A region reaching outside (an image not found, so not clipped on import) is cut to
    the image: COCO readers expect coordinates and boxes inside it."""
    square = np.array([[-5.0, 60.0], [-5.0, 75.0], [15.0, 75.0], [15.0, 60.0]])  # (row, col)
    outside = np.array([[-20.0, -20.0], [-20.0, -10.0], [-10.0, -10.0], [-10.0, -20.0]])
    im = ImageRecord("gone.tif", None, regions=[Region(square, "dust"), Region(outside, "dust")])
    data, warnings = coco.to_coco(Dataset(images=[im], classes=["dust"]))
    (ann,) = data["annotations"]  # the region wholly outside is not written
    assert ann["bbox"] == [60.0, 0.0, 15.0, 15.0]
    assert ann["area"] == pytest.approx(15 * 15)
    xs, ys = ann["segmentation"][0][0::2], ann["segmentation"][0][1::2]
    assert min(xs) >= 0 and min(ys) >= 0
    assert any("1 region reaches outside the image" in w and "clipped" in w for w in warnings)
    assert any("1 region lies wholly outside the image" in w and w.endswith("not written")
               for w in warnings)  # fmt: skip


def test_a_subset_keeps_classes_attributes_and_settings():
    ds = rich_dataset()
    ds.attribute_definitions = {"region": {"class": {"type": "radio"}}, "file": {}}
    ds.settings = {"ui": {"x": 1}}
    part = ds.subset([2, 0])
    assert [im.filename for im in part.images] == [ds.images[2].filename, ds.images[0].filename]
    assert part.classes == ds.classes and part.classes is not ds.classes
    assert (part.root, part.class_attribute) == (ds.root, ds.class_attribute)
    assert part.attribute_definitions == ds.attribute_definitions and part.settings == ds.settings


def test_per_image_exports_say_what_they_do_not_keep(tmp_path, capsys):
    """Fiji ROI sets, GeoJSON and label masks hold regions only: the file attributes, the
    images without regions (and their "checked: no anomaly"), and for ROI sets the
    regions' scores and sources are named in warnings, here and by convert."""
    from napari_bioanomaly.cli import main

    square = np.array([[1.0, 1], [1, 9], [9, 9], [9, 1]])
    ds = Dataset(images=[
        ImageRecord("a.png", (20, 20), {"cell_line": "HeLa"},
                    regions=[Region(square, "dust", score=0.8, source="model")]),
        ImageRecord("b.png", (20, 20), {"qc": "ok"}, no_anomaly=True),
        ImageRecord("c.png", (20, 20)),
    ])  # fmt: skip
    _, imagej = annotations.save(ds, tmp_path / "roi", "imagej")
    assert imagej == [
        "Fiji ROI sets keep no file attributes: cell_line, qc not written",
        "2 images without regions, 1 of them marked checked: no anomaly, get no file",
        "Fiji ROI sets keep no region scores or sources: 1 region had them",
    ]
    one = Dataset(images=[ds.images[0], ds.images[2]])
    assert "1 image without regions gets no file" in annotations.save(one, tmp_path / "r1",
                                                                      "imagej")[1]  # fmt: skip
    _, geo = annotations.save(ds, tmp_path / "geo", "geojson")
    assert geo == ["GeoJSON files keep no file attributes: cell_line, qc not written", imagej[1]]
    _, masks = annotations.save(ds, tmp_path / "masks", "masks")
    assert masks == ["label masks keep no file attributes: cell_line, qc not written"]
    _, none = annotations.save(ds, tmp_path / "a.json", "via-project")
    assert none == []
    ds.images[0].reviewed = True  # said too (it was lost without a word)
    _, geo = annotations.save(ds, tmp_path / "geo2", "geojson")
    assert "GeoJSON files keep no 'reviewed' marks: 1 image had one" in geo
    annotations.save(ds, tmp_path / "ann.json", "via-project")
    assert main(["convert", str(tmp_path / "ann.json"), "--to", "imagej",
                 str(tmp_path / "roi2")]) == 0  # fmt: skip
    assert "keep no region scores or sources" in capsys.readouterr().err


def test_a_region_without_a_class_adds_no_option_to_the_users_definition(tmp_path):
    project = _checkbox_project()
    entry = next(iter(project["_via_img_metadata"].values()))
    entry["regions"][1]["region_attributes"] = {"type": {}}  # nothing ticked
    ds, _ = via.read_via(json.loads(json.dumps(project)))
    assert "anomaly" in ds.class_names()  # shown so
    options = via.to_via_project(ds)["_via_attributes"]["region"]["type"]["options"]
    assert options == project["_via_attributes"]["region"]["type"]["options"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(project))
    session = AnnotationSession.open(path)
    session.go_to(0)
    session.set_regions(list(session.image.regions))
    session.touch()
    session.save()
    saved = json.loads(path.read_text())["_via_attributes"]["region"]["type"]["options"]
    assert saved == project["_via_attributes"]["region"]["type"]["options"]
