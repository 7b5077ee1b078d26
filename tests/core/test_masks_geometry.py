"""Rasterisation, repair and clipping, and the label-mask export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_bioanomaly.core import annotations, geometry
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region


def square(r0, c0, r1, c1):
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=float)


def test_square_rasterises_to_exactly_its_pixels():
    mask = geometry.polygon_to_mask(square(1, 2, 3, 5), (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_bowtie_is_repaired_into_two_triangles():
    notes = []
    parts = geometry.clean_polygon(
        np.array([[0, 0], [10, 10], [0, 10], [10, 0]], float), note=lambda k, m: notes.append(k)
    )
    assert len(parts) == 2
    assert sum(geometry.polygon_area(p) for p in parts) == pytest.approx(50)
    assert notes == ["repaired", "split"]


def test_clipping_and_fully_outside():
    notes = []
    (part,) = geometry.clean_polygon(square(-5, -5, 5, 5), (20, 20), lambda k, m: notes.append(k))
    assert geometry.polygon_area(part) == pytest.approx(25)
    assert notes == ["clipped"]
    assert geometry.clean_polygon(square(30, 30, 40, 40), (20, 20)) == []


def test_regions_drawn_past_the_edges_are_cut_to_the_image():
    inside = Region(square(2, 2, 8, 8), "dust")
    across = Region(square(-5, 10, 5, 30), "hair", {"note": "edge"})
    outside = Region(square(30, 30, 40, 40), "dust")
    regions = [inside, across, outside]
    assert annotations.inside_image([inside], (20, 20)) == ([inside], 0, 0)
    kept, clipped, dropped = annotations.inside_image(regions, (20, 20))
    assert (clipped, dropped) == (1, 1) and len(kept) == 2 and kept[0] is inside
    assert kept[1].label == "hair" and kept[1].attributes == {"note": "edge"}
    assert kept[1].bbox == pytest.approx((0, 10, 5, 20))
    assert [r.polygon.shape for r in regions][1] == (4, 2)  # the regions given unchanged


def test_circle_through_three_points():
    r, c, radius = geometry.circle_through(np.array([[0, 10], [10, 0], [0, -10]], float))
    assert (r, c, radius) == pytest.approx((0, 0, 10))


def test_label_masks_and_class_table(tmp_path):
    ds = Dataset(
        images=[
            ImageRecord(
                "sub/a.png",
                shape=(10, 12),
                regions=[
                    Region(square(0, 0, 4, 4), "dust"),
                    Region(square(2, 2, 6, 6), "hair", score=0.5, source="model"),
                ],
            ),
            ImageRecord("b.png", shape=None, regions=[Region(square(0, 0, 1, 1), "dust")]),
        ]
    )
    written, warnings = annotations.save(ds, tmp_path / "masks", "masks")
    assert [p.name for p in written] == ["a_labels.tif", "labels.csv"]
    labels = tifffile.imread(tmp_path / "masks" / "sub" / "a_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (10, 12)
    assert (labels == 1).sum() == 16 - 4 and (labels == 2).sum() == 16
    assert any("4 pixels covered by several regions" in w for w in warnings)
    assert any("'b.png': size unknown" in w for w in warnings)
    rows = list(csv.DictReader(open(tmp_path / "masks" / "labels.csv")))
    assert [(r["label"], r["class"], r["class_id"], r["area_px"]) for r in rows] == [
        ("1", "dust", "1", "12"),
        ("2", "hair", "2", "16"),
    ]
    assert rows[1]["score"] == "0.5" and rows[1]["source"] == "model"


def test_scanline_rasteriser_matches_skimage_and_the_batched_version():
    from skimage.draw import polygon as draw_polygon

    rng = np.random.default_rng(0)
    polys = []
    for i in range(150):
        n = int(rng.integers(3, 30))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.3, 20, n)
        c = rng.uniform(-5, 70, 2)
        pts = np.column_stack([c[0] + r * np.sin(t), c[1] + r * np.cos(t)])
        polys.append(pts[::-1] if i % 2 else pts)  # both orientations
    for pts in polys:  # generic positions (no pixel centre exactly on an edge): same pixels
        ours = geometry.polygon_to_mask(pts, (64, 64))
        ref = np.zeros((64, 64), bool)
        rr, cc = draw_polygon(pts[:, 0] - 0.5, pts[:, 1] - 0.5, shape=(64, 64))
        ref[rr, cc] = True
        np.testing.assert_array_equal(ours, ref)
    for shape in ((64, 64), None):
        batched = geometry.rasterise_many(polys, shape)
        for pts, (r0, c0, mask) in zip(polys, batched, strict=True):
            single = geometry.rasterise_window(pts, shape)
            assert (single[0], single[1]) == (r0, c0)
            np.testing.assert_array_equal(single[2], mask)


def test_coordinates_in_range_refuses_nan_infinity_and_the_far_away():
    from napari_bioanomaly.core.geometry import MAX_COORDINATE, coordinates_in_range

    assert coordinates_in_range(np.zeros((0, 2))) and coordinates_in_range([[1, 2], [3, 4]])
    assert coordinates_in_range([[MAX_COORDINATE, -MAX_COORDINATE]])
    for bad in (np.nan, np.inf, -np.inf, MAX_COORDINATE * 1.01, -MAX_COORDINATE * 1.01):
        assert not coordinates_in_range([[1.0, 2.0], [bad, 3.0]]), bad
