"""ImageJ/Fiji ROI sets and QuPath GeoJSON: round trips, validity, bad input."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations, geojson, geometry
from napari_bioanomaly.core.model import Dataset, FormatError, ImageRecord, Region


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


@pytest.fixture
def dataset():
    tri = np.array([[40.25, 40.5], [60.0, 45.125], [50.5, 70.75]])
    return Dataset(
        images=[
            ImageRecord(
                "a.tif",
                (100, 120),
                regions=[Region(square(10, 20, 8), "dust"), Region(tri, "hair")],
            ),
            ImageRecord("b.tif", (100, 120), regions=[Region(square(0, 0, 2), "dark spot")]),
            ImageRecord("c.tif", (100, 120)),
        ]
    )


def by_name(ds):
    return {im.filename: im for im in ds.images}


def test_imagej_round_trip_and_roifile_reads_our_zips(dataset, tmp_path):
    roifile = pytest.importorskip("roifile")
    written, _ = annotations.save(dataset, tmp_path / "rois", "imagej")
    assert sorted(p.name for p in written) == ["a_rois.zip", "b_rois.zip"]
    rois = roifile.roiread(tmp_path / "rois" / "a_rois.zip")
    assert [r.name for r in rois] == ["dust-001", "hair-002"]
    assert all(r.roitype == roifile.ROI_TYPE.POLYGON for r in rois)
    for im in dataset.images[:2]:
        back, report = annotations.load(
            tmp_path / "rois" / f"{im.filename[0]}_rois.zip", read_images=False
        )
        assert report.format == "imagej" and not report.issues
        (got,) = back.images
        assert got.filename == im.filename
        assert [r.label for r in got.regions] == [r.label for r in im.regions]
        for a, b in zip(im.regions, got.regions, strict=True):
            np.testing.assert_allclose(a.polygon, b.polygon, atol=1e-3)  # float32 sub-pixel


def test_a_square_round_trips_to_the_same_pixels(dataset, tmp_path):
    annotations.save(dataset, tmp_path / "rois", "imagej")
    annotations.save(dataset, tmp_path / "geo", "geojson")
    expected = geometry.polygon_to_mask(square(0, 0, 2), (100, 120))
    assert expected[:2, :2].all() and expected.sum() == 4
    for path in (tmp_path / "rois" / "b_rois.zip", tmp_path / "geo" / "b.geojson"):
        back, _ = annotations.load(path, read_images=False)
        np.testing.assert_array_equal(
            geometry.polygon_to_mask(back.regions[0].polygon, (100, 120)), expected
        )


def test_geojson_is_valid_qupath_style_and_round_trips(dataset, tmp_path):
    geojson = pytest.importorskip("geojson")
    import shapely.geometry

    annotations.save(dataset, tmp_path / "geo", "geojson")
    text = (tmp_path / "geo" / "a.geojson").read_text()
    assert geojson.loads(text).is_valid
    data = json.loads(text)
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature in data["features"]:
        assert feature["properties"]["objectType"] == "annotation"
        assert set(feature["properties"]["classification"]) == {"name", "color"}
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]  # closed, as GeoJSON requires
        assert shapely.geometry.shape(feature["geometry"]).is_valid
    back, report = annotations.load(tmp_path / "geo" / "a.geojson", read_images=False)
    assert report.format == "geojson" and not report.issues
    assert [r.label for r in back.regions] == ["dust", "hair"]
    for a, b in zip(dataset.images[0].regions, back.regions, strict=True):
        np.testing.assert_allclose(a.polygon, b.polygon, atol=1e-4)


def test_geojson_keeps_region_attributes_scores_and_a_missing_class(tmp_path):
    """Region attributes are written as feature properties (text as QuPath's object
    metadata) and read back; a region its file gave no class is written back without
    one; a score in older QuPath's list of measurements is read."""
    via_file = tmp_path / "a.json"
    via_file.write_text(json.dumps({"a": {"filename": "a.tif", "size": -1, "regions": [
        {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 5, "height": 5},
         "region_attributes": {"type": "dust", "comment": "x", "seen": {"yes": True}}},
        {"shape_attributes": {"name": "rect", "x": 9, "y": 9, "width": 5, "height": 5},
         "region_attributes": {}},
    ]}}))  # fmt: skip
    ds, _ = annotations.load(via_file, read_images=False)
    _, warnings = annotations.save(ds, tmp_path / "geo", "geojson")
    assert not any("attribute" in w for w in warnings)
    features = json.loads((tmp_path / "geo" / "a.geojson").read_text())["features"]
    assert features[0]["properties"]["metadata"] == {"comment": "x"}  # QuPath shows these
    assert "classification" not in features[1]["properties"]
    back, report = annotations.load(tmp_path / "geo" / "a.geojson", read_images=False)
    assert [r.attributes for r in back.regions] == [{"comment": "x", "seen": {"yes": True}}, {}]
    assert [r.label for r in back.regions] == ["dust", "anomaly"]
    assert "region 1: no classification: shown as 'anomaly', written back without one" in (
        "\n".join(report.warnings)
    )
    annotations.save(back, tmp_path / "again", "geojson")
    again = json.loads((tmp_path / "again" / "a.geojson").read_text())["features"]
    assert [f["properties"] for f in again] == [f["properties"] for f in features]
    # in VIA, a region without a class but with one attribute keeps that attribute as such
    back.regions[1].attributes = {"note": "n"}
    annotations.save(back, tmp_path / "via.json", "via-project")
    via_back, _ = annotations.load(tmp_path / "via.json", read_images=False)
    assert (via_back.regions[1].label, via_back.regions[1].attributes) == ("anomaly", {"note": "n"})

    older = [
        {
            "type": "Feature",
            "properties": {
                "classification": {"name": "Tumor"},
                "measurements": [{"name": "Area", "value": 9}, {"name": "score", "value": 0.5}],
            },
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
        }
    ]
    bad = {**older[0], "properties": {"measurements": {"score": "high"}}}  # fmt: skip
    path = tmp_path / "older.geojson"
    path.write_text(json.dumps([*older, bad]))
    ds, report = annotations.load(path, read_images=False)
    assert [r.score for r in ds.regions] == [0.5, None]
    assert "region 1: score 'high' is not a finite number; ignored" in "\n".join(report.warnings)


def test_qupath_derived_classes_keep_every_part(tmp_path):
    """QuPath 0.4+ writes a derived class as its parts (``names``): it is read as QuPath
    names it (``Tumor: Positive``), apart from ``Tumor``, and written back with its parts
    (and as ``name``, which QuPath reads first and splits into the same parts)."""
    square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    features = [
        {"type": "Feature", "geometry": square, "properties": {"objectType": "cell",
         "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]}}},
        {"type": "Feature", "geometry": square, "properties": {"objectType": "cell",
         "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "geometry": square, "properties": {"objectType": "cell",
         "classification": {"name": "Tumor: Negative", "color": [0, 0, 200]}}},
    ]  # fmt: skip
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    ds, _ = annotations.load(path, read_images=False)
    assert [r.label for r in ds.regions] == ["Tumor: Positive", "Tumor", "Tumor: Negative"]
    annotations.save(ds, tmp_path / "out", "geojson")
    written = json.loads((tmp_path / "out" / "a.geojson").read_text())["features"]
    classes = [f["properties"]["classification"] for f in written]
    assert classes[0]["names"] == ["Tumor", "Positive"]
    assert classes[0]["name"] == "Tumor: Positive"
    assert "names" not in classes[1] and classes[1]["name"] == "Tumor"
    assert classes[2]["names"] == ["Tumor", "Negative"]
    back, _ = annotations.load(tmp_path / "out" / "a.geojson", read_images=False)
    assert [r.label for r in back.regions] == [r.label for r in ds.regions]


def test_imagej_export_names_the_region_attributes_it_drops(tmp_path, capsys):
    region = Region(square(1, 1, 5), "dust", {"comment": "x", "stage": "early"})
    ds = Dataset(
        images=[ImageRecord("a.tif", (20, 20), regions=[region, Region(square(9, 9, 5), "dust")])]
    )
    _, warnings = annotations.save(ds, tmp_path / "rois", "imagej")
    assert warnings == [
        "Fiji ROI sets keep no region attributes: comment, stage not written (1 region had them)"
    ]
    _, warnings = annotations.save(ds, tmp_path / "masks", "masks")
    assert warnings == [
        "label masks keep no region attributes: comment, stage not written (1 region had them)"
    ]


def test_via_to_imagej_and_geojson_to_via_with_the_cli(tmp_path, dataset_dir, capsys):
    for fmt in ("imagej", "geojson"):
        assert (
            main(
                ["convert", str(dataset_dir / "annotations.json"), "--to", fmt, str(tmp_path / fmt)]
            )
            == 0
        )
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images:
        if not im.regions:
            continue
        stem = im.filename.rsplit(".", 1)[0]
        for path in (
            tmp_path / "imagej" / f"{stem}_rois.zip",
            tmp_path / "geojson" / f"{stem}.geojson",
        ):
            out = tmp_path / f"{path.name}.via.json"
            assert (
                main(["convert", str(path), "--to", "via", str(out), "--images", str(dataset_dir)])
                == 0
            )
            back, _ = annotations.load(out, images_dir=dataset_dir)
            assert back.images[0].filename == im.filename  # the image is found by its stem
            assert [r.label for r in back.regions] == [r.label for r in im.regions]
            for a, b in zip(im.regions, back.regions, strict=True):
                np.testing.assert_allclose(a.polygon, b.polygon, atol=2e-3)


def test_qupath_exports_multipolygons_detections_and_bad_features(tmp_path):
    data = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
                        [
                            [[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]],
                            [[22, 22], [24, 22], [24, 24], [22, 22]],
                        ],
                    ],
                },
                "properties": {"objectType": "detection", "classification": {"name": "dust"}},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {},
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[40, 40], [50, 40], [50, 50], [40, 40]]],
                },
                "properties": {},
            },
            {"type": "Feature", "properties": {"classification": {"name": "x"}}},
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": "nonsense"},
                "properties": {},
            },
        ],
    }
    path = tmp_path / "img.geojson"
    path.write_text(json.dumps(data))
    ds, report = annotations.load(path, read_images=False)
    assert [r.label for r in ds.regions] == ["dust", "dust", "anomaly"]
    assert report.regions_found == 5 and report.regions_imported == 2
    text = "\n".join(report.warnings)
    for expected in (
        "MultiPolygon of 2 parts",
        "hole dropped",
        "'Point' is not an area",
        "no classification",
        "region 3: feature without a geometry",
        "region 4: Polygon: malformed",
    ):
        assert expected in text
    older = tmp_path / "older.json"  # older QuPath: a bare list of features
    older.write_text(json.dumps(data["features"][:1]))
    assert len(annotations.load(older, read_images=False)[0].regions) == 2


def test_truncated_zip_and_non_roi_entries(tmp_path, dataset):
    annotations.save(dataset, tmp_path / "rois", "imagej")
    good = tmp_path / "rois" / "a_rois.zip"
    truncated = tmp_path / "t_rois.zip"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(FormatError, match=r"t_rois\.zip: not a readable ImageJ ROI zip"):
        annotations.load(truncated, read_images=False)
    mixed = tmp_path / "m_rois.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(mixed, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("notes.txt", "hello")
        dst.writestr("broken.roi", b"Iout\x00garbage")
    ds, report = annotations.load(mixed, read_images=False)
    assert len(ds.regions) == 2
    text = "\n".join(report.warnings)
    assert (
        "notes.txt: not an ImageJ .roi file" in text
        and "broken.roi: not a valid ImageJ ROI" in text
    )
    assert main(["inspect", str(truncated)]) == 2


HOSTILE_CLASSES = ["dust/fiber", "..\\evil", "../../up", "Staub: grob", "NUL.txt", "con",
                   "a\x00b\x1fc", "\u202efdp.exe", "x" * 300, "dust/fiber", "."]  # fmt: skip


def test_roi_zip_entries_are_safe_whatever_the_class_and_keep_it(tmp_path):
    """Zip entries named after hostile classes would unzip into folders or outside the
    folder (``..\\evil`` on Windows): they are made safe, stay unique, and the class is
    read back from the ROI's own name."""
    regions = [Region(square(2 * i, 2 * i, 1.5), c) for i, c in enumerate(HOSTILE_CLASSES)]
    ds = Dataset(images=[ImageRecord("a.tif", (40, 40), regions=regions)])
    (path,), _ = annotations.save(ds, tmp_path / "rois", "imagej")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert len(set(names)) == len(HOSTILE_CLASSES)
    windows = {"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(10))}
    for name in names:
        stem = name.removesuffix(".roi")
        assert name.endswith(".roi") and stem and len(name) <= 80, name
        assert not set(stem) & set('/\\:*?"<>|.') and stem.isprintable(), name
        assert stem.split(".")[0].lower() not in windows and stem == stem.strip(" "), name
    assert names[0] == "dust_fiber-001.roi" and names[1] == "___evil-002.roi"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "unzipped")  # what a user does: no folder, nothing outside
    assert sorted(p.name for p in (tmp_path / "unzipped").iterdir()) == sorted(names)
    assert not any(p.is_dir() for p in (tmp_path / "unzipped").iterdir())
    back, report = annotations.load(path, read_images=False)
    assert [r.label for r in back.regions] == HOSTILE_CLASSES and not report.issues


def test_roi_zip_entry_names_are_only_data_on_reading(tmp_path, dataset):
    """Entries named ``../x.roi`` or ``/abs.roi`` are read from memory, never extracted."""
    annotations.save(dataset, tmp_path / "rois", "imagej")
    hostile = tmp_path / "in" / "h_rois.zip"
    hostile.parent.mkdir()
    with zipfile.ZipFile(tmp_path / "rois" / "a_rois.zip") as src:
        rois = [src.read(n) for n in src.namelist()]
    with zipfile.ZipFile(hostile, "w") as dst:
        dst.writestr("../x.roi", rois[0])
        dst.writestr("/abs/y.roi", rois[1])
        dst.writestr("..\\z.roi", rois[0])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ds, report = annotations.load(hostile, read_images=False)
    assert [r.label for r in ds.regions] == ["dust", "hair", "dust"] and not report.issues
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_imagej_roi_types(tmp_path):
    roifile = pytest.importorskip("roifile")
    from roifile import ROI_TYPE, ImagejRoi

    def roi(kind, name, **fields):
        r = ImagejRoi()
        r.roitype, r.name = kind, name
        for k, v in fields.items():
            setattr(r, k, v)
        return r

    rect = roi(ROI_TYPE.RECT, "dust-1", left=10, top=20, right=30, bottom=25)
    oval = roi(ROI_TYPE.OVAL, "colony-2", left=40, top=40, right=60, bottom=60)
    line = ImagejRoi.frompoints([[0, 50], [40, 50]], name="scratch-3")
    line.roitype = ROI_TYPE.POLYLINE
    line.stroke_width = 4
    point = ImagejRoi.frompoints([[5, 5]], name="pt")
    point.roitype = ROI_TYPE.POINT
    path = tmp_path / "x_rois.zip"
    roifile.roiwrite(path, [rect, oval, line, point])
    ds, report = annotations.load(path, read_images=False)
    labels = [r.label for r in ds.regions]
    assert labels == ["dust", "colony", "scratch"]
    assert ds.regions[0].bbox == (20, 10, 25, 30)
    assert ds.regions[1].area == pytest.approx(np.pi * 100, rel=0.05)
    assert 160 < ds.regions[2].area < 160 + np.pi * 4  # 40 px long, 4 px wide
    assert report.shapes["point"] == 1 and any("point ROI skipped" in w for w in report.warnings)


def test_the_classes_of_a_dataset_get_distinct_colours_that_stay_as_classes_are_added():
    from napari_bioanomaly.core.colors import CLASS_COLORS, class_color, class_colors

    # by a hash alone 12 names in 12 colours collide (three of these had one colour before)
    names = ["dust", "bubble", "Dust", "dust particle", "scratch", *[f"c{i}" for i in range(9)]]
    colors = class_colors(names)
    assert len(set(colors.values())) == len(names)  # 12 extra colours, 2 default classes
    assert colors["dust"] == CLASS_COLORS["dust"] and colors["scratch"] == CLASS_COLORS["scratch"]
    assert class_colors([*names, "new"])["bubble"] == colors["bubble"]  # a new class: the rest stay
    assert class_color("dust") == colors["dust"]
    geo = geojson.feature_collection(
        ImageRecord("a.png", (40, 40), regions=[
            Region(np.array([[1, 1], [1, 9], [9, 9]], float), "bubble")]),
        colors,
    )  # fmt: skip
    r, g, b = geo["features"][0]["properties"]["classification"]["color"]
    assert f"#{r:02x}{g:02x}{b:02x}" == colors["bubble"]
