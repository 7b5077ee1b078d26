"""What other tools' files say survives import and export: a region attribute named like the
class attribute, QuPath's names, colours, measurements and detections, Fiji's automatic
ROI names, and checkbox option ids holding a ``+``."""

from __future__ import annotations

import json

import numpy as np

from napari_bioanomaly.core import annotations, via
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region

SQUARE = [[1, 1], [9, 1], [9, 9], [1, 9], [1, 1]]


def square(r: float, c: float, s: float) -> np.ndarray:
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


def feature(props: dict, ring: list | None = None) -> dict:
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "Polygon", "coordinates": [ring or SQUARE]}}  # fmt: skip


def text(report) -> str:
    return "\n".join(report.warnings)


def reread_as_via(ds: Dataset, tmp_path, name: str = "edits.via.json") -> Dataset:
    annotations.save(ds, tmp_path / name, "via-project")
    back, _ = annotations.load(tmp_path / name, read_images=False)
    return back


# --------------------------------------------------------------- 1. class attribute clash


def test_a_coco_attribute_named_class_does_not_replace_the_category(tmp_path):
    """COCO ``attributes.class`` used to overwrite the category on VIA export: the region
    came back as ``hair`` though COCO said ``dust``."""
    coco = {
        "images": [{"id": 1, "file_name": "a.tif", "width": 20, "height": 20}],
        "categories": [{"id": 7, "name": "dust"}],
        "annotations": [{"id": 42, "image_id": 1, "category_id": 7, "segmentation":
                         [[1, 1, 9, 1, 9, 9, 1, 9]], "attributes": {"class": "hair", "n": "2"}}],
    }  # fmt: skip
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    ds, report = annotations.load(path, read_images=False)
    (region,) = ds.regions
    assert region.label == "dust"
    assert region.attributes == {"class (imported)": "hair", "n": "2"}
    assert (
        f"[class] {path}, image 'a.tif', region 42: region attribute 'class' ('hair') has the "
        "name of the class attribute: kept as 'class (imported)'; the class stays 'dust'"
    ) in report.warnings
    back = reread_as_via(ds, tmp_path)
    assert [(r.label, r.attributes) for r in back.regions] == [
        ("dust", {"class (imported)": "hair", "n": "2"})
    ]


def test_a_qupath_metadata_class_does_not_replace_the_classification(tmp_path):
    data = {"type": "FeatureCollection", "features": [
        feature({"classification": {"name": "dust"}, "metadata": {"class": "hair"}}),
        feature({"metadata": {"class": "hair"}}),  # no classification: stays without a class
    ]}  # fmt: skip
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(data))
    ds, report = annotations.load(path, read_images=False)
    assert [r.label for r in ds.regions] == ["dust", "anomaly"]
    assert all(r.attributes == {"class (imported)": "hair"} for r in ds.regions)
    assert "region 0: region attribute 'class' ('hair') has the name of the class attribute: " \
        "kept as 'class (imported)'; the class stays 'dust'" in text(report)  # fmt: skip
    assert "region 1: region attribute 'class' ('hair') has the name of the class attribute: " \
        "kept as 'class (imported)'; the region has no class" in text(report)  # fmt: skip
    back = reread_as_via(ds, tmp_path)
    assert [r.label for r in back.regions] == ["dust", "anomaly"]
    assert back.regions[1].unlabelled is not None  # still without a class
    assert all(r.attributes == {"class (imported)": "hair"} for r in back.regions)


def test_the_class_wins_over_an_attribute_of_its_name_on_via_export():
    """An attribute set in napari or by a script with the class attribute's name: the class
    is written to the class attribute, the attribute beside it, and the export says so."""
    taken = {"class": "hair", "class (imported)": "old"}
    ds = Dataset(images=[ImageRecord("a.tif", regions=[Region(square(1, 1, 5), "dust", taken)])])
    (entry,) = via.to_via_export(ds).values()
    assert entry["regions"][0]["region_attributes"] == {
        "class": "dust", "class (imported 2)": "hair", "class (imported)": "old"}  # fmt: skip
    assert via.export_warnings(ds) == [
        "image 'a.tif', region 0: its attribute 'class' has the name of the class attribute: "
        "written as 'class (imported 2)', the class as 'class'"
    ]


# ------------------------------------------------ 2. QuPath names, colours, detections


def qupath_objects() -> dict:
    """Three objects as QuPath 0.4 exports them (File > Export objects as GeoJSON)."""
    tumor = {"name": "Tumor", "color": [200, 0, 0]}
    nucleus = {"type": "Polygon", "coordinates": [[[3, 3], [5, 3], [5, 5], [3, 3]]]}
    return {"type": "FeatureCollection", "features": [
        feature({"objectType": "annotation", "name": "region 1", "color": [255, 0, 0],
                 "classification": tumor, "isLocked": False,
                 "measurements": {"Area µm^2": 64.0, "Perimeter µm": 32.0}}),
        feature({"objectType": "detection", "classification": tumor,
                 "measurements": {"Nucleus: Area": 30.5, "score": 0.75}}),
        {**feature({"objectType": "cell", "classification": tumor, "isLocked": True,
                    "name": 12}), "nucleusGeometry": nucleus},
    ]}  # fmt: skip


def test_qupath_names_colours_and_detections_are_kept_and_written_back(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(qupath_objects()))
    ds, _ = annotations.load(path, read_images=False)
    assert [r.attributes for r in ds.regions] == [
        {"name": "region 1", "color": "#ff0000"},
        {"objectType": "detection"},
        {"name": 12, "objectType": "cell"},
    ]
    assert [r.score for r in ds.regions] == [None, 0.75, None]
    # a detection stays a detection, through a VIA project (the Annotate widget's edits) too
    for source in (ds, reread_as_via(ds, tmp_path)):
        annotations.save(source, tmp_path / "out", "geojson")
        props = [f["properties"] for f in
                 json.loads((tmp_path / "out" / "a.geojson").read_text())["features"]]  # fmt: skip
        assert [p["objectType"] for p in props] == ["annotation", "detection", "cell"]
        assert (props[0]["name"], props[0]["color"]) == ("region 1", [255, 0, 0])
        assert "metadata" not in props[0]  # QuPath's own fields, not key-value metadata
        assert props[2]["attributes"] == {"name": 12}  # not text: not QuPath's name
    again, _ = annotations.load(tmp_path / "out" / "a.geojson", read_images=False)
    assert [r.attributes for r in again.regions] == [r.attributes for r in ds.regions]


def test_what_qupath_objects_lose_is_said_once_per_file(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(qupath_objects()))
    _, report = annotations.load(path, read_images=False)
    where = f"[dropped] {path}, image 'a.tif': "
    assert [w for w in report.warnings if "not kept" in w] == [
        where + "measurements of 2 features not kept (Area µm^2, Perimeter µm, Nucleus: "
        "Area): only 'score' is read; QuPath computes measurements again (Analyze > "
        "Calculate features)",
        where + "classification colours of 3 features not kept: each class gets "
        "napari-bioanomaly's colour, which a GeoJSON export writes",
        where + "not kept: nucleusGeometry (1 feature), properties.isLocked (1 feature)",
    ]
    assert "[dropped] 3 x read but not kept (not written back)" in report.summary()


def test_a_qupath_name_or_object_type_that_is_not_text_is_said_not_kept(tmp_path):
    """QuPath writes both as text: a list or an object there (a script's, a damaged
    file's) was kept as an attribute, and one nested deep enough was lost by the next save."""
    deep: object = None
    for _ in range(120):
        deep = [deep]
    objects = qupath_objects()
    objects["features"][0]["properties"].update(objectType=deep, name={"text": "x"})
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(objects))
    ds, report = annotations.load(path, read_images=False)
    assert {"objectType", "name"}.isdisjoint(ds.regions[0].attributes)
    (line,) = [w for w in report.warnings if w.endswith("(1 feature)") or "properties.name" in w]
    assert "properties.name (1 feature)" in line and "properties.objectType (1 feature)" in line
    annotations.save(ds, tmp_path / "a.json", "via-project")
    again, _ = annotations.load(tmp_path / "a.json", read_images=False)
    assert [r.attributes for r in again.regions] == [r.attributes for r in ds.regions]


# ----------------------------------------------------- 3. Fiji's automatic ROI names


def test_rois_named_by_imagej_have_no_class_and_keep_their_name(tmp_path):
    """A ROI Manager's automatic names (centre ``yyyy-xxxx``, ``zzzz-yyyy-xxxx`` in a
    stack) or a bare index used to become one class per ROI (``0012``, ``0001-0012``, ...)."""
    from roifile import ROI_TYPE, ImagejRoi, roiwrite

    def rect(name: str, left: int) -> ImagejRoi:
        roi = ImagejRoi(roitype=ROI_TYPE.RECT, left=left, top=10, right=left + 6, bottom=16)
        roi.name = name
        return roi

    rois = [rect("0013-0023", 20), rect("0001-0013-0033", 30), rect("7", 40),
            rect("", 50), rect("scratch-5", 60)]  # fmt: skip
    path = tmp_path / "a_rois.zip"
    roiwrite(path, rois, name=["0013-0023", "0001-0013-0033", "7", "dust-4", "scratch-5"])
    ds, report = annotations.load(path, read_images=False)
    assert [r.label for r in ds.regions] == ["anomaly", "anomaly", "anomaly", "dust", "scratch"]
    assert ds.class_names() == ["anomaly", "dust", "scratch"]  # the entry names the 4th
    assert [r.attributes for r in ds.regions[:3]] == [
        {"name": "0013-0023"}, {"name": "0001-0013-0033"}, {"name": "7"}]  # fmt: skip
    assert [w for w in report.warnings if "without a class" in w] == [
        f"[class] {path}, image 'a.tif': 3 ROIs without a class in the name (no name, or "
        "an automatic name such as ImageJ's 0012-0345 or roifile's UUID): shown as 'anomaly', written back "
        "without a class; an automatic name is kept as the region attribute 'name'"
    ]
    # saved as VIA (the Annotate widget's edits) they stay without a class
    back = reread_as_via(ds, tmp_path)
    assert [r.unlabelled is not None for r in back.regions] == [True, True, True, False, False]
    assert back.regions[0].attributes == {"name": "0013-0023"}
    # and Fiji gets them back under their own names, not as the class 'anomaly'
    (out,), warnings = annotations.save(back, tmp_path / "rois", "imagej")
    from roifile import roiread

    assert [r.name for r in roiread(out)] == [
        "0013-0023", "0001-0013-0033", "7", "dust-004", "scratch-005"]  # fmt: skip
    assert not any("region attributes" in w for w in warnings)  # the names are written


def test_rois_roifile_named_by_uuid_have_no_class_and_keep_their_name(tmp_path):
    """roifile names a ROI made without a name by a UUID (older Cellpose's save_rois
    writes only such ROIs): 15 cells became 15 classes ``57a347dc-f20a-11f1-...``."""
    from roifile import ImagejRoi, roiread, roiwrite

    rois = [ImagejRoi.frompoints(np.array([[10.0 + 20 * i, 10], [18 + 20 * i, 10],
                                           [18 + 20 * i, 18]])) for i in range(4)]  # fmt: skip
    names = [roi.name for roi in rois]
    assert all(len(name) == 36 for name in names)  # roifile's uuid1
    path = tmp_path / "a_rois.zip"
    roiwrite(path, rois)
    ds, report = annotations.load(path, read_images=False)
    assert ds.class_names() == ["anomaly"]
    assert [r.attributes for r in ds.regions] == [{"name": name} for name in names]
    assert any("4 ROIs without a class in the name" in w for w in report.warnings)
    (out,), _ = annotations.save(ds, tmp_path / "rois", "imagej")
    assert [r.name for r in roiread(out)] == names  # Fiji gets them back as they were


# ------------------------------------------------ 4. a '+' inside a checkbox option id


def marker_project() -> dict:
    """Markers ticked in a checkbox attribute whose option ids hold a '+' (as biologists
    name them: GFP+), beside options whose ids joined by '+' are another option's id."""
    ticked = [{"GFP+": True, "dead": True}, {"GFP+": True}, {"a+b": True}, {"a": True, "b": True}]
    square = {"name": "rect", "x": 1, "y": 1, "width": 5, "height": 5}
    regions = [{"shape_attributes": square, "region_attributes": {"marker": t}} for t in ticked]
    options = dict.fromkeys(["GFP+", "dead", "a", "b", "a+b"], "")
    return {
        "_via_settings": {},
        "_via_img_metadata": {"a.png1": {"filename": "a.png", "size": 1, "regions": regions,
                                         "file_attributes": {}}},
        "_via_attributes": {"region": {"marker": {"type": "checkbox", "description": "",
                                                  "options": options, "default_options": {}}},
                            "file": {}},
    }  # fmt: skip


def test_checkbox_option_ids_holding_a_plus_are_written_back_as_they_were_ticked(tmp_path):
    """``GFP+`` and ``dead`` ticked used to be the class ``GFP++dead``, written back as an
    option of that name; ``a`` and ``b`` ticked were the class of the option ``a+b``."""
    project = marker_project()
    ticked = [r["region_attributes"] for r in project["_via_img_metadata"]["a.png1"]["regions"]]
    export = project["_via_img_metadata"]
    for data, name in ((project, "project.json"), (export, "export.json")):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        ds, _ = annotations.load(path, read_images=False)
        # four different classes, a joined '+' told apart from one inside an id
        assert [r.label for r in ds.regions] == ["GFP\\++dead", "GFP+", "a\\+b", "a+b"]
        annotations.save(ds, tmp_path / "out.json", "via-project")
        saved = json.loads((tmp_path / "out.json").read_text())
        written = [r["region_attributes"] for r in saved["_via_img_metadata"]["a.png1"]["regions"]]
        assert written == ticked
        assert set(saved["_via_attributes"]["region"]["marker"]["options"]) == {
            "GFP+", "dead", "a", "b", "a+b"}  # no option made of a class  # fmt: skip
    # a class given in napari that holds a '+' is an option of its own, read back as given
    ds.regions[0].label = "RFP+ +x"
    back = reread_as_via(ds, tmp_path)
    assert back.regions[0].label == "RFP+ +x"
    assert [r.label for r in back.regions[1:]] == ["GFP+", "a\\+b", "a+b"]


def test_checkbox_ids_ticked_but_not_defined_are_added_as_options_and_ticked_again(tmp_path):
    """An option deleted in VIA while regions still tick it (or a file written by a
    script): ``GFP+`` ticked beside the only option, ``dead``, was written back as the junk
    option ``GFP\\++dead``, the two ticks lost."""
    project = marker_project()
    project["_via_attributes"]["region"]["marker"]["options"] = {"dead": "dead"}
    for region in project["_via_img_metadata"]["a.png1"]["regions"]:
        region["region_attributes"]["marker"] = {"GFP+": True, "dead": True, "x": False}
    path = tmp_path / "project.json"
    path.write_text(json.dumps(project))
    ds, report = annotations.load(path, read_images=False)
    assert {r.label for r in ds.regions} == {"GFP\\++dead"}
    said = [w for w in report.warnings if "not defined" in w]
    assert len(said) == 1  # once per file, not per region
    assert said[0].endswith("checkbox attribute 'marker': option 'GFP+' ticked but not "
                            "defined: added")  # fmt: skip
    annotations.save(ds, tmp_path / "out.json", "via-project")
    saved = json.loads((tmp_path / "out.json").read_text())
    regions = saved["_via_img_metadata"]["a.png1"]["regions"]
    assert all(r["region_attributes"]["marker"] == {"GFP+": True, "dead": True} for r in regions)
    # shown in VIA as an option of its own; an id never ticked is no option
    options = saved["_via_attributes"]["region"]["marker"]["options"]
    assert options == {"dead": "dead", "GFP+": "GFP+"}
    back, report = annotations.load(tmp_path / "out.json", read_images=False)
    assert {r.label for r in back.regions} == {"GFP\\++dead"}
    assert not [w for w in report.warnings if "not defined" in w]
