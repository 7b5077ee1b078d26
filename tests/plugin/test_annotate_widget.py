"""The Annotate dock widget in a real viewer: draw, switch, autosave, undo, export, crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.widgets import annotate as annotate_module
from napari_bioanomaly.widgets.annotate import AnnotateWidget


@pytest.fixture
def widget(make_napari_viewer, dataset_dir, qtbot):
    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer)
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    return w


def on_disk(folder):
    data = json.loads((folder / "annotations.json").read_text())
    return {v["filename"]: v for v in data["_via_img_metadata"].values()}


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


def test_the_class_chosen_stays_the_drawing_class_on_every_image(widget, dataset_dir):
    """A class chosen, then PageDown: new shapes on the next images still get it, in its
    colour (napari took the class of the new image's last region, drawn in the colour of
    the chosen one)."""
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_bioanomaly.core.colors import class_color

    classes = widget.annotator.session.dataset.classes
    widget.choose_class(classes.index("other"))
    for step in range(1, 4):
        widget.step(1)
        layer = widget.annotator.shapes_layer
        assert layer.feature_defaults["class"][0] == "other"
        layer.add_polygons([square(5 + 20 * step, 5, 10)])
        assert widget.annotator.session.image.regions[-1].label == "other"
        assert np.allclose(layer.edge_color[-1], transform_color(class_color("other"))[0])
    saved = on_disk(dataset_dir)
    for name in ("img_001.tif", "img_002.tif", "img_003.tif"):
        assert saved[name]["regions"][-1]["region_attributes"]["class"] == "other"


def test_shapes_drawn_past_the_image_edges_are_cut_to_it(widget, dataset_dir, monkeypatch):
    """A shape drawn partly outside the image was kept as drawn (its area counted, left out
    of a COCO export); one wholly outside was kept too. They are cut to the image, or
    dropped, and the user is told."""
    said = []
    monkeypatch.setattr(widget, "_info", said.append)
    layer = widget.annotator.shapes_layer
    n0 = len(layer.data)
    rows, _ = widget.annotator.session.image.shape
    layer.add_polygons([square(rows - 10, 20, 30)])  # 20 px past the bottom edge
    regions = widget.annotator.session.image.regions
    assert len(regions) == n0 + 1 and regions[-1].bbox == pytest.approx(
        (rows - 9.5, 20.5, rows, 50.5)
    )
    assert len(layer.data) == n0 + 1 and layer.data[-1][:, 0].max() <= rows
    assert said[-1] == "img_000.tif: 1 region cut at the image's edges"
    layer.add_polygons([square(rows + 40, 20, 10)])  # wholly outside
    assert len(widget.annotator.session.image.regions) == n0 + 1 and len(layer.data) == n0 + 1
    assert said[-1] == "img_000.tif: 1 region wholly outside the image dropped"
    saved = on_disk(dataset_dir)["img_000.tif"]["regions"]
    assert len(saved) == n0 + 1 and max(saved[-1]["shape_attributes"]["all_points_y"]) <= rows


def test_a_stack_is_said_to_be_one_when_shown(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    import tifffile

    stack = np.zeros((4, 64, 64), np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "flat.tif", stack[0])
    said = []
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    monkeypatch.setattr(w, "_info", said.append)
    assert w.open_path(tmp_path)
    names = [im.filename for im in w.annotator.session.dataset.images]
    w.annotator.show(names.index("flat.tif"))
    assert not any("stack" in t for t in said)
    w.annotator.show(names.index("z.tif"))
    assert said[-1] == "z.tif: a stack of 4 planes (pages): only the first plane is used"
    assert w.viewer.layers["image"].data.shape == (64, 64)
    w.annotator.show(names.index("flat.tif"))
    w.annotator.show(names.index("z.tif"))
    assert sum("stack" in t for t in said) == 1  # said once, not at every visit


def test_going_back_to_an_earlier_version_in_napari(widget, dataset_dir, monkeypatch):
    """A bulk change regretted later: the version kept before it is chosen from a list
    and put back (the layer, classes and images shown as they were); the version it
    replaces is kept, so going back can be undone the same way."""
    from qtpy.QtWidgets import QInputDialog

    said = []
    monkeypatch.setattr(widget, "_info", said.append)
    session = widget.annotator.session
    before = [len(im.regions) for im in session.dataset.images]
    widget.versions_button.click()
    assert said[-1].startswith("no earlier version of annotations.json kept yet")
    widget.annotator.shapes_layer.selected_data = set(
        range(len(widget.annotator.shapes_layer.data))
    )
    widget.annotator.shapes_layer.remove_selected()  # the image emptied, saved at once
    assert session.image.regions == [] and before[session.current]
    choices = widget.version_choices()
    assert len(choices) == 1 and "min ago" in choices[0][0]
    asked = []

    def pick(parent, title, label, items, current, editable):
        asked.append(items)
        return items[0], True

    monkeypatch.setattr(QInputDialog, "getItem", pick)
    widget.versions_button.click()
    assert asked == [[choices[0][0]]]
    assert [len(im.regions) for im in session.dataset.images] == before
    assert len(widget.annotator.shapes_layer.data) == before[session.current]
    assert widget.region_table.rowCount() == before[session.current]
    assert said[-1].startswith("annotations.json: back to annotations.")
    assert len(widget.version_choices()) == 2  # the emptied version kept too
    assert on_disk(dataset_dir)[session.image.filename]["regions"]


def test_draw_switch_and_autosave(widget, dataset_dir):
    layer = widget.annotator.shapes_layer
    n0 = len(layer.data)
    widget.choose_class(3)  # hair
    layer.add_polygons([square(10, 10, 20)])
    assert (
        on_disk(dataset_dir)["img_000.tif"]["regions"][-1]["region_attributes"]["class"] == "hair"
    )
    assert widget.region_table.rowCount() == n0 + 1
    assert widget.save_label.text().startswith("\u2713 saved")
    assert widget.save_label.text().endswith(" images done")  # the count stays after a save
    widget.step(1)
    assert widget.annotator.index == 1
    assert widget.viewer.layers["image"].data.shape == (128, 128)
    widget.choose_class(4)  # dust
    widget.annotator.shapes_layer.add_polygons([square(50, 60, 8)])
    widget.step(-1)
    saved = on_disk(dataset_dir)
    assert saved["img_001.tif"]["regions"][-1]["region_attributes"]["class"] == "dust"
    xs = saved["img_001.tif"]["regions"][-1]["shape_attributes"]["all_points_x"]
    assert min(xs) == pytest.approx(60.5) and max(xs) == pytest.approx(
        68.5
    )  # napari -> pixel edges
    assert len(widget.annotator.shapes_layer.data) == n0 + 1


def test_polyline_is_stored_as_thin_polygon(widget, dataset_dir):
    widget.polyline_spin.setValue(4)
    layer = widget.annotator.shapes_layer
    layer.add_paths([np.array([[20.0, 20.0], [20.0, 70.0]])])
    region = widget.annotator.session.image.regions[-1]
    assert region.shape == "polyline"
    assert 200 < region.area < 200 + np.pi * 4
    assert (
        len(on_disk(dataset_dir)["img_000.tif"]["regions"][-1]["shape_attributes"]["all_points_x"])
        > 4
    )


def test_change_class_of_selected_regions(widget, dataset_dir):
    layer = widget.annotator.shapes_layer
    layer.selected_data = set(range(len(layer.data)))
    widget.choose_class(5)  # other
    assert set(layer.features["class"]) == {"other"}
    assert {
        r["region_attributes"]["class"] for r in on_disk(dataset_dir)["img_000.tif"]["regions"]
    } == {"other"}


def test_undo_a_deletion_even_after_switching(widget, dataset_dir):
    layer = widget.annotator.shapes_layer
    before = [r.label for r in widget.annotator.session.image.regions]
    layer.selected_data = {0}
    layer.remove_selected()
    assert len(on_disk(dataset_dir)["img_000.tif"]["regions"]) == len(before) - 1
    widget.step(2)
    widget.undo_delete()
    assert widget.annotator.index == 0
    assert sorted(r.label for r in widget.annotator.session.image.regions) == sorted(before)
    assert len(on_disk(dataset_dir)["img_000.tif"]["regions"]) == len(before)


def test_a_file_attribute_typed_twice_keeps_the_first_and_says_so(widget, dataset_dir,
                                                                  monkeypatch):  # fmt: skip
    """A second row with a key already in the table replaced the first row's value, and
    the row vanished at the next refill: the first is kept, the second row stays to be
    renamed, and a note says so."""
    said = []
    monkeypatch.setattr(widget, "_info", said.append)
    session = widget.annotator.session
    name = session.image.filename
    first = session.image.file_attributes["cell_line"]
    table = widget.attr_table
    rows = table.rowCount()
    widget.image_panel.add_attribute()
    table.item(rows, 1).setText("HeLa-typo")
    table.item(rows, 0).setText("cell_line")  # the same key again
    assert session.image.file_attributes["cell_line"] == first
    assert on_disk(dataset_dir)[name]["file_attributes"]["cell_line"] == first
    assert table.rowCount() == rows + 1 and said[-1] == (
        f"{name}: file attribute 'cell_line' is in the table twice; the first row's value is "
        "kept: rename or clear the other row")  # fmt: skip
    table.item(rows, 0).setText("cell_line_2")
    assert on_disk(dataset_dir)[name]["file_attributes"]["cell_line_2"] == "HeLa-typo"


def test_a_checkbox_file_attribute_stays_one_through_the_table(widget, dataset_dir):
    """A VIA checkbox file attribute (stains ticked: {"HE": true, "DAPI": true}) showed
    as "{'HE': True, 'DAPI': True}", and editing any other attribute saved that text in
    its place. It shows the options ticked; unchanged it is kept as it was, edited it
    ticks the options typed."""
    session = widget.annotator.session
    name = session.image.filename
    session.set_file_attributes({**session.image.file_attributes,
                                 "stain": {"HE": True, "DAPI": True, "GFP": False}})  # fmt: skip
    here = session.current
    widget.go_to(here + 1)
    widget.go_to(here)  # the table filled again
    table = widget.attr_table
    rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
    assert table.item(rows["stain"], 1).text() == "HE, DAPI"
    table.item(rows["cell_line"], 1).setText("MCF7")  # another attribute edited
    saved = on_disk(dataset_dir)[name]["file_attributes"]
    assert saved["cell_line"] == "MCF7"
    assert saved["stain"] == {"HE": True, "DAPI": True, "GFP": False}
    table.item(rows["stain"], 1).setText("HE, GFP")
    assert on_disk(dataset_dir)[name]["file_attributes"]["stain"] == {"HE": True, "GFP": True}


def test_no_anomaly_toggle_file_attributes_and_filter(widget, dataset_dir):
    session = widget.annotator.session
    normal = next(i for i, im in enumerate(session.dataset.images) if not im.regions)
    widget.go_to(normal)
    widget.no_anomaly_box.setChecked(False)
    assert on_disk(dataset_dir)[session.image.filename]["file_attributes"].get("no_anomaly") is None
    widget.no_anomaly_box.setChecked(True)
    assert on_disk(dataset_dir)[session.image.filename]["file_attributes"]["no_anomaly"] == "true"
    widget.attr_table.item(0, 1).setText("MCF7")
    assert on_disk(dataset_dir)[session.image.filename]["file_attributes"]["cell_line"] == "MCF7"
    widget.status_filter.setCurrentText("checked: no anomaly")
    shown = widget.visible_images()
    assert shown == [i for i, im in enumerate(session.dataset.images) if im.no_anomaly]
    # PageDown / Next go through the images the list shows, not the hidden ones
    widget.status_filter.setCurrentText("all")
    lines = [im.file_attributes.get("cell_line") for im in session.dataset.images]
    widget.filter_edit.setText(max(set(lines), key=lines.count))
    shown = widget.visible_images()
    assert 2 <= len(shown) < len(lines)
    widget.go_to(shown[0])
    widget.step(1)
    assert widget.annotator.index == shown[1]
    selected = widget.image_table.selectionModel().selectedRows()
    assert [widget.image_proxy.mapToSource(i).row() for i in selected] == [shown[1]]
    widget.step(1)
    assert widget.annotator.index == shown[min(2, len(shown) - 1)]
    hidden = next(i for i in range(len(session.dataset.images)) if i not in shown)
    widget.go_to(hidden)  # a hidden image shown (e.g. clicked before filtering): no row selected
    assert not widget.image_table.selectionModel().selectedRows()
    widget.filter_edit.setText("")
    widget.status_filter.setCurrentText("all")
    widget.filter_edit.setText("MCF7")
    assert widget.visible_images() == [normal]
    widget.filter_edit.setText("")
    widget.image_table.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # most regions first
    counts = [len(session.dataset.images[i].regions) for i in widget.visible_images()]
    assert counts == sorted(counts, reverse=True)
    widget.go_to(widget.visible_images()[0])
    widget.step(1)  # in the sorted order
    assert widget.annotator.index == widget.visible_images()[1]
    widget.image_table.clicked.emit(widget.image_proxy.index(0, 1))
    assert widget.annotator.index == widget.visible_images()[0]


def test_disk_conflict_asks_and_never_overwrites_silently(widget, dataset_dir, monkeypatch):
    answers = []
    widget.annotator.on_conflict = lambda exc: answers.append(str(exc)) or "later"
    time.sleep(0.01)
    theirs = json.loads((dataset_dir / "annotations.json").read_text())
    theirs["_via_settings"]["project"]["name"] = "theirs"
    (dataset_dir / "annotations.json").write_text(json.dumps(theirs))
    widget.annotator.shapes_layer.add_polygons([square(5, 5, 10)])
    assert answers and "changed on disk" in answers[0]
    assert json.loads((dataset_dir / "annotations.json").read_text()) == theirs
    assert widget.annotator.session.dirty
    widget.annotator.on_conflict = lambda exc: "overwrite"
    widget.annotator.autosave()
    assert json.loads((dataset_dir / "annotations.json.bak").read_text()) == theirs
    assert not widget.annotator.session.dirty


def test_export_with_nothing_open_says_so(make_napari_viewer, qtbot, tmp_path):
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    with pytest.raises(BioAnomalyError, match="no dataset open"):
        w.export("coco", tmp_path / "c.json")
    assert not any(tmp_path.iterdir())


def test_export_every_format_and_reimport(widget, tmp_path, dataset_dir):
    widget.annotator.shapes_layer.add_polygons([square(30, 30, 12)])
    n = len(widget.annotator.session.dataset.regions)
    said, warned = [], []
    widget._info, widget._warn = said.append, warned.append
    for fmt, out in [
        ("via-project", tmp_path / "p.json"),
        ("via", tmp_path / "v.json"),
        ("coco", tmp_path / "c.json"),
    ]:
        written = widget.export(fmt, out)
        assert written == [out]
        assert said[-1].startswith(f"Wrote 1 file (6 images, {n} regions) to {out}")
        ds, report = annotations.load(out, images_dir=dataset_dir)
        assert len(ds.regions) == n and not [i for i in report.issues if i.kind != "closed"]
    written = widget.export("masks", tmp_path / "masks")
    assert len(written) == 7 and (tmp_path / "masks" / "labels.csv").is_file()
    # what it left out said as a warning, its count on the first line (all that shows)
    first, *rest = warned[-1].splitlines()
    assert first == (f"Wrote 7 files (6 images, {n} regions) into masks, with "
                     f"{len(rest)} warning{'s' if len(rest) > 1 else ''} (in {tmp_path}):")  # fmt: skip
    assert rest and "no file attributes" in "\n".join(rest)
    # onto the open dataset's own file: refused (it was a conflict with itself after)
    errors = []
    widget._error = errors.append
    before = (dataset_dir / "annotations.json").read_bytes()
    assert widget.export("via", dataset_dir / "annotations.json") == []
    assert "is the open dataset's own file" in errors[-1]
    assert (dataset_dir / "annotations.json").read_bytes() == before


def test_an_error_notification_names_the_file_first(widget, dataset_dir, monkeypatch):
    """A notification shows its first line: a long path alone said nothing of the error."""
    import napari.utils.notifications

    shown = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    widget.open_path(dataset_dir / "annotation.json")  # mistyped: refused
    assert shown == [
        f"annotation.json: no such file (the folder's annotation file is annotations.json) "
        f"(in {dataset_dir})"
    ]


def test_classes_can_be_added_renamed_and_removed(widget, dataset_dir):
    widget.add_class("fiber")
    assert widget.annotator.current_class == "fiber"
    widget.rename_class("fiber", "fibre")
    data = json.loads((dataset_dir / "annotations.json").read_text())
    assert "fibre" in data["_via_attributes"]["region"]["class"]["options"]
    widget.class_list.setCurrentRow(widget.class_list.count() - 1)
    widget._remove_class()
    assert "fibre" not in widget.annotator.session.dataset.classes
    # removed, it was the drawing class: a new shape takes a class that still exists
    assert widget.annotator.current_class != "fibre"
    widget.annotator.shapes_layer.add_polygons([square(40, 40, 10)])
    assert widget.annotator.session.image.regions[-1].label != "fibre"
    assert "fibre" not in widget.annotator.session.dataset.classes


def test_the_classes_can_be_read_from_an_attribute_the_file_chose(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """A VIA file with its classes under ``defect``: every region showed as 'anomaly' and
    nothing in Annotate could say otherwise. Classes > classes from: ``defect`` reads them
    (the region on screen too), saved with the choice, and said."""
    from tests.core.test_session import _defect_project

    path = _defect_project(tmp_path)
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(path)
    assert "import issue" in w.status_label.text()  # the regions with no class attribute
    combo = w.attribute_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert {"defect", "severity"} <= set(names) and combo.currentText() == "class"
    said = []
    monkeypatch.setattr(w, "_info", said.append)
    combo.setCurrentIndex(names.index("defect"))
    combo.activated.emit(names.index("defect"))  # as a click on it does
    assert list(w.annotator.shapes_layer.features["class"]) == ["scratch", "dust"]
    assert [w.class_list.item(i).text() for i in range(w.class_list.count())] == [
        "scratch", "dust", "hair"]  # fmt: skip
    assert said == ["classes read from 'defect': 3 classes"]
    assert "import issue" not in w.status_label.text()  # said of the old choice
    saved = json.loads(path.read_text())
    assert saved["_via_settings"]["project"]["class_attribute"] == "defect"
    assert [r["region_attributes"] for r in saved["_via_img_metadata"]["a.png-1"]["regions"]] == [
        {"defect": "scratch", "severity": "high"}, {"defect": "dust", "severity": "low"}]  # fmt: skip
    assert combo.currentText() == "defect"


def test_renaming_a_checkbox_option_renames_it_in_combinations_on_screen(widget):
    from napari_bioanomaly.core.via_parse import join_options

    annotator = widget.annotator
    session, ds = annotator.session, annotator.session.dataset
    ds.attribute_definitions = {
        "region": {ds.class_attribute: {"type": "checkbox", "options": {"GFP+": "", "dead": ""}}}
    }
    ds.classes = ["GFP+", "dead"]
    annotator.current_class = join_options(["GFP+", "dead"])
    annotator.shapes_layer.add_polygons([square(5, 5, 10)])  # on screen
    widget.rename_class("dead", "necrotic")  # the layer kept the old combination
    annotator.sync()
    assert session.image.regions[-1].label == join_options(["GFP+", "necrotic"])
    assert ds.classes[:2] == ["GFP+", "necrotic"]
    assert not [c for c in ds.classes if "dead" in c]


def test_adding_a_class_beside_a_region_with_no_class_works_and_a_refusal_is_said(
    widget, monkeypatch
):
    from napari_bioanomaly.core.model import FALLBACK_CLASS

    session = widget.annotator.session
    session.dataset.images[-1].regions = [Region(square(5, 5, 10), FALLBACK_CLASS)]
    widget.add_class("fiber")  # raised 'classes still in use: anomaly'
    assert "fiber" in session.dataset.classes
    errors = []
    widget.classes_panel._on_error = errors.append

    def refuse(classes):
        raise BioAnomalyError("refused")

    monkeypatch.setattr(session, "set_classes", refuse)
    widget.add_class("other fiber")  # said, not raised
    assert errors == ["refused"] and "other fiber" not in session.dataset.classes


def test_renaming_a_class_renames_it_on_the_image_shown_too(widget, dataset_dir):
    """The image on screen has dust: renamed, its regions are renamed too (they were
    synced back with the old name, which came back as a class of its own)."""
    images = widget.annotator.session.dataset.images
    widget.go_to(next(i for i, im in enumerate(images) if "dust" in {r.label for r in im.regions}))
    widget.choose_class(widget.annotator.session.dataset.classes.index("dust"))
    widget.rename_class("dust", "debris")
    classes = widget.annotator.session.dataset.classes
    assert "debris" in classes and "dust" not in classes
    assert "dust" not in {r.label for r in widget.annotator.session.image.regions}
    assert widget.annotator.current_class == "debris"
    saved = on_disk(dataset_dir)
    labels = {r["region_attributes"]["class"] for v in saved.values() for r in v["regions"]}
    assert "dust" not in labels and "debris" in labels


def test_killed_while_annotating_leaves_a_complete_file(dataset_dir, tmp_path):
    """SIGKILL a process that adds polygons through the layer; the file on disk must load."""
    before = len(on_disk(dataset_dir)["img_000.tif"]["regions"])
    script = tmp_path / "annotate.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, numpy as np, napari
            from napari_bioanomaly.core.session import AnnotationSession
            from napari_bioanomaly._annotator import Annotator
            viewer = napari.Viewer(show=False)
            annotator = Annotator(viewer, AnnotationSession.open({str(dataset_dir)!r}))
            for i in range(10000):
                r = 2 + (i % 50) * 2.0
                annotator.shapes_layer.add_polygons([np.array([[r, 2], [r, 9], [r + 1.5, 9]])])
                print(i, flush=True)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    last = -1
    deadline = time.time() + 120
    while last < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line.split()[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last >= 40, "the annotating process did not get going"
    ds, report = annotations.load(dataset_dir / "annotations.json", read_images=False)
    assert report.format == "via2-project" and not report.issues
    added = len(ds.images[0].regions) - before
    assert added >= last + 1  # every edit reported done was on disk; at most the next one is lost


def test_quality_check_flags_show_filter_and_are_saved(widget, dataset_dir, monkeypatch, qtbot):
    import tifffile

    tifffile.imwrite(dataset_dir / "img_002.tif", np.zeros((128, 128), np.uint16))  # blank
    assert widget.check_quality()
    assert widget.qc_progress.isVisibleTo(widget) and widget.qc_button.text() != "Check quality"
    total = len(widget._session.dataset.images)
    assert widget.qc_progress.maximum() == total
    qtbot.waitUntil(
        lambda: widget._qc_worker is None and widget.qc_button.isEnabled(), timeout=60_000
    )
    assert widget.qc_progress.value() == total  # every image counted as read
    assert not widget.qc_progress.isVisibleTo(widget) and widget.qc_button.text() == "Check quality"
    images = widget._session.dataset.images
    flags = {im.filename: im.file_attributes["qc"] for im in images}
    assert flags["img_002.tif"] == "uniform; dim"
    assert all(v == "ok" for k, v in flags.items() if k != "img_002.tif")
    widget.qc_filter.setCurrentText("QC flagged")
    assert [images[i].filename for i in widget.visible_images()] == ["img_002.tif"]
    widget.qc_filter.setCurrentText("QC ok")
    assert len(widget.visible_images()) == len(images) - 1
    saved = json.loads((dataset_dir / "annotations.json").read_text())
    stored = {
        v["filename"]: v["file_attributes"].get("qc") for v in saved["_via_img_metadata"].values()
    }
    assert stored["img_002.tif"] == "uniform; dim"


def test_quality_check_stops_from_its_button_and_sets_no_flags(widget, monkeypatch, qtbot):
    """The Check quality button stops a running check; out of focus is judged among all the
    images, so a check stopped while reading sets no flags and says so."""
    import time

    from napari_bioanomaly.widgets import _annotate_list

    read = _annotate_list.check_file

    def slow(root, record):
        time.sleep(0.3)
        return read(root, record)

    monkeypatch.setattr(_annotate_list, "check_file", slow)
    messages = []
    monkeypatch.setattr(widget, "_info", messages.append)
    assert widget.check_quality()
    qtbot.waitUntil(lambda: widget.qc_progress.value() >= 1, timeout=30_000)
    widget.qc_button.click()  # the same button stops it
    assert widget.qc_button.text() == "Stopping..." and not widget.qc_button.isEnabled()
    qtbot.waitUntil(lambda: widget._qc_worker is None, timeout=30_000)
    images = widget._session.dataset.images
    assert widget.qc_progress.value() < len(images)
    assert all("qc" not in im.file_attributes for im in images)
    assert "stopped after" in messages[-1] and "no flags set" in messages[-1]
    assert widget.qc_button.text() == "Check quality" and widget.qc_button.isEnabled()
    assert not widget.stop_quality()  # nothing left to stop
    # another dataset opened while a check runs: the check is dropped, and said so
    first = widget._session.path
    assert widget.check_quality()
    qtbot.waitUntil(lambda: widget.qc_progress.value() >= 1, timeout=30_000)
    assert widget.open_path(copy_beside(first.parent))
    qtbot.waitUntil(lambda: widget._qc_worker is None, timeout=30_000)
    assert f"The quality check of {first} was dropped" in messages[-1]
    assert all("qc" not in im.file_attributes for im in widget._session.dataset.images)


def copy_beside(folder):
    """A copy of a dataset folder beside it."""
    import shutil

    copy = folder.with_name(folder.name + " copy")
    shutil.copytree(folder, copy)
    return copy


def test_status_names_only_what_went_wrong(make_napari_viewer, dataset_dir, qtbot):
    """The status line counts missing images and import issues in their number, and
    leaves out what there is none of."""
    first = sorted(dataset_dir.glob("*.tif"))[0]
    first.unlink()
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    text = w.status_label.text()
    assert text.startswith(f"{dataset_dir.name}/annotations.json: ")  # which dataset
    assert text.endswith("; 1 missing image") and "import issue" not in text
    # a COCO dataset: that its edits go to a project beside it is a note, not an issue
    from napari_bioanomaly.core import annotations

    ds, _ = annotations.load(dataset_dir / "annotations.json", read_images=False)
    (dataset_dir / "annotations.json").unlink()
    annotations.save(ds, dataset_dir / "instances.json", "coco")
    assert w.open_path(dataset_dir)
    text = w.status_label.text()
    assert "(coco); 1 missing image, 1 note" in text and "import issue" not in text
    assert "changes are saved to instances.via.json" in w.status_label.toolTip()


def test_status_says_the_links_to_outside_the_folder_it_left_out(
    make_napari_viewer, dataset_dir, tmp_path, qtbot
):
    """An image linked in from a raw-data store outside the folder was left out of the
    list without a word: the status line counts it apart, its tooltip says which and why."""
    import os

    store = tmp_path / "store"
    store.mkdir()
    first = sorted(dataset_dir.glob("*.tif"))[0]
    (store / "raw.tif").write_bytes(first.read_bytes())
    os.symlink(store / "raw.tif", dataset_dir / "linked.tif")
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    text = w.status_label.text()
    assert text.endswith("; 1 link leading outside the folder left out"), text
    assert "import issue" not in text
    assert f"linked.tif: a link to {store / 'raw.tif'}, outside the dataset folder; left " \
           "out (only images inside the folder chosen are read" in w.status_label.toolTip()  # fmt: skip
    names = [im.filename for im in w.annotator.session.dataset.images]
    assert "linked.tif" not in names


def test_opening_another_dataset_takes_the_old_layers_away_unless_unsaved(
    make_napari_viewer, dataset_dir, tmp_path, qtbot, monkeypatch
):
    """Left in the viewer, the old dataset's layers looked editable and what was drawn on
    them was saved nowhere: they go. When its last changes cannot be saved (a read-only
    folder) its layer stays, named as not saved, and the failed saves are errors."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(dataset_dir, other)
    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer)
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    assert w.open_path(other)
    assert sorted(layer.name for layer in viewer.layers) == ["ground truth", "image"]
    errors, asked = [], []
    monkeypatch.setattr(w, "_error", errors.append)
    monkeypatch.setattr(annotate_module, "ask_save_failed", lambda *a: asked.append(a[1]))

    def refuse(*args, **kwargs):
        raise OSError("[Errno 30] Read-only file system")

    monkeypatch.setattr(w.annotator.session, "save", refuse)
    w.annotator.shapes_layer.add_polygons([square(5, 5, 10)])
    w.annotator.shapes_layer.add_polygons([square(25, 5, 10)])
    assert len(errors) == 2 and errors[-1].startswith("autosave failed: [Errno 30]")
    assert len(asked) == 1 and "Read-only" in str(asked[0])  # asked once, not at every edit
    assert w.open_path(dataset_dir)
    names = sorted(layer.name for layer in viewer.layers)
    assert "ground truth (NOT SAVED)" in names and names.count("ground truth") == 1


def test_a_failing_save_offers_a_copy_of_every_annotation_elsewhere(
    make_napari_viewer, dataset_dir, tmp_path, qtbot, monkeypatch
):
    """Saves that keep failing (a read-only folder) kept the edits only in memory: the
    first failure offers to write them all to another file, and a choice of the dataset's
    own file is refused and asked again."""
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    session = w.annotator.session
    own = session.path.read_text()
    boxes, chosen = [], [str(session.path), str(tmp_path / "copy.json")]

    def click(box):
        boxes.append(box)
        box.clickedButton = lambda: next(b for b in box.buttons() if "copy" in b.text())
        return 0

    monkeypatch.setattr(QMessageBox, "exec", click)
    monkeypatch.setattr(QMessageBox, "exec_", click, raising=False)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (chosen.pop(0), ""))
    monkeypatch.setattr(w.annotator.session, "save", lambda *a, **k: (_ for _ in ()).throw(
        OSError("[Errno 30] Read-only file system")))  # fmt: skip
    w.annotator.current_class = "scratch"
    w.annotator.shapes_layer.add_polygons([square(5, 5, 10)])
    assert len(boxes) == 1 and "Read-only" in boxes[0].text()
    assert {b.text() for b in boxes[0].buttons()} == {"Save a copy as...", "Keep trying"}
    assert not chosen  # the own file refused, the second choice taken
    copy, _ = annotations.load(tmp_path / "copy.json", dataset_dir, read_images=False)
    image = session.image.filename
    regions = next(im for im in copy.images if im.filename == image).regions
    assert regions[-1].label == "scratch"  # the unsaved edit is in the copy
    assert session.path.read_text() == own and session.dirty  # still trying its own file
    w.annotator.shapes_layer.add_polygons([square(40, 5, 10)])
    assert len(boxes) == 1  # not asked again in the same run of failures


def test_an_unreadable_image_shows_its_regions_but_takes_no_drawing(
    make_napari_viewer, dataset_dir, qtbot
):
    broken = sorted(dataset_dir.glob("*.tif"))[1]
    broken.write_bytes(b"II*\x00 truncated")
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    said = []
    assert w.open_path(dataset_dir)
    w.annotator.message.connect(said.append)
    index = [im.filename for im in w._session.dataset.images].index(broken.name)
    w.go_to(index)
    layer = w.annotator.shapes_layer
    assert not layer.editable and len(layer.data) == len(w._session.image.regions)
    w.annotator.add_regions([w._session.image.regions[0]] if w._session.image.regions else [])
    assert not layer.editable  # a refill of the layer (Review's accept, a reload) keeps it so
    assert said and said[-1].endswith("its regions are shown, but cannot be edited")
    assert broken.name in said[-1]
    w.go_to(0)
    assert w.annotator.shapes_layer.editable  # a readable image: drawing again


def test_the_image_goes_under_outlines_already_in_the_viewer(
    make_napari_viewer, dataset_dir, qtbot
):
    viewer = make_napari_viewer()
    viewer.add_shapes(None, name="predictions (review)")  # e.g. left by Review
    w = AnnotateWidget(viewer)
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "image" and names.index("predictions (review)") > 0


@pytest.mark.parametrize("value", [4000, 0])
def test_a_flat_image_is_shown_with_its_own_regions(make_napari_viewer, dataset_dir, qtbot, value):
    """An image of one grey level (a closed shutter, a saturated frame) is shown like any
    other: napari refused its contrast range, the image before's outlines stayed on screen
    and the next save wrote them into this image."""
    import tifffile

    flat = sorted(dataset_dir.glob("*.tif"))[1]
    shape = tifffile.imread(flat).shape
    tifffile.imwrite(flat, np.full(shape, value, np.uint16))
    before = on_disk(dataset_dir)
    w = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w.open_path(dataset_dir)
    index = [im.filename for im in w._session.dataset.images].index(flat.name)
    w.go_to(index)
    layer = w.annotator.shapes_layer
    assert w._session.image.filename == flat.name
    assert len(layer.data) == len(before[flat.name]["regions"])
    low, high = w.annotator.image_layer.contrast_limits_range
    assert low == value and high > low
    w.go_to(0)

    after = on_disk(dataset_dir)
    assert [len(after[n]["regions"]) for n in after] == [len(before[n]["regions"]) for n in after]


def test_an_image_that_fails_to_show_leaves_the_session_on_the_image_before(
    widget, dataset_dir, monkeypatch
):
    """Whatever goes wrong while showing an image, the outlines on screen and the image
    the session saves them to stay paired: nothing is written into the wrong image."""
    before = on_disk(dataset_dir)
    first = widget._session.image.filename

    def broken(pixels):
        raise ValueError("napari refused the image")

    monkeypatch.setattr(widget.annotator, "_show_pixels", broken)
    with pytest.raises(ValueError):
        widget.annotator.show(1)
    assert widget._session.image.filename == first
    monkeypatch.undo()
    widget.annotator.sync()

    assert on_disk(dataset_dir) == before


def test_open_buttons_read_in_the_background(make_napari_viewer, dataset_dir, qtbot,
                                             tmp_path, monkeypatch):  # fmt: skip
    """Open file... read the annotation file on napari's thread (2.1 s frozen for a real
    31 MiB file of 2,000 images). It is read in a worker: the status says so, the dataset
    on screen stays until the new one is shown, a later open replaces one under way (the
    earlier one, read last, shows nothing), one that fails says why and leaves the dataset
    shown, a widget closed meanwhile shows nothing, and a file saved while it was read is
    read again."""
    import shutil
    import threading

    from qtpy.QtWidgets import QFileDialog

    from napari_bioanomaly.core.session import AnnotationSession
    from tests.support.jobs import wait_for_open

    other = tmp_path / "other"
    shutil.copytree(dataset_dir, other)
    real, go, reading = AnnotationSession.open, threading.Event(), threading.Event()
    held = [str(dataset_dir / "annotations.json")]  # the reads that wait for the test

    def read(path, *args, **kwargs):  # read, then held until the test lets it go
        session = real(path, *args, **kwargs)
        if str(path) in held:
            reading.set()
            assert go.wait(30)
        return session

    monkeypatch.setattr(AnnotationSession, "open", staticmethod(read))
    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer)
    qtbot.addWidget(widget)
    errors = []
    monkeypatch.setattr(widget, "_error", errors.append)
    chosen = [str(dataset_dir / "annotations.json")]
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (chosen[0], ""))
    widget._ask_file()
    first = widget._open_worker
    assert widget.opening and widget.status_label.text() == "Opening annotations.json..."
    assert reading.wait(30) and widget.annotator is None  # napari live meanwhile
    chosen[0] = str(other / "annotations.json")
    widget._ask_file()  # another file asked for before the first is read: it wins
    wait_for_open(qtbot, widget)
    assert widget.annotator.session.path == other / "annotations.json"
    go.set()  # the first read ends after: it shows nothing
    qtbot.waitUntil(lambda: not first.is_running, timeout=30_000)
    qtbot.wait(100)
    assert widget.annotator.session.path == other / "annotations.json"
    assert widget.status_label.text().startswith("other/annotations.json: 6 images")
    (tmp_path / "empty").mkdir()
    chosen[0] = str(tmp_path / "empty" / "missing.json")
    widget._ask_file()
    wait_for_open(qtbot, widget)
    assert errors and "missing.json" in errors[-1]
    assert widget.status_label.text().startswith("other/annotations.json: 6 images")
    assert widget.annotator.session.path == other / "annotations.json"
    # saved while it was read (by the Review widget, closed since): read again
    go.clear()
    reading.clear()
    held[:] = [str(dataset_dir)]
    widget.open_in_background(dataset_dir)
    assert reading.wait(30)
    saved, _ = annotations.load(dataset_dir / "annotations.json")
    saved.images[0].regions.append(Region(square(5, 5, 9), "dust"))
    annotations.save(saved, dataset_dir / "annotations.json")
    held.clear()
    go.set()
    wait_for_open(qtbot, widget)
    assert len(widget.annotator.session.dataset.images[0].regions) == len(saved.images[0].regions)
    assert not widget.annotator.session.disk_changed()
    # closed while a dataset is read: nothing shown, nothing said
    fresh = AnnotateWidget(make_napari_viewer())
    monkeypatch.setattr(fresh, "_error", errors.append)
    go.clear()
    reading.clear()
    held[:] = [str(other)]
    fresh.open_in_background(other)
    worker = fresh._open_worker
    assert reading.wait(30)
    fresh.close()
    go.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    qtbot.wait(100)
    assert fresh.annotator is None and not fresh.viewer.layers


def test_a_dataset_opened_in_the_background_is_encoded_for_its_first_save(
    make_napari_viewer, dataset_dir, qtbot
):
    """Read in the worker, the dataset is encoded there too: its first autosave encodes
    the image edited, not every image on napari's thread."""
    from tests.support.jobs import wait_for_open

    widget = AnnotateWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_in_background(dataset_dir)
    wait_for_open(qtbot, widget)
    session = widget.annotator.session
    assert set(session._entries) == {im.filename for im in session.dataset.images}
