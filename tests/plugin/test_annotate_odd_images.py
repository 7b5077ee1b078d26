"""Annotate on float images with NaN or infinite pixels, and when showing an image fails:
the pixels on screen, the outlines and the image the session saves them to stay paired."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_bioanomaly.widgets.annotate import AnnotateWidget


def on_disk(folder):
    data = json.loads((folder / "annotations.json").read_text())
    return {v["filename"]: v for v in data["_via_img_metadata"].values()}


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


def _ratio(folder, name, value):
    """A float copy of the folder's first image with ``value`` (NaN, inf) pixels."""
    pixels = tifffile.imread(sorted(folder.glob("*.tif"))[0]).astype(np.float32)
    pixels[5:9, 5:9] = value
    tifffile.imwrite(folder / name, pixels)


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_paging_onto_an_image_with_non_finite_pixels_shows_it_and_saves_to_it(
    make_napari_viewer, dataset_dir, qtbot, value
):
    """napari's contrast slider raised on it after the layer showed its pixels; the session
    stayed on the image before, and a polygon drawn over these pixels was saved there."""
    _ratio(dataset_dir, "zz_ratio.tif", value)
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    said = []
    w.annotator.message.connect(said.append)
    names = [im.filename for im in w._session.dataset.images]
    w.go_to(names.index("zz_ratio.tif") - 1)
    w.step(1)
    annotator = w.annotator
    assert annotator.session.image.filename == "zz_ratio.tif"
    assert np.isfinite(annotator.image_layer.data).all()
    assert np.isfinite(annotator.image_layer.contrast_limits_range).all()
    assert any("zz_ratio.tif: 16 NaN or infinite pixels" in s for s in said)
    annotator.shapes_layer.add_polygons([square(40, 40, 30)])
    assert len(on_disk(dataset_dir)["zz_ratio.tif"]["regions"]) == 1


def test_a_folder_whose_first_image_holds_nan_pixels_opens(make_napari_viewer, dataset_dir,
                                                           qtbot):  # fmt: skip
    first = sorted(dataset_dir.glob("*.tif"))[0].name
    _ratio(dataset_dir, first, np.nan)  # the image opened first, now with NaN pixels
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    assert w.annotator.session.image.filename == first
    assert w.annotator.image_layer.data.dtype == np.float32


def test_when_showing_fails_the_pixels_and_outlines_of_the_image_before_come_back(
    make_napari_viewer, dataset_dir, qtbot, monkeypatch
):
    """The session went back to the image before, but the layer kept the new pixels: a
    region drawn over them was saved into the image before."""
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    annotator = w.annotator
    first = annotator.session.image
    pixels = annotator.image_layer.data
    outlines = len(annotator.shapes_layer.data)
    real, calls = annotator._fill_shapes, []

    def fails_once(regions):
        calls.append(len(regions))
        if len(calls) == 1:  # the new image's, after its pixels were shown
            raise ValueError("napari refused the outlines")
        real(regions)

    monkeypatch.setattr(annotator, "_fill_shapes", fails_once)
    with pytest.raises(ValueError):
        annotator.show(1)
    assert annotator.session.image is first
    assert annotator.image_layer.data is pixels
    assert len(annotator.shapes_layer.data) == outlines == len(first.regions)
    annotator.shapes_layer.add_polygons([square(10, 10, 20)])
    saved = on_disk(dataset_dir)
    assert len(saved[first.filename]["regions"]) == outlines + 1


def test_review_image_stack_shows_non_finite_pixels_as_the_median(dataset_dir):
    """Review's lazy stack cast NaN into the first image's integer type (garbage) and
    took its contrast from it."""
    from napari_bioanomaly._layers import image_layer
    from napari_bioanomaly.core import annotations

    _ratio(dataset_dir, "zz_ratio.tif", np.nan)
    dataset, _ = annotations.open_dataset(dataset_dir, read_images=False)
    data, kwargs, _ = image_layer(dataset)
    names = [im.filename for im in dataset.images]
    plane = np.asarray(data[names.index("zz_ratio.tif")])
    ratio = tifffile.imread(dataset_dir / "zz_ratio.tif")
    assert plane[6, 6] == np.median(ratio[np.isfinite(ratio)]).astype(plane.dtype)
    assert plane[6, 6] > 0
    assert np.isfinite(kwargs["contrast_limits"]).all()
