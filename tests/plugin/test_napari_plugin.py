"""The plugin in a real napari viewer (Qt + OpenGL under Xvfb): readers, writer, sample data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly import _reader
from napari_bioanomaly.core import annotations

PLUGIN = "napari-bioanomaly"


def tag(layer):
    return layer.metadata["bioanomaly"]


def test_the_qt_binding_is_the_one_asked_for(make_napari_viewer):
    """``scripts/test.sh`` runs these tests on PyQt5 and again on PyQt6 (``QT_API``; it
    says which in ``BIOANOMALY_TEST_QT``, as qtpy rewrites ``QT_API`` to the binding it
    fell back to): the second run proves nothing unless the viewer runs on PyQt6."""
    import importlib
    import os

    import qtpy

    asked = os.environ.get("BIOANOMALY_TEST_QT", "pyqt5").lower()
    assert qtpy.API_NAME.lower() == asked
    widgets = importlib.import_module(f"{qtpy.API_NAME}.QtWidgets")
    viewer = make_napari_viewer()
    assert isinstance(viewer.window._qt_window, widgets.QMainWindow)
    assert isinstance(widgets.QApplication.instance(), widgets.QApplication)


def test_readers_decline_what_is_not_theirs(tmp_path, sample_dir):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "Topology", "objects": {}}))
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    (tmp_path / "empty").mkdir()
    assert _reader.get_annotation_reader(str(other)) is None
    assert _reader.get_annotation_reader(str(broken)) is None
    assert _reader.get_annotation_reader(str(sample_dir / "img_000.tif")) is None
    assert _reader.get_annotation_reader([str(other), str(broken)]) is None
    assert _reader.get_folder_reader(str(tmp_path / "empty")) is None
    assert _reader.get_annotation_reader(str(sample_dir / "annotations.json")) is not None
    assert _reader.get_folder_reader(str(sample_dir)) is not None


def test_open_annotation_file_gives_lazy_images_and_tagged_shapes(make_napari_viewer, sample_dir):
    viewer = make_napari_viewer()
    layers = viewer.open(str(sample_dir / "annotations.json"), plugin=PLUGIN)
    images, shapes = layers
    dataset, _ = annotations.load(sample_dir / "annotations.json")
    assert images.data.shape == (6, 128, 128)
    assert type(images.data).__module__.startswith("dask")
    assert tag(images)["role"] == "images"
    assert tag(shapes)["role"] == "ground-truth"
    assert len(shapes.data) == len(dataset.regions)
    assert list(shapes.features["class"]) == [r.label for r in dataset.regions]
    # first region: plane index, then the model's row/col shifted onto napari's pixel centres
    first_plane = next(i for i, im in enumerate(dataset.images) if im.regions)
    region = dataset.images[first_plane].regions[0]
    np.testing.assert_allclose(shapes.data[0][:, 0], first_plane)
    np.testing.assert_allclose(shapes.data[0][:, 1:], region.polygon - 0.5)
    # each class has its own colour
    colours = {
        c: tuple(np.round(e, 3))
        for c, e in zip(shapes.features["class"], shapes.edge_color, strict=True)
    }
    assert len(set(colours.values())) == len(colours)


def test_folder_reader_and_missing_images_are_reported(make_napari_viewer, sample_dir, tmp_path):
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(sample_dir, folder)
    (folder / "img_001.tif").unlink()
    (folder / "img_002.tif").write_bytes(b"corrupt")
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match=r"img_001.tif: image file not found"):
        images, _shapes = viewer.open(str(folder), plugin=PLUGIN)
    assert images.data.shape == (6, 128, 128)
    assert not np.asarray(images.data[1]).any()  # a missing image shows as an empty plane
    assert np.asarray(images.data[0]).any()


def test_writer_round_trip_with_an_edit(make_napari_viewer, sample_dir, tmp_path):
    viewer = make_napari_viewer()
    _, shapes = viewer.open(str(sample_dir / "annotations.json"), plugin=PLUGIN)
    before, _ = annotations.load(sample_dir / "annotations.json")
    shapes.feature_defaults["class"] = "hair"
    new = np.array([[3, 10.5, 10.5], [3, 10.5, 30.5], [3, 20.5, 30.5], [3, 20.5, 10.5]])
    shapes.add_polygons([new])
    out = tmp_path / "saved.json"
    written = shapes.save(str(out), plugin=PLUGIN)
    assert written == [str(out)]
    after, report = annotations.load(out, images_dir=sample_dir)
    assert not report.issues
    assert [im.filename for im in after.images] == [im.filename for im in before.images]
    assert [im.file_attributes for im in after.images] == [
        im.file_attributes for im in before.images
    ]
    assert len(after.regions) == len(before.regions) + 1
    added = after.images[3].regions[-1]
    assert added.label == "hair" and added.source == "human"
    np.testing.assert_allclose(added.polygon, new[:, 1:] + 0.5)
    assert added.area == pytest.approx(200)


def test_writer_for_a_plain_2d_shapes_layer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_shapes(
        [np.array([[0, 0], [0, 9], [9, 9], [9, 0]], float) - 0.5],
        shape_type="polygon",
        name="my drawing",
    )
    out = tmp_path / "plain.json"
    layer.save(str(out), plugin=PLUGIN)
    ds, _ = annotations.load(out, read_images=False)
    assert [im.filename for im in ds.images] == ["my drawing.png"]
    assert ds.regions[0].area == pytest.approx(81) and ds.regions[0].label == "anomaly"


def test_sample_data_and_screenshot(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample(PLUGIN, "brightfield")
    images, shapes = layers
    assert images.data.shape == (12, 512, 512)
    assert len(shapes.data) > 10
    assert set(shapes.features["class"]) <= {
        "dark spot",
        "scratch",
        "bacterial colony",
        "hair",
        "dust",
    }
    written = list((tmp_path / "napari-bioanomaly").glob("sample-*/annotations.json"))
    assert len(written) == 1
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 5  # a real picture, not a blank canvas


def test_reader_opens_imagej_and_geojson_files(make_napari_viewer, dataset_dir, tmp_path):
    for fmt in ("imagej", "geojson"):
        annotations.save(
            annotations.load(dataset_dir / "annotations.json")[0], dataset_dir / fmt, fmt
        )
    viewer = make_napari_viewer()
    for path in (
        dataset_dir / "imagej" / "img_000_rois.zip",
        dataset_dir / "geojson" / "img_000.geojson",
    ):
        with pytest.warns(UserWarning, match="img_000.tif: image file not found"):  # not beside it
            layers = viewer.open(str(path), plugin=PLUGIN)
        shapes = layers[-1]
        assert shapes.metadata["bioanomaly"]["role"] == "ground-truth"
        assert len(shapes.data) == len(
            annotations.load(dataset_dir / "annotations.json")[0].images[0].regions
        )


def test_annotating_an_imported_file_saves_a_via_project_beside_it(
    make_napari_viewer, dataset_dir, qtbot
):
    from napari_bioanomaly.widgets.annotate import AnnotateWidget

    annotations.save(annotations.load(dataset_dir / "annotations.json")[0], dataset_dir, "geojson")
    source = dataset_dir / "img_000.geojson"
    before = source.read_text()
    widget = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open_path(source)
    widget.annotator.shapes_layer.add_polygons(
        [np.array([[5, 5], [5, 15], [15, 15], [15, 5]], float)]
    )
    assert source.read_text() == before  # the GeoJSON is never overwritten with VIA
    saved, report = annotations.load(dataset_dir / "img_000.via.json", read_images=False)
    assert report.format == "via2-project" and len(saved.regions) >= 1


def test_every_widget_opens_as_napari_opens_it(make_napari_viewer):
    """As the Plugins menu and ``napari-bioanomaly gui`` open them: napari hands plugin
    widgets a proxy of the viewer, whose window is no Qt parent (Annotate and Review
    raised a TypeError there, and the README's command opened no window). The question
    before closing napari with annotations not saved sits on the real window."""
    from napari_bioanomaly.widgets.annotate import AnnotateWidget
    from napari_bioanomaly.widgets.review import ReviewWidget
    from napari_bioanomaly.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    kinds = {"Annotate anomalies": AnnotateWidget, "Train a model": TrainWidget,
             "Review predictions": ReviewWidget}  # fmt: skip
    opened = []
    for name, kind in kinds.items():
        _, widget = viewer.window.add_plugin_dock_widget("napari-bioanomaly", name)
        assert isinstance(widget, kind), name
        opened.append(widget)
    assert viewer.window._qt_window._bioanomaly_quit_guard is not None
    # each had a proxy of its own: they share one workspace, the viewer's, all the same
    # (keyed by the proxy, it went with the first widget's proxy)
    import gc

    from napari_bioanomaly._workspace import workspace_for

    gc.collect()
    assert all(w.workspace is workspace_for(viewer) for w in opened)


def test_a_dock_from_the_plugins_menu_is_as_wide_as_its_content(
    make_napari_viewer, dataset_dir, qtbot
):
    """The Plugins menu docked the Annotate widget narrower than its content once a
    dataset was open: its right side was cut off behind a horizontal scroll bar, its
    labels wrapped at the hidden width and cut ("8/8 images don")."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1550, 1050)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-bioanomaly", "Annotate anomalies")
    qtbot.wait(50)
    assert widget.open_path(dataset_dir)
    scroll = widget.findChild(QScrollArea)
    needed = scroll.widget().minimumSizeHint().width()
    qtbot.waitUntil(lambda: dock.width() > needed, timeout=5_000)
    qtbot.waitUntil(lambda: not scroll.horizontalScrollBar().isVisible(), timeout=5_000)
    assert dock.width() <= viewer.window._qt_window.width() // 2 + 20
    # a dock widened by the user (past half the window) stays as wide
    from qtpy.QtCore import Qt

    from napari_bioanomaly.widgets._common import fit_dock

    window = viewer.window._qt_window
    window.resizeDocks([dock], [900], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: dock.width() > 800, timeout=5_000)
    wide = dock.width()
    fit_dock(widget)
    qtbot.wait(50)
    assert dock.width() >= wide - 2


def test_a_dock_closed_with_its_x_closes_its_widget(make_napari_viewer, dataset_dir, qtbot):
    """napari's dock X takes a plugin widget out of its dock without closing it: the
    Review widget's keys still rejected predictions (written to disk) with no widget on
    screen, its layers and the Annotate widget's stayed, the Train widget's settings
    still fed Train & review."""
    from napari_bioanomaly._workspace import workspace_for

    annotations.save(annotations.load(dataset_dir / "annotations.json")[0],
                     dataset_dir / "pred.json", "via")  # fmt: skip
    viewer = make_napari_viewer()
    docks = {}
    for name in ("Annotate anomalies", "Train a model", "Review predictions"):
        docks[name] = viewer.window.add_plugin_dock_widget("napari-bioanomaly", name)
    (_, annotate), _, (_, review) = docks.values()
    assert annotate.open_path(dataset_dir)
    assert review.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    assert "Alt+X" in {str(k) for k in viewer.keymap} and len(viewer.layers) > 2
    assert workspace_for(viewer).train_config is not None
    for dock, _ in docks.values():
        dock.title.close_button.click()
    qtbot.waitUntil(lambda: all(w._released for _, w in docks.values()), timeout=5_000)
    assert review._released and not review.alive()
    assert not {"Alt+X", "Alt+A", "PageDown"} & {str(k) for k in viewer.keymap}
    assert not [layer.name for layer in viewer.layers]  # the review's and Annotate's, gone
    assert workspace_for(viewer).train_config is None


def test_a_review_opening_when_its_window_goes_says_nothing_to_a_deleted_widget(
    make_napari_viewer, dataset_dir, qtbot, monkeypatch
):
    """The window closed while a review opened in the background: its progress and its
    end were said to a widget Qt had deleted (RuntimeError: wrapped C/C++ object ...)."""
    import threading

    from napari_bioanomaly.core.review import ReviewSession
    from napari_bioanomaly.widgets.review import ReviewWidget

    annotations.save(annotations.load(dataset_dir / "annotations.json")[0],
                     dataset_dir / "pred.json", "via")  # fmt: skip
    go, real = threading.Event(), ReviewSession.opening

    def held(gt, path, images=None):  # its progress and end come once the widget is gone
        go.wait(30)
        return (yield from real(gt, path, images))

    monkeypatch.setattr(ReviewSession, "opening", staticmethod(held))
    widget = ReviewWidget(make_napari_viewer())
    widget.open_in_background(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    worker = widget._open_worker
    widget.deleteLater()  # as its window's end deletes it, without a close
    qtbot.waitUntil(lambda: not widget.alive(), timeout=5_000)
    assert worker.is_running
    go.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    qtbot.wait(200)  # its end delivered: nothing raised
