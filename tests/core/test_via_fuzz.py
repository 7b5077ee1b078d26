"""Property-based tests: random and mutated VIA files give data or our own clear errors."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import FormatError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)

BASE = {
    "a.png-1": {
        "filename": "a.png",
        "size": -1,
        "regions": [
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [1, 20, 20, 1],
                    "all_points_y": [1, 1, 30, 30],
                },
                "region_attributes": {"class": "dust"},
            },
            {
                "shape_attributes": {
                    "name": "ellipse",
                    "cx": 5,
                    "cy": 5,
                    "rx": 3,
                    "ry": 2,
                    "theta": 1,
                },
                "region_attributes": {"type": {"hair": True}},
            },
            {
                "shape_attributes": {
                    "name": "polyline",
                    "all_points_x": [0, 9],
                    "all_points_y": [0, 9],
                },
                "region_attributes": {},
            },
        ],
        "file_attributes": {"cell_line": "HeLa"},
    }
}
PROJECT = {
    "_via_settings": {},
    "_via_img_metadata": BASE,
    "_via_attributes": {"region": {}, "file": {}},
    "_via_data_format_version": "2.0.10",
    "_via_image_id_list": ["a.png-1"],
}


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutate(doc, path, value):
    if not path:
        return value
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def load_is_clean(data):
    """Parse; only FormatError may escape, and a dataset must be consistent."""
    try:
        dataset, report = annotations.parse(data, "fuzz.json")
    except FormatError as exc:
        assert str(exc).startswith("fuzz.json")
        return
    assert report.regions_imported <= report.regions_found
    assert sum(report.shapes.values()) == report.regions_found
    for region in dataset.regions:
        assert region.polygon.shape[1] == 2 and len(region.polygon) >= 3
        assert region.area > 0
    json.dumps([str(w) for w in report.warnings])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_never_crashes(data):
    load_is_clean(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([BASE, PROJECT]), st.data(), json_values)
def test_mutated_via_files_never_crash(doc, data, value):
    doc_paths = list(paths(doc))
    path = data.draw(st.sampled_from(doc_paths))
    load_is_clean(mutate(doc, path, value))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=0, max_size=12))
def test_random_polygons_are_repaired_or_reported(points):
    doc = mutate(
        BASE, ("a.png-1", "regions", 0, "shape_attributes", "all_points_x"), [p[0] for p in points]
    )
    doc = mutate(
        doc, ("a.png-1", "regions", 0, "shape_attributes", "all_points_y"), [p[1] for p in points]
    )
    dataset, report = annotations.parse(doc)
    first = [i for i in report.issues if i.region == "0"]
    kept = [r for r in dataset.regions if r.label == "dust"]
    assert kept or any(i.kind == "skipped" for i in first)


def test_a_ring_geos_cannot_make_valid_is_repaired_another_way():
    """Found by hypothesis in CI: make_valid raised "Overlay input is mixed-dimension"."""
    pts = [(0.5, 0.0), (0.0, 4.3745047673750156e-79), (2.0, 1.0), (0.0, 0.0), (0.0, 1.0),
           (3.0, 1.0), (2.220446049250313e-16, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0),
           (0.0, 0.0)]  # fmt: skip
    doc = mutate(BASE, ("a.png-1", "regions", 0, "shape_attributes", "all_points_x"),
                 [p[0] for p in pts])  # fmt: skip
    doc = mutate(doc, ("a.png-1", "regions", 0, "shape_attributes", "all_points_y"),
                 [p[1] for p in pts])  # fmt: skip
    dataset, report = annotations.parse(doc)
    first = [i for i in report.issues if i.region == "0"]
    assert [r for r in dataset.regions if r.label == "dust"] or any(
        i.kind == "skipped" for i in first
    )
