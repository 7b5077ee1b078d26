"""The Review widget with a real viewer: table = evaluate, thresholds, navigation, corrections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QPushButton

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.evaluate import evaluate
from napari_bioanomaly.core.model import Region
from napari_bioanomaly.core.text import counted
from napari_bioanomaly.widgets.review import ReviewWidget
from tests.support.jobs import wait_for_job, wait_for_open
from tests.support.wrap import numbers_cut


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


@pytest.fixture
def review(make_napari_viewer, dataset_dir, qtbot):
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images:  # predictions: ground truth without its first region, plus a weak FP
        kept = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions[1:]]
        im.regions = [*kept, Region(square(100, 100, 12), "dust", score=0.3, source="model")]
    annotations.save(gt, dataset_dir / "pred.json", "via")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    return widget


def cli_rows(folder, score):
    gt, _ = annotations.load(folder / "annotations.json")
    pred, _ = annotations.load(folder / "pred.json", read_images=False)
    return {r.image: (r.tp, r.fp, r.fn) for r in evaluate(gt, pred, 0.5, score).rows}


def test_table_matches_evaluate_and_thresholds_update_it(review, dataset_dir):
    # as evaluate with its defaults: every prediction counts, the weak (0.3) FPs too
    table = {r.image: (r.tp, r.fp, r.fn) for r in review.model.rows}
    assert review.score_slider.value() == 0 and table == cli_rows(dataset_dir, 0.0)
    assert all(fp == 1 for _, fp, _ in table.values())
    review.score_slider.setValue(50)
    assert {r.image: (r.tp, r.fp, r.fn) for r in review.model.rows} == cli_rows(dataset_dir, 0.5)
    assert all(r.fp == 0 for r in review.model.rows)  # the weak FPs are under the threshold
    assert "TP" in review.summary.text() and "cell_line=HeLa" in review.summary.text()


def test_iou_slider_changes_the_table_as_evaluate_does(make_napari_viewer, dataset_dir, qtbot):
    """Predictions that are not copies of the ground truth: every second region grown by
    a quarter about its centre (IoU about 0.6 with the truth), the others exact."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    k = 0
    for im in gt.images:
        grown = []
        for r in im.regions:
            centre = r.polygon.mean(axis=0)
            poly = centre + (r.polygon - centre) * (1.25 if k % 2 else 1.0)
            grown.append(Region(poly, r.label, score=0.9, source="model"))
            k += 1
        im.regions = grown
    annotations.save(gt, dataset_dir / "pred.json", "via")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    truth, _ = annotations.load(dataset_dir / "annotations.json")
    pred, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    tables = {}
    for iou in (0.5, 0.8):
        widget.iou_slider.setValue(round(iou * 100))
        tables[iou] = {r.image: (r.tp, r.fp, r.fn) for r in widget.model.rows}
        expected = {r.image: (r.tp, r.fp, r.fn) for r in evaluate(truth, pred, iou, 0.5).rows}
        assert tables[iou] == expected
    tp = {iou: sum(v[0] for v in t.values()) for iou, t in tables.items()}
    assert tp[0.5] > tp[0.8] > 0, tp  # stricter matching: fewer matches, more FP and FN


def test_clicking_a_row_shows_that_image_and_lists_errors(review):
    index = review.proxy.index(3, 0)
    review.table.clicked.emit(index)
    assert review.annotator.index == review.proxy.mapToSource(index).row() == 3
    # long image paths lose their common start, not the file name, in the table
    assert review.table.textElideMode() == Qt.TextElideMode.ElideLeft
    image = review.annotator.session.image
    # shown: the image's predictions (its regions but the first) and the weak false alarm
    assert len(review.pred_layer.data) == max(len(image.regions) - 1, 0) + 1
    review.score_slider.setValue(50)  # shown: those at or above the score threshold
    assert len(review.pred_layer.data) == max(len(image.regions) - 1, 0)
    fns = [review.errors.item(i).text() for i in range(review.errors.count())]
    assert len([t for t in fns if t.startswith("FN")]) == (1 if image.regions else 0)


def test_accept_and_reject_are_saved(review, dataset_dir):
    review.score_slider.setValue(0)
    review.annotator.show(0)
    before_gt = len(review.annotator.session.image.regions)
    n_pred = len(review.pred_layer.data)
    review.pred_layer.selected_data = {n_pred - 1}  # the weak FP square
    assert review.accept_selected() == 1
    saved = json.loads((dataset_dir / "annotations.json").read_text())
    img = next(v for v in saved["_via_img_metadata"].values() if v["filename"] == "img_000.tif")
    assert len(img["regions"]) == before_gt + 1
    assert img["regions"][-1]["region_attributes"]["source"] == "model-accepted"
    pred = annotations.load(dataset_dir / "pred.json", read_images=False)[0].images[0]
    assert len(pred.regions) == n_pred  # accepted, the prediction stays: found now
    assert len(review.pred_layer.data) == n_pred and not review.pred_layer.selected_data
    review.pred_layer.selected_data = {0}
    assert review.reject_selected() == 1
    pred = annotations.load(dataset_dir / "pred.json", read_images=False)[0].images[0]
    assert len(pred.regions) == n_pred - 1
    row = next(r for r in review.model.rows if r.image == "img_000.tif")
    assert row.n_gt == before_gt + 1 and row.n_pred == n_pred - 1
    review.mark_reviewed()
    assert review.annotator.session.status(0) == "reviewed"


def test_the_fields_swapped_are_refused_and_an_annotator_s_file_is_read_only(
    make_napari_viewer, dataset_dir, qtbot
):
    """pred.json given as the ground truth and annotations.json as the predictions: each
    Alt-X deleted an annotation from annotations.json, and Accept all wrote a person's
    regions into pred.json. The swap is refused, naming the file; another annotator's
    file as the predictions opens with Reject and the proposals off, the summary says why
    (naming the file), Alt-X says it too, and the file stays."""
    import shutil

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images:
        im.regions = [Region(square(100, 100, 12), "dust", score=0.9, source="model")]
    annotations.save(gt, dataset_dir / "pred.json", "via")
    other = dataset_dir / "annotator_b.json"
    shutil.copy(dataset_dir / "annotations.json", other)
    before = {p: p.read_bytes() for p in (other, dataset_dir / "pred.json")}
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert not widget.open(dataset_dir / "pred.json", dataset_dir / "annotations.json")
    assert widget.summary.text().startswith(f"Cannot open: {dataset_dir / 'pred.json'}: holds "
                                            "only a model's predictions")  # fmt: skip
    assert widget.open(dataset_dir / "annotations.json", other)
    reject = next(b for b in widget.findChildren(QPushButton) if b.text() == "Reject selected")
    accept = next(b for b in widget.findChildren(QPushButton) if b.text() == "Accept selected")
    assert not reject.isEnabled() and not widget.propose_button.isEnabled()
    assert accept.isEnabled()
    assert "annotator_b.json holds" in widget.summary.text()
    assert "reviewed read-only" in widget.summary.text()
    widget.annotator.show(0)
    assert len(widget.pred_layer.data)
    widget.pred_layer.selected_data = {0}
    assert widget.reject_selected() == 0
    assert "Not rejected: annotator_b.json holds" in widget.summary.text()
    assert {p: p.read_bytes() for p in before} == before
    # model predictions opened next are correctable again
    assert widget.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    assert reject.isEnabled() and "read-only" not in widget.summary.text()


def test_predictions_written_again_are_shown_not_overwritten(review, dataset_dir, qtbot):
    """predict wrote pred.json again during the review (one more region on img_000): a
    rejection wrote the old predictions over it without a word. Now the review opens the
    new file, says so, and nothing is written over it."""
    review.annotator.show(0)
    pred, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    pred.images[0].regions.append(Region(square(60, 60, 10), "dust", score=0.8, source="model"))
    annotations.save(pred, dataset_dir / "pred.json", "via")
    written = (dataset_dir / "pred.json").read_bytes()
    n = len(review.pred_layer.data)
    review.pred_layer.selected_data = {0}
    assert review.reject_selected() == 0
    assert (dataset_dir / "pred.json").read_bytes() == written
    wait_for_open(qtbot, review)  # opened again in the background
    assert len(review.pred_layer.data) == n + 1  # the new predictions on screen
    assert "changed on disk since the review read it" in review.summary.text()
    assert "the review shows it now" in review.summary.text()
    review.pred_layer.selected_data = {0}
    assert review.reject_selected() == 1  # on the new file now
    again, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    assert len(again.images[0].regions) == n


def test_accepting_what_the_ground_truth_has_adds_nothing_twice(review, dataset_dir):
    """Accept all on an image whose predictions are its ground truth less one region, and a
    weak false positive: the matching ones are found already (not copied, which turned
    true positives into misses), the false positive is added, every prediction stays and
    counts as found, and the summary says so."""
    review.score_slider.setValue(0)
    review.annotator.show(0)
    truth = list(review.annotator.session.image.regions)
    n_pred = len(review.pred_layer.data)
    assert n_pred == len(truth)  # len(truth) - 1 matching, and the weak FP
    row = next(r for r in review.model.rows if r.image == "img_000.tif")
    assert (row.tp, row.fn) == (len(truth) - 1, 1)
    assert review.accept_all() == 1  # the false positive alone
    assert review.review.confirmed == len(truth) - 1
    regions = review.annotator.session.image.regions
    assert len(regions) == len(truth) + 1 and regions[-1].source == "model-accepted"
    row = next(r for r in review.model.rows if r.image == "img_000.tif")
    assert (row.n_gt, row.n_pred) == (len(truth) + 1, n_pred)
    assert (row.tp, row.fp, row.fn) == (len(truth), 0, 1)  # only the region never predicted
    assert f"{len(truth) - 1} accepted prediction" in review.summary.text()
    saved = json.loads((dataset_dir / "annotations.json").read_text())
    img = next(v for v in saved["_via_img_metadata"].values() if v["filename"] == "img_000.tif")
    assert len(img["regions"]) == len(truth) + 1
    pred = annotations.load(dataset_dir / "pred.json", read_images=False)[0].images[0]
    assert len(pred.regions) == n_pred  # every prediction stays in the predictions file


def test_shortcuts_accept_reject_mark_and_go_to_the_next_image_with_errors(review,
                                                                         monkeypatch):  # fmt: skip
    """Reviewing thousands of images by mouse alone was slow: Alt-A / Alt-X accept or
    reject the selected predictions, Alt-M marks the image reviewed, Alt-E goes to the
    next image with a miss or a false alarm (wrapping), PageDown the next image."""
    import dataclasses

    from napari.utils.key_bindings import KeyBinding

    from napari_bioanomaly.widgets.review import SHORTCUTS

    viewer = review.viewer

    def press(key):
        viewer.keymap[KeyBinding.from_str(key)](viewer)

    assert {k for k, _ in SHORTCUTS} >= {"Alt-A", "Alt-X", "Alt-E", "Alt-M"}
    review.score_slider.setValue(0)
    names = review.review.names
    review.annotator.show(0)
    rows = {r.image: r for r in review.rows()}
    expected = next(n for n in names[1:] + names[:1] if rows[n].fn or rows[n].fp)
    press("Alt-E")
    assert review._image == expected
    press("PageDown")
    assert review._image == names[(names.index(expected) + 1) % len(names)]
    busy = next(i for i, n in enumerate(names) if len(review.review.prediction(n).regions) >= 2)
    review.annotator.show(busy)  # a matching prediction and the weak false alarm
    n_pred = len(review.pred_layer.data)
    review.pred_layer.selected_data = {n_pred - 1}
    press("Alt-X")
    assert len(review.review.prediction(review._image).regions) == n_pred - 1
    truth = list(review.annotator.session.image.regions)
    review.pred_layer.selected_data = {0}
    press("Alt-A")
    assert review.review.confirmed == 1 and review.annotator.session.image.regions == truth
    press("Alt-M")
    assert review.annotator.session.status(review.annotator.index) == "reviewed"
    clean = [dataclasses.replace(r, fn=0, fp=0) for r in review.review.rows()]
    monkeypatch.setattr(review.review, "rows", lambda: clean)
    here = review._image
    assert review.next_with_errors() is None and review._image == here
    assert "No image has a miss or a false alarm" in review.summary.text()


def test_export_table(review, tmp_path):
    path = review.export_table(tmp_path / "table.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("image,group,GT,pred,TP,FP,FN") and len(lines) == 7
    said = review.summary.text().splitlines()
    assert said[-1] == f"Wrote 6 rows to {path}" and said[0].startswith("all: TP")


def test_export_table_that_cannot_be_written_says_which_file(review, tmp_path, monkeypatch):
    """A folder that cannot be written (root ignores permissions: the error as atomic_write
    raises it there, about its hidden temporary file): said in the widget, naming the file
    the user chose, not raised."""
    from types import SimpleNamespace

    from napari_bioanomaly.core import fileio

    target = tmp_path / "ro" / "table.csv"

    def denied(prefix, suffix, dir):
        hidden = Path(dir) / f"{prefix}rne2ivhm{suffix}"
        raise PermissionError(13, "Permission denied", str(hidden))

    monkeypatch.setattr(fileio, "tempfile", SimpleNamespace(mkstemp=denied))
    assert review.export_table(target) is None
    said = review.summary.text()
    assert said.splitlines()[-1] == (f"Table not exported: {target}: cannot be written "
                                     "(Permission denied; the folder is read-only for you)")  # fmt: skip
    assert ".tmp" not in said and said.startswith("all: TP")  # the scores stay above it


def test_one_click_train_and_review(make_napari_viewer, dataset_dir, qtbot):
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.train_settings = {
        "epochs": 1,
        "steps_per_epoch": 2,
        "tile": 64,
        "batch": 2,
        "base_channels": 8,
    }
    assert widget.train_and_review()
    wait_for_job(qtbot, widget, 180_000)
    assert (dataset_dir / "bioanomaly-model.pt").is_file()
    assert (dataset_dir / "annotations.predictions.json").is_file()
    assert widget.annotator is not None and 1 <= len(widget.names) < 6  # the validation images
    assert [r.image for r in widget.model.rows] == widget.names
    assert widget.model_edit.text() == str(dataset_dir / "bioanomaly-model.pt")  # to predict
    # the review starts at the trained model's operating point: every region it predicted
    # counts, and proposals are outlined as predict outlines them
    from napari_bioanomaly.ml.predict import Predictor

    point = Predictor.load(dataset_dir / "bioanomaly-model.pt", "cpu").operating_point
    assert widget.heat_slider.value() == round(point.threshold * 100)
    assert widget.score_slider.value() <= round(point.threshold * 100)


def test_nothing_open_is_said_and_the_open_button_opens(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    # what needs an open review waits for one; called anyway, it says so (no traceback)
    needs_review = ["Accept selected", "Reject selected", "Accept all", "Next with errors",
                    "Mark reviewed", "Propose regions", "Export table...",
                    "Export corrected..."]  # fmt: skip
    buttons = {b.text(): b for b in widget.findChildren(QPushButton)}
    assert not any(buttons[t].isEnabled() for t in needs_review)
    assert buttons["Open for review"].isEnabled() and buttons["Predict && review"].isEnabled()
    assert widget.export_corrected("via-project", tmp_path / "c.json") == []
    assert widget.summary.text() == "Export corrected: nothing is open for review."
    assert widget.export_table(tmp_path / "t.csv") is None
    assert widget.summary.text() == "Export table: nothing is open for review."
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "t.csv").exists()
    pred, _ = annotations.load(dataset_dir / "annotations.json")
    for r in pred.regions:  # a model's (a person's would be reviewed read-only)
        r.score, r.source = 0.9, "model"
    annotations.save(pred, dataset_dir / "pred.json", "via")
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.pred_edit.setText(str(dataset_dir / "pred.json"))
    button = next(b for b in widget.findChildren(QPushButton) if b.text() == "Open for review")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    # read and scored in a worker: napari stays live (13 s frozen for 2,000 images before)
    assert widget.opening and widget.summary.text() == "Opening pred.json for review..."
    assert widget.annotator is None and not buttons["Accept selected"].isEnabled()
    wait_for_open(qtbot, widget)
    assert widget.annotator is not None and len(widget.model.rows) == 6
    assert all(buttons[t].isEnabled() for t in needs_review)
    assert widget.export_corrected("via-project", tmp_path / "c.json")
    widget._release()  # nothing open again: the buttons wait again
    assert not any(buttons[t].isEnabled() for t in needs_review)


def test_opens_in_the_background_the_latest_asked_for_and_none_once_closed(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """Opened in a worker, a review asked for while another was opening wins (the earlier
    one's end shows nothing), a file that cannot be read is named, the review on screen
    stays meanwhile, and a widget closed while one opens opens no layers."""
    gt = dataset_dir / "annotations.json"
    first, second = dataset_dir / "first.json", dataset_dir / "second.json"
    truth, _ = annotations.load(gt)
    annotations.save(truth, first, "via")
    for im in truth.images:
        im.regions = []
    annotations.save(truth, second, "via")
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    widget.open_in_background(gt, first)
    widget.open_in_background(gt, second)
    wait_for_open(qtbot, widget)
    qtbot.wait(200)  # the first one's end, had it been shown
    assert widget.review.path == second and widget.pred_edit.text() == str(second)
    assert sum(r.n_pred for r in widget.model.rows) == 0
    broken = dataset_dir / "broken.json"
    broken.write_text("{not json")
    widget.open_in_background(gt, broken)
    wait_for_open(qtbot, widget)
    assert widget.summary.text().startswith(f"Cannot open: {broken}")
    assert widget.review.path == second  # the review before stays
    other = ReviewWidget(viewer)
    qtbot.addWidget(other)
    layers = len(viewer.layers)
    other.open_in_background(gt, first)
    other.close()
    qtbot.waitUntil(lambda: not other._open_worker.is_running, timeout=30_000)
    qtbot.wait(100)  # its end delivered
    assert other.review is None and len(viewer.layers) == layers


def test_an_open_replaced_stops_and_empty_fields_are_asked_for(
    make_napari_viewer, dataset_dir, qtbot, monkeypatch
):
    """Open pressed three times on 2,000 images ran three workers to their end (the one
    wanted came three times later); an empty field opened the folder napari started in
    as the ground truth, or raised a ValueError."""
    import time

    from napari_bioanomaly.core.review import ReviewSession

    annotations.save(annotations.load(dataset_dir / "annotations.json")[0],
                     dataset_dir / "pred.json", "via")  # fmt: skip
    real, steps_done = ReviewSession.opening, []

    def slow(gt, path, images=None):  # as thousands of images score
        steps = real(gt, path, images)
        done = 0
        for done in range(200):
            time.sleep(0.01)
            yield done, 200
        steps_done.append(done)
        return (yield from steps)

    monkeypatch.setattr(ReviewSession, "opening", staticmethod(slow))
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_in_background(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    first = widget._open_worker
    qtbot.wait(100)
    widget.open_in_background(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    qtbot.waitUntil(lambda: not first.is_running, timeout=5_000)  # long before its 2 s
    wait_for_open(qtbot, widget)
    assert steps_done == [199] and widget.review is not None  # the second alone ran through
    for gt, pred, what in (("", "p.json", "ground truth annotation file"),
                           (str(dataset_dir / "annotations.json"), " ", "predictions file")):  # fmt: skip
        widget.gt_edit.setText(gt)
        widget.pred_edit.setText(pred)
        widget._open_fields()
        assert not widget.opening
        assert widget.summary.text() == f"Cannot open: choose the {what} first (type it, or ...)."


def held_opening(monkeypatch):
    """``ReviewSession.opening`` made to wait after its first step, the first time only,
    until ``go`` is set (``read`` is set then); returns ``read, go`` and the ground truths'
    datasets it opened, in order."""
    import threading

    from napari_bioanomaly.core.review import ReviewSession

    read, go, real, opened = threading.Event(), threading.Event(), ReviewSession.opening, []

    def held(gt, path, images=None):
        opened.append(gt.dataset)
        steps = real(gt, path, images)
        first = next(steps)
        if len(opened) == 1:
            read.set()
            go.wait(30)
        yield first
        return (yield from steps)

    monkeypatch.setattr(ReviewSession, "opening", staticmethod(held))
    return read, go, opened


def test_the_same_file_opened_elsewhere_meanwhile_is_read_again_in_the_background(
    make_napari_viewer, dataset_dir, qtbot, monkeypatch
):
    """The Annotate widget opened the ground truth while the review opened it: the review
    was opened again on that session on the GUI thread (napari frozen 6-8 s at 2,000
    images). It is opened again in the background, on the session both widgets share."""
    from napari_bioanomaly.core.review import ReviewSession

    annotations.save(annotations.load(dataset_dir / "annotations.json")[0],
                     dataset_dir / "pred.json", "via")  # fmt: skip
    read, go, _ = held_opening(monkeypatch)  # until Annotate has opened it
    in_one_go = []
    monkeypatch.setattr(ReviewSession, "open", classmethod(lambda *a: in_one_go.append(a)))
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_in_background(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    assert read.wait(30)
    shared = widget.workspace.session(dataset_dir / "annotations.json")  # Annotate opens it
    go.set()
    wait_for_open(qtbot, widget)
    assert widget.review is not None and widget.review.gt is shared and not in_one_go


def test_the_ground_truth_read_again_while_a_review_opens_is_scored_in_the_background(
    make_napari_viewer, dataset_dir, qtbot, monkeypatch
):
    """The ground truth, open in the Annotate widget, was read again from disk while the
    review opened (theirs reloaded): the end of the open scored every image again on the
    GUI thread (seconds at 2,000 images). It opens again in the background, and what it
    shows is the file as read again."""
    from napari_bioanomaly.core.review import ReviewSession

    gt_path = dataset_dir / "annotations.json"
    pred, _ = annotations.load(gt_path)
    for r in pred.regions:
        r.score, r.source = 0.9, "model"
    annotations.save(pred, dataset_dir / "pred.json", "via")
    read, go, opened = held_opening(monkeypatch)  # until the file is read again
    scored_all = []
    monkeypatch.setattr(ReviewSession, "ground_truth_reloaded",
                        lambda self: scored_all.append(self))  # fmt: skip
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    shared = widget.workspace.session(gt_path)  # open in the Annotate widget
    widget.open_in_background(gt_path, dataset_dir / "pred.json")
    assert read.wait(30)
    theirs, _ = annotations.load(gt_path)
    theirs.images[0].regions = []  # someone else saved it; Annotate reads it again
    annotations.save(theirs, gt_path)
    shared.reload()
    go.set()
    wait_for_open(qtbot, widget)
    assert len(opened) == 2 and opened[1] is shared.dataset and not scored_all
    row = next(r for r in widget.review.rows() if r.image == theirs.images[0].filename)
    assert row.n_gt == 0  # the file as read again


def test_an_import_open_elsewhere_and_given_by_its_own_name_opens_once(
    make_napari_viewer, dataset_dir, qtbot
):
    """Annotate had a COCO import open, its edits not saved yet (its session is that of
    data.coco.via.json, not on disk); Review given data.coco.json read it again on that
    session under the import's name, found it open elsewhere, and so on for ever."""
    dataset, _ = annotations.load(dataset_dir / "annotations.json")
    coco = dataset_dir / "data.coco.json"
    annotations.save(dataset, coco, "coco")
    annotations.save(dataset, dataset_dir / "pred.json", "via")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    shared = widget.workspace.session(coco)  # the Annotate widget's
    assert not shared.path.exists()
    widget.open_in_background(coco, dataset_dir / "pred.json")
    wait_for_open(qtbot, widget, 30_000)
    assert widget.review is not None and widget.review.gt is shared


def test_a_correction_written_while_the_review_opens_is_in_what_it_shows(
    review, dataset_dir, qtbot, monkeypatch
):
    """The review on screen rejected a prediction while the same file opened again in the
    background: the review shown then was read before the rejection was written (the
    prediction back on screen). It is read again; and an open that cannot even start
    (a folder that cannot be listed) says so instead of waiting for ever."""
    import threading

    from napari_bioanomaly.core.review import ReviewSession

    pred = dataset_dir / "pred.json"
    review.annotator.show(0)
    shown = len(review.pred_layer.data)
    read, real = threading.Event(), ReviewSession.opening

    def opening(gt, path, images=None):  # the file read, then the rejection written
        steps = real(gt, path, images)
        first = next(steps)
        read.set()
        yield first
        return (yield from steps)

    monkeypatch.setattr(ReviewSession, "opening", staticmethod(opening))
    review.open_in_background(dataset_dir / "annotations.json", pred)
    assert read.wait(30)
    review.pred_layer.selected_data = {0}
    assert review.reject_selected() == 1  # on the review still shown
    wait_for_open(qtbot, review)
    assert not review.review.predictions_changed()
    name = review.review.names[0]
    on_disk, _ = annotations.load(pred, read_images=False)
    assert len({im.filename: im for im in on_disk.images}[name].regions) == shown - 1
    assert len(review.review.prediction(name).regions) == shown - 1

    def unlistable(path):
        raise PermissionError(13, "Permission denied", str(dataset_dir))

    monkeypatch.setattr(review.workspace, "opened", unlistable)
    review.open_in_background(dataset_dir / "annotations.json", pred)
    assert not review.opening
    assert review.summary.text() == f"Cannot open: {dataset_dir}: Permission denied"


def test_export_corrected_annotations(review, tmp_path, monkeypatch):
    for fmt, out in (
        ("via-project", tmp_path / "c.json"),
        ("coco", tmp_path / "c_coco.json"),
        ("masks", tmp_path / "m"),
    ):
        written = review.export_corrected(fmt, out)
        assert written and all(p.exists() for p in written)
        said = f"Wrote {counted(len(written), 'file')} to {out}: 6 images"
        assert said in review.summary.text()
    ds, report = annotations.load(tmp_path / "c.json", read_images=False)
    assert len(ds.images) == 6 and not report.issues
    # a folder that cannot be written: said in the widget, naming the file chosen
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    assert review.export_corrected("coco", blocker / "c.json") == []
    said = review.summary.text().splitlines()
    assert said[-1] == f"Not exported: {blocker / 'c.json'}: cannot be written (File exists)"
    assert said[0].startswith("all: TP")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", f"{tmp_path}/.c.json.x1y2.tmp")

    monkeypatch.setattr("napari_bioanomaly.core.annotations.write_json", denied)
    assert review.export_corrected("via-project", tmp_path / "c.json") == []
    expected = f"Not exported: cannot write {tmp_path / 'c.json'}: Permission denied"
    assert review.summary.text().splitlines()[-1] == expected
    # as the writers raise it: the file named once, with why and what it means
    from napari_bioanomaly.core.fileio import write_error

    def full(path, *args, **kwargs):
        raise write_error(path, OSError(28, "No space left on device"))

    monkeypatch.setattr("napari_bioanomaly.core.annotations.write_json", full)
    assert review.export_corrected("via-project", tmp_path / "c.json") == []
    expected = (
        f"Not exported: {tmp_path / 'c.json'}: cannot be written (No space left on device; "
        "the disk is full)"
    )
    assert review.summary.text().splitlines()[-1] == expected


def _widget_with_a_model(make_viewer, qtbot, dataset_dir, model, epochs: int, steps: int):
    """A Review widget with the ground truth and a briefly trained tiny U-Net (at ``model``)
    filled in; returns it and the ground truth. Torch is primed as the widgets prime it
    (triton kept out: it crashes beside Mesa's OpenGL, loaded by the viewers of the tests
    before, which a test run alone, with -k, would otherwise meet unprimed)."""
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.predict import run
    from napari_bioanomaly.ml.train import train
    from napari_bioanomaly.widgets._jobs import prime_torch

    prime_torch()

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, tile=64, batch=2, base_channels=8)
    run(train(gt, cfg, model))
    widget = ReviewWidget(make_viewer())
    qtbot.addWidget(widget)
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.model_edit.setText(str(model))
    return widget, gt


def test_predict_and_review_from_a_model(make_napari_viewer, dataset_dir, qtbot, tmp_path):
    widget, _ = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir,
                                     tmp_path / "m.pt", epochs=1, steps=2)  # fmt: skip
    assert widget.predict_and_review()
    # proposals start at the model's operating point, chosen on its validation images
    from napari_bioanomaly.ml.predict import Predictor

    point = Predictor.load(tmp_path / "m.pt", "cpu").operating_point
    assert point.source == "validation"
    assert widget.heat_slider.value() == round(point.threshold * 100)
    assert widget.proposal_min_area == point.min_area
    wait_for_job(qtbot, widget, 120_000)
    assert widget.pred_edit.text() == str(dataset_dir / "annotations.predictions.json")
    assert len(widget.model.rows) == 6
    predicted, _ = annotations.load(dataset_dir / "annotations.predictions.json", read_images=False)
    table = {r.image: r.n_pred for r in widget.rows()}
    widget.score_slider.setValue(0)
    assert {r.image: r.n_pred for r in widget.rows()} == {
        im.filename: len(im.regions) for im in predicted.images
    }
    assert all(v <= len(predicted.image(k).regions) for k, v in table.items())


def test_predict_and_review_says_which_images_it_could_not_read(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """An image that cannot be read is named under the review's summary and left out of
    the predictions, not kept as a silent empty prediction; so is a stack, of which the
    first plane was predicted."""
    import tifffile

    widget, gt = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir,
                                      tmp_path / "m.pt", epochs=1, steps=2)  # fmt: skip
    broken, stack = gt.images[0].filename, gt.images[1].filename
    (dataset_dir / broken).write_bytes(b"not an image")
    plane = tifffile.imread(dataset_dir / stack)
    tifffile.imwrite(dataset_dir / stack, np.stack([plane, plane]), imagej=True,
                     metadata={"axes": "ZYX"})  # fmt: skip
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    text = widget.summary.text()
    assert "TP " in text  # the review's summary is still there
    assert ("1 image(s) could not be predicted and are left out of the predictions and the "
            "review: ") in text  # fmt: skip
    assert Path(broken).name in text and broken not in [r.image for r in widget.rows()]
    assert ("1 image(s) are stacks of several planes: only the first plane of each was "
            f"predicted: {stack}") in text  # fmt: skip


def test_choose_point_in_napari_as_the_cli_does(make_napari_viewer, dataset_dir, qtbot, tmp_path):
    """The "Choose point" button chooses the model's point again in the background and
    writes it into the model file (previous kept as .bak), as choose-point does: the point
    for TTA on the run's validation images, or the plain point on every annotated image."""
    from napari_bioanomaly.ml.checkpoint import load_checkpoint

    model = tmp_path / "m.pt"
    widget, gt = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir, model,
                                      epochs=1, steps=2)  # fmt: skip
    ckpt = load_checkpoint(model)
    assert "operating_point_tta" not in ckpt
    widget.point_tta.setChecked(True)
    assert widget.choose_point()
    wait_for_job(qtbot, widget, 120_000)
    text = widget.summary.text()
    assert "operating point for test-time augmentation chosen on " in text, text
    assert "predict does not use --tta by default" in text and f"written to {model}" in text
    assert load_checkpoint(model)["operating_point_tta"]["source"] == "validation"
    assert (tmp_path / "m.pt.bak").is_file()
    widget.point_tta.setChecked(False)
    widget.point_on.setCurrentIndex(widget.point_on.findData("all"))
    assert widget.choose_point()
    wait_for_job(qtbot, widget, 120_000)
    annotated = sum(1 for im in gt.images if im.regions)
    assert f"operating point chosen on {counted(annotated, 'image')}" in widget.summary.text()
    assert "is dropped: choose it again" in widget.summary.text()
    point = load_checkpoint(model)["operating_point"]
    assert widget.heat_slider.value() == round(point["threshold"] * 100)
    widget.model_edit.setText("")
    assert not widget.choose_point()
    assert (
        "Cannot choose the point: choose the ground-truth file and a model first"
        in widget.summary.text()
    )


def test_a_review_closed_while_it_predicts_opens_nothing_when_the_job_ends(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """The job goes on and saves its predictions; the closed widget adds no layers to the
    viewer when it ends (it added an image and a ground truth nobody could use)."""
    widget, _ = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir,
                                     tmp_path / "m.pt", epochs=1, steps=2)  # fmt: skip
    viewer = widget.viewer
    assert widget.predict_and_review()
    widget.close()
    wait_for_job(qtbot, widget, 120_000)
    qtbot.wait(50)
    assert len(viewer.layers) == 0, [layer.name for layer in viewer.layers]
    assert (dataset_dir / "annotations.predictions.json").is_file()


def test_stop_predict_and_review_reviews_the_images_predicted_so_far(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """Stop ends Predict & review after the current image: the images predicted until
    then are saved and reviewed, and the summary says how many of how many."""
    widget, gt = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir,
                                      tmp_path / "m.pt", epochs=1, steps=2)  # fmt: skip
    assert not widget.stop_button.isEnabled() and not widget.stop()  # nothing runs
    assert widget.predict_and_review()
    assert widget.stop_button.isEnabled() and not widget.predict_button.isEnabled()
    assert widget.stop()
    wait_for_job(qtbot, widget, 120_000)
    done = len(widget.names)
    assert 1 <= done < len(gt.images)
    predicted, _ = annotations.load(dataset_dir / "annotations.predictions.json",
                                    read_images=False)  # fmt: skip
    assert (
        [im.filename for im in predicted.images]
        == widget.names
        == [im.filename for im in gt.images[:done]]
    )
    assert [r.image for r in widget.model.rows] == widget.names
    assert (
        f"Stopped after {done} of {len(gt.images)} images: reviewing the {done} predicted "
        "(Predict & review with this model resumes from there)." in widget.summary.text()
    )
    assert "TP " in widget.summary.text()
    widget.score_slider.setValue(30)  # the table is scored again: the note stays under it
    assert "Stopped after" in widget.summary.text() and "TP " in widget.summary.text()
    assert widget.predict_button.isEnabled() and not widget.stop_button.isEnabled()
    assert not widget.stop()  # the job has ended: nothing to stop

    # Predict & review again with the same model: the stopped images are not predicted again
    pred = dataset_dir / "annotations.predictions.json"
    manifest = dataset_dir / "annotations.predictions.json.manifest.json"
    assert manifest.is_file()
    stopped = json.loads(pred.read_text())
    maps = dataset_dir / "annotations.predictions.heatmaps"
    written = {p.name: p.stat().st_mtime_ns for p in maps.iterdir()}
    assert len(written) == done
    said = []
    say = widget.jobs.say
    widget.jobs.say = lambda text: (said.append(text), say(text))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    resumed = (f"Resuming: {done} of {len(gt.images)} images were predicted with this model "
               "before a stop; predicting the others.")  # fmt: skip
    assert resumed in said and resumed in widget.summary.text() and "TP " in widget.summary.text()
    assert widget.names == [im.filename for im in gt.images]
    whole = json.loads(pred.read_text())
    assert len(whole) == len(gt.images) and all(whole[key] == stopped[key] for key in stopped)
    assert {p.name: p.stat().st_mtime_ns for p in maps.iterdir() if p.name in written} == written
    assert len(list(maps.iterdir())) == len(gt.images)  # the others' maps written now
    assert not manifest.exists()  # the run ended

    # stopped again, then another model file: not resumed, and said why
    assert widget.predict_and_review() and widget.stop()
    wait_for_job(qtbot, widget, 120_000)
    assert manifest.is_file()
    other = tmp_path / "other.pt"
    other.write_bytes((tmp_path / "m.pt").read_bytes())
    widget.model_edit.setText(str(other))
    said.clear()
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert said[0].startswith(f"Predicting every image, not resuming: {manifest}: manifest of "
                              "another run"), said  # fmt: skip
    assert not any(text.startswith("Resuming") for text in said)
    assert widget.names == [im.filename for im in gt.images] and not manifest.exists()


def test_stop_choose_point_leaves_the_model_file_as_it_was(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    model = tmp_path / "m.pt"
    widget, _ = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir, model,
                                     epochs=1, steps=2)  # fmt: skip
    bak = tmp_path / "m.pt.bak"  # saving the best weights during training keeps one
    before = model.read_bytes(), bak.read_bytes() if bak.exists() else None
    widget.point_on.setCurrentIndex(widget.point_on.findData("all"))
    assert widget.choose_point() and widget.stop()
    wait_for_job(qtbot, widget, 120_000)
    assert (
        widget.summary.text()
        == f"Stopped: the operating point was not chosen; {model} is unchanged."
    )
    assert (model.read_bytes(), bak.read_bytes() if bak.exists() else None) == before


def test_stop_train_and_review_keeps_what_it_trained_and_predicts_nothing(
    make_napari_viewer, dataset_dir, qtbot
):
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.train_settings = {"epochs": 1, "steps_per_epoch": 50, "tile": 64, "batch": 2,
                             "base_channels": 8}  # fmt: skip
    assert widget.train_and_review() and widget.stop()
    wait_for_job(qtbot, widget, 180_000)
    text = widget.summary.text()
    last = dataset_dir / "bioanomaly-model.last.pt"
    assert text == (f"Stopped before the first validation: no model kept; its last state is "
                    f"in {last} (napari-bioanomaly train --resume continues it).")  # fmt: skip
    assert last.is_file() and not (dataset_dir / "bioanomaly-model.pt").exists()
    assert not (dataset_dir / "annotations.predictions.json").exists()
    assert widget.annotator is None and widget.train_button.isEnabled()
    widget.train_settings = {"model": "forest"}  # fitted in one pass: stopped, nothing kept
    assert widget.train_and_review() and widget.stop()
    wait_for_job(qtbot, widget, 180_000)
    assert widget.summary.text() == "Stopped before the model was fitted: nothing kept."
    assert not (dataset_dir / "bioanomaly-model.pt").exists()


def test_stop_during_train_and_review_in_napari_reviews_the_model_so_far(
    make_napari_viewer, dataset_dir, qtbot
):
    """Stop pressed after an epoch: the status says the validation images are reviewed
    with the best model so far, shows the prediction's progress again, and the review
    opens with that model in the model field."""
    from napari_bioanomaly.ml.events import TrainEvent

    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.train_settings = {"epochs": 200, "steps_per_epoch": 2, "tile": 64, "batch": 2,
                             "base_channels": 8}  # fmt: skip
    said = []
    say = widget.jobs.say
    widget.jobs.say = lambda text: (said.append(text), say(text))
    assert widget.train_and_review()
    widget.worker.yielded.connect(
        lambda e: isinstance(e, TrainEvent) and e.kind == "epoch" and widget.stop()
    )
    wait_for_job(qtbot, widget, 180_000)
    assert "Stopping after the current step or image..." in said
    after = said[said.index("Stopping after the current step or image...") :]
    assert any(t.startswith("Training stopped: reviewing the validation images with its best "
                            "model so far") for t in after), after  # fmt: skip
    assert any(t.startswith("Predicting: ") for t in after), after
    assert widget.model_edit.text() == str(dataset_dir / "bioanomaly-model.pt")
    assert widget.annotator is not None and widget.names and "TP " in widget.summary.text()
    assert "Stopped after" not in widget.summary.text()  # every validation image predicted


def test_train_and_review_stopped_while_training_reviews_its_best_model(dataset_dir, tmp_path):
    """Stopped after an epoch, Train & review's job goes on to review the validation
    images with the best model so far (its point chosen as at a run's end); stopped again
    while predicting, it keeps the images predicted until then."""
    import threading

    from napari_bioanomaly.core.review import predictions_path
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.data import split
    from napari_bioanomaly.ml.events import PredictEvent, TrainEvent
    from napari_bioanomaly.widgets._jobs import train_and_predict

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    config = TrainConfig(epochs=5, steps_per_epoch=2, tile=64, batch=2, base_channels=8,
                         val_fraction=0.5)  # fmt: skip
    val = [gt.images[i].filename for i in split(gt, config)[1]]
    assert len(val) >= 2
    for stop_predicting in (False, True):
        cancel = threading.Event()
        gen = train_and_predict(
            gt,
            config,
            tmp_path / "m.pt",
            predictions_path(dataset_dir / "annotations.json"),
            cancel,
        )
        events = []
        try:
            while True:
                event = next(gen)
                events.append(event)
                if isinstance(event, TrainEvent) and event.kind == "epoch":
                    cancel.set()
                if isinstance(event, PredictEvent) and stop_predicting:
                    cancel.set()
        except StopIteration as stop:
            pred_out, names, point, model = stop.value
        assert [e.epoch for e in events if getattr(e, "kind", "") == "epoch"] == [0]
        said = [e.message for e in events if getattr(e, "kind", "") == "status"]
        assert any(m.startswith("Training stopped: reviewing the validation images with its "
                                "best model so far") for m in said), said  # fmt: skip
        assert model == tmp_path / "m.pt" and point.source == "validation"
        assert names == (val[:1] if stop_predicting else val)
        predicted, _ = annotations.load(pred_out, read_images=False)
        assert [im.filename for im in predicted.images] == names


def test_predict_and_review_with_flips_and_rotations(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """TTA "always" predicts as `predict --tta` does: the same regions as predict_dataset
    with tta=True, which differ from a plain prediction's."""
    from napari_bioanomaly.ml.predict import Predictor, predict_dataset, run

    widget, gt = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir,
                                      tmp_path / "m.pt", epochs=2, steps=3)  # fmt: skip
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("yes"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    got, _ = annotations.load(dataset_dir / "annotations.predictions.json", read_images=False)
    predictor = Predictor.load(tmp_path / "m.pt", "cpu")

    def regions(ds):
        return [[(r.label, np.round(r.polygon, 3).tolist()) for r in im.regions]
                for im in ds.images]  # fmt: skip

    flipped = run(predict_dataset(predictor, gt, tta=True))
    plain = run(predict_dataset(predictor, gt))
    assert regions(flipped) != regions(plain)  # this briefly trained model: they differ
    assert regions(got) == regions(flipped)


def test_flips_and_rotations_start_at_the_model_s_point_for_them(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    """With TTA the proposal controls start at the point the model chose on averaged maps;
    a model without one is said to predict at its plain point. By default ("as the model
    chose") Predict & review uses TTA only where the model's validation says it pays."""
    import torch

    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml.checkpoint import load_checkpoint

    model = tmp_path / "m.pt"
    widget, _ = _widget_with_a_model(make_napari_viewer, qtbot, dataset_dir, model,
                                     epochs=1, steps=2)  # fmt: skip
    ckpt = load_checkpoint(model)
    ckpt["operating_point"] = OperatingPoint(0.3, 16.0, source="validation").to_dict()
    ckpt["operating_point_tta"] = OperatingPoint(0.2, 48.0, 0.5, 0.5, "validation",
                                                 min_peak=0.7).to_dict()  # fmt: skip
    torch.save(ckpt, model)
    said = []
    widget.workspace.job_changed.connect(lambda state, message: said.append(message))
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("yes"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 20 and widget.proposal_min_area == 48.0
    assert widget.peak_box.value() == pytest.approx(0.7)
    assert not any("plain operating point" in m for m in said), said
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("no"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 30 and widget.proposal_min_area == 16.0
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("auto"))
    assert widget.predict_and_review()  # no validation scores: the plain point, no TTA
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 30 and not any("as the model chose" in m for m in said)
    ckpt["operating_point"] = OperatingPoint(0.3, 16.0, 0.6, 0.7, "validation",
                                             regions=40).to_dict()  # fmt: skip
    ckpt["operating_point_tta"] = OperatingPoint(0.2, 48.0, 0.64, 0.7, "validation",
                                                 min_peak=0.7, regions=40).to_dict()  # fmt: skip
    torch.save(ckpt, model)
    assert widget.predict_and_review()  # TTA gained 0.02 on 40 validation regions
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 20 and widget.proposal_min_area == 48.0
    assert any(
        "test-time augmentation on, as the model chose (validation score 0.670 with "
        "flips and rotations against 0.650 without, on 40 regions" in m
        for m in said
    ), said
    del ckpt["operating_point_tta"]
    torch.save(ckpt, model)
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("yes"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 30
    assert any("at the model's plain operating point" in m for m in said), said
    assert not any("no operating point chosen on validation" in m for m in said), said
    del ckpt["operating_point"]  # stopped before it validated: the defaults, and said so
    torch.save(ckpt, model)
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("no"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert widget.heat_slider.value() == 50
    assert any("no operating point chosen on validation in this model" in m for m in said)


def test_flips_and_rotations_are_said_not_to_apply_to_a_forest(
    make_napari_viewer, dataset_dir, qtbot, tmp_path
):
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.predict import run
    from napari_bioanomaly.ml.train import train

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    run(train(gt, TrainConfig(model="forest"), tmp_path / "f.pt"))
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    said = []
    widget.workspace.job_changed.connect(lambda state, message: said.append(message))
    widget.gt_edit.setText(str(dataset_dir / "annotations.json"))
    widget.model_edit.setText(str(tmp_path / "f.pt"))
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData("yes"))
    assert widget.predict_and_review()
    wait_for_job(qtbot, widget, 120_000)
    assert any("apply to U-Net and Mask R-CNN, not a forest model" in m for m in said), said
    assert widget.workspace.job == "done"


def test_an_edited_prediction_is_accepted_as_drawn(review, dataset_dir):
    review.score_slider.setValue(0)
    review.annotator.show(0)
    layer = review.pred_layer
    last = len(layer.data) - 1
    moved = layer.data[last] + 5.0  # the user drags the weak FP square
    layer.selected_data = {last}
    layer.data = [*layer.data[:last], moved]
    layer.selected_data = {last}
    assert review.accept_selected() == 1
    accepted = review.annotator.session.image.regions[-1]
    np.testing.assert_allclose(accepted.polygon, moved + 0.5)
    assert accepted.source == "model-accepted"
    np.testing.assert_allclose(layer.data[last], moved - 5.0)  # the model's outline again


def test_a_slider_move_redraws_the_predictions_only_when_what_is_shown_changes(review):
    """The IoU threshold changes no shown prediction: the layer is left as it is (an
    outline being edited stays as drawn); the score threshold changes which are shown."""
    review.score_slider.setValue(0)
    review.annotator.show(0)
    layer = review.pred_layer
    shown = len(layer.data)
    assert shown >= 2  # the fixture's predictions here, with its weak (0.3) false alarm
    moved = layer.data[0] + 3.0
    layer.data = [moved, *layer.data[1:]]
    review.iou_slider.setValue(20)
    assert len(layer.data) == shown
    np.testing.assert_allclose(layer.data[0], moved)
    review.score_slider.setValue(50)  # the 0.3 false alarm is no longer shown
    assert len(layer.data) == shown - 1
    assert not np.allclose(layer.data[0], moved)  # drawn again from the predictions file
    review.score_slider.setValue(0)
    assert len(layer.data) == shown


def test_anomaly_map_is_shown_and_turned_into_proposals(review, dataset_dir):
    import tifffile

    heat = np.zeros((128, 128), np.float32)
    heat[20:40, 60:90] = 0.9  # one anomalous patch on img_000
    folder = dataset_dir / "pred.heatmaps"
    folder.mkdir()
    tifffile.imwrite(folder / "img_000.tif", heat)
    review.annotator.show(1)
    review.annotator.show(0)
    layer = review.heat_layer
    assert layer is not None and layer.visible and layer.data.shape == (128, 128)
    layers = list(review.viewer.layers)
    assert layers.index(layer) < layers.index(review.pred_layer)  # under the outlines
    # a model's point with a minimum peak: a faint patch is proposed only without it
    heat[100:110, 10:20] = 0.4
    tifffile.imwrite(folder / "img_000.tif", heat)
    review.review._heat.clear()
    review._set_proposal_point(0.3, 16.0, 0.8)
    assert review.heat_slider.value() == 30 and review.peak_box.value() == pytest.approx(0.8)
    assert review.score_slider.value() == 0  # every region the model outlines counts
    review.score_slider.setValue(50)
    review._set_proposal_point(0.3, 16.0, 0.8)
    assert review.score_slider.value() == 30  # lowered to the model's threshold
    assert review.propose() == 1
    review.heat_slider.setValue(85)  # above the peak: the peak no longer applies
    assert review.proposal_peak is None and review.propose() == 1
    review.heat_slider.setValue(30)
    review.peak_box.setValue(0.0)  # the biologist's choice: any peak
    assert review.peak_box.text() == "any" and review.propose() == 2
    review.peak_box.setValue(0.5)
    assert review.propose() == 1
    review._set_proposal_point(0.3, 16.0, None)
    assert review.peak_box.value() == 0 and review.propose() == 2
    review.heat_slider.setValue(50)
    assert review.propose() == 1
    review.score_slider.setValue(0)
    proposal = review.review.prediction("img_000.tif").regions[0]
    assert proposal.label == "anomaly" and proposal.score == pytest.approx(0.9, abs=0.01)
    r0, c0, r1, c1 = proposal.bbox
    assert (r0, c0, r1, c1) == pytest.approx((20, 60, 40, 90), abs=1)
    before = len(review.annotator.session.image.regions)
    assert review.accept_all() == 1  # pre-annotation: the proposal becomes an annotation
    assert len(review.annotator.session.image.regions) == before + 1
    review.annotator.show(2)  # no map for this image: the layer hides
    assert not layer.visible


def test_image_level_tab_shows_scores_and_curves(review):
    review.tabs.setCurrentIndex(1)
    review.refresh_image_level()
    text = review.image_text.text()
    assert "ROC-AUC" in text and "kappa" in text and "TPR" in text
    assert not review.curves.pixmap().isNull()
    level = review.image_level()
    assert level["images"] == 6 and level["threshold"] == 0.5


def test_per_class_tab_and_class_agreement(review):
    review.tabs.setCurrentIndex(2)
    review.fill_classes()
    names = [review.class_table.item(r, 0).text() for r in range(review.class_table.rowCount())]
    gt, _ = annotations.load(review.annotator.session.path, read_images=False)
    assert set(names) == {r.label for r in gt.regions}
    assert "matched regions" in review.agreement_text.text()


def test_per_class_tab_counts_what_a_class_agnostic_model_found(
    make_napari_viewer, dataset_dir, qtbot
):
    """Predictions that all say "anomaly" (an unsupervised model's): the Per class tab
    lists each ground-truth class with how many of its regions they matched, not rows of
    zeros and an "anomaly" row with nothing to find."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    truth = gt.class_counts()
    for im in gt.images:  # every first region found, as "anomaly"
        im.regions = [
            Region(r.polygon, "anomaly", score=0.9, source="model") for r in im.regions[:1]
        ]
    found = {}
    for im in annotations.load(dataset_dir / "annotations.json")[0].images:
        if im.regions:
            found[im.regions[0].label] = found.get(im.regions[0].label, 0) + 1
    annotations.save(gt, dataset_dir / "pred.json", "via")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    assert widget.gt_edit.text() == str(dataset_dir / "annotations.json")  # what is open
    assert widget.pred_edit.text() == str(dataset_dir / "pred.json")
    widget.tabs.setCurrentIndex(2)
    widget.fill_classes()
    table = widget.class_table
    header = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert header == ["class", "GT", "found", "share found"]
    rows = {
        table.item(r, 0).text(): (int(table.item(r, 1).text()), int(table.item(r, 2).text()))
        for r in range(table.rowCount())
    }
    assert rows == {label: (n, found.get(label, 0)) for label, n in truth.items()}
    assert "class-agnostic" in widget.agreement_text.text()


def test_qc_flags_are_a_table_column(review, dataset_dir):
    session = review.annotator.session
    attrs = dict(session.dataset.images[0].file_attributes, qc="dim")
    session.set_file_attributes(attrs, 0)
    review.refresh()
    column = review.model.columnCount() - 1
    assert review.model.data(review.model.index(0, column), 0) == "dim"
    review.filter_edit.setText("dim")
    assert review.proxy.rowCount() == 1


def _events(gen):
    """Every event a job yields, until it returns."""
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration:
        return events


def test_a_stopped_resumed_prediction_keeps_every_image_predicted_so_far(dataset_dir, tmp_path):
    """Predict & review's job, resuming a manifest of images 0, 3 and 4 and stopped after
    predicting image 1, saves and hands on images 0, 1, 3 and 4 (in the dataset's order),
    and its manifest holds them all; resumed after image 3's map was deleted and stopped
    before image 3, it keeps image 3's earlier regions; resumed again, it predicts image 3
    again."""
    import threading

    from napari_bioanomaly.core.manifest import Manifest, run_identity
    from napari_bioanomaly.core.maps import heatmap_path
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.events import PredictEvent
    from napari_bioanomaly.ml.predict import Predictor, run
    from napari_bioanomaly.ml.train import train
    from napari_bioanomaly.widgets._jobs import predict_and_save

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    model = tmp_path / "m.pt"
    run(train(gt, TrainConfig(epochs=1, steps_per_epoch=2, tile=64, batch=2, base_channels=8),
              model))  # fmt: skip
    predictor = Predictor.load(model)
    pred_out, maps = tmp_path / "pred.json", tmp_path / "maps"
    full = run(predict_and_save(predictor, gt, pred_out, maps, False, model))
    assert full == (pred_out, [im.filename for im in gt.images])
    predicted, _ = annotations.load(pred_out, read_images=False)
    manifest = Manifest(pred_out, run_identity([model], False, heatmaps=True))
    assert not manifest.path.exists()  # the run ended
    manifest.add(*(predicted.images[i] for i in (0, 3, 4)))
    manifest.save()
    cancel = threading.Event()
    gen = predict_and_save(predictor, gt, pred_out, maps, False, model, cancel)
    said = []
    try:
        while True:
            event = next(gen)
            if isinstance(event, str):
                said.append(event)
            elif isinstance(event, PredictEvent) and not event.skipped:
                cancel.set()  # Stop, after the first image predicted now (image 1)
    except StopIteration as stop:
        _, names = stop.value
    assert said == [f"Resuming: 3 of {len(gt.images)} images were predicted with this model "
                    "before a stop; predicting the others."]  # fmt: skip
    expected = [gt.images[i].filename for i in (0, 1, 3, 4)]
    assert names == expected
    again, _ = annotations.load(pred_out, read_images=False)
    assert [im.filename for im in again.images] == expected
    assert sorted(Manifest(pred_out, manifest.run).read()) == sorted(expected)
    # the map of one image taken from the stopped run deleted since: it is predicted again;
    # a stop before then keeps its earlier regions, in the file and the manifest
    gone = heatmap_path(maps, gt.images[3].filename)
    gone.unlink()
    cancel = threading.Event()
    gen = predict_and_save(predictor, gt, pred_out, maps, False, model, cancel)
    try:
        while True:
            event = next(gen)
            if isinstance(event, PredictEvent) and not event.skipped:
                assert event.image == gt.images[2].filename  # image 3 comes after it
                cancel.set()
    except StopIteration as stop:
        _, names = stop.value
    expected = [gt.images[i].filename for i in (0, 1, 2, 3, 4)]
    assert names == expected and not gone.exists()
    again, _ = annotations.load(pred_out, read_images=False)
    assert [im.filename for im in again.images] == expected
    kept = {im.filename: im for im in again.images}[gt.images[3].filename]
    assert [r.polygon.tolist() for r in kept.regions] == [
        r.polygon.tolist() for r in predicted.images[3].regions
    ]
    assert sorted(Manifest(pred_out, manifest.run).read()) == sorted(expected)
    said = [e for e in _events(predict_and_save(predictor, gt, pred_out, maps, False, model))
            if isinstance(e, str)]  # fmt: skip
    assert said == [f"Resuming: 4 of {len(gt.images)} images were predicted with this model "
                    f"before a stop; predicting the others (1 image predicted before the stop, "
                    f"{gt.images[3].filename}, has no anomaly map in {maps} any more: it is "
                    "predicted again)."]  # fmt: skip
    assert gone.is_file() and not manifest.path.exists()


def test_a_dataset_with_nothing_annotated_shows_proposals_not_scores(
    make_napari_viewer, dataset_dir, qtbot
):
    """New images, an unsupervised model: every prediction would be a false positive and
    the model score 0. The summary says nothing is annotated, the list calls them
    proposals, the table leaves the scores out; accepting one starts the scoring."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    pred = dataset_dir / "pred.json"
    for im in gt.images:
        im.regions = [Region(square(100, 100, 12), "anomaly", score=0.4, source="model")]
    annotations.save(gt, pred, "via")
    for im in gt.images:  # nothing annotated, nothing checked
        im.regions, im.no_anomaly, im.reviewed = [], False, False
    annotations.save(gt, dataset_dir / "annotations.json", "via-project")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open(dataset_dir / "annotations.json", pred)
    said = widget.summary.text()
    assert said == ("No anomaly annotated yet: the 6 predictions on 6 images are proposals "
                    "to accept or reject, not scored.")  # fmt: skip
    listed = [widget.errors.item(i).text() for i in range(widget.errors.count())]
    assert listed == ["proposal: anomaly, 144 px, score 0.40"]
    assert widget.table_panel.errors_label.text().startswith("Predictions here")
    f1 = widget.proxy.index(0, widget.model.columnCount() - 5)  # F1
    assert widget.proxy.headerData(f1.column(), Qt.Orientation.Horizontal) == "F1"
    assert f1.data() == "-" and widget.proxy.index(0, 3).data() == 1  # pred: counted
    widget.pred_layer.selected_data = {0}
    assert widget.accept_selected() == 1  # ground truth now: scored, as evaluate scores it
    lines = widget.summary.text().splitlines()
    assert lines[0].startswith("all: TP 1 FP 5 FN 0")
    assert "5 of 6 images neither annotated nor checked: scored as without anomaly" in lines[-1]
    assert widget.errors.count() == 0 and widget.proxy.index(0, 9).data() != "-"
    assert widget.table_panel.errors_label.text().startswith("False negatives")


def test_the_panel_scrolls_and_shows_what_matters_at_a_dock_s_width(review, qtbot):
    """A dock of 470 x 600 px (the default width, under the other docks): the panel
    scrolls rather than squeezing the table under its label or cutting the curves' titles
    off, nothing needs a sideways scroll, and the table shows each image's F1 and pixel
    IoU beside its name."""
    from qtpy.QtWidgets import QScrollArea

    review.review_note = "a note\nof\nseveral\nlines"  # a long summary, as a stopped run's
    review.refresh()
    review.resize(470, 600)
    review.show()
    qtbot.waitExposed(review)
    scroll = review.findChild(QScrollArea)
    assert scroll is not None and scroll.verticalScrollBar().maximum() > 0
    assert scroll.widget().minimumSizeHint().width() <= scroll.viewport().width()
    table, label = review.table, review.table_panel.errors_label
    assert (
        label.mapTo(review, label.rect().topLeft()).y()
        >= table.mapTo(review, table.rect().bottomLeft()).y()
    )  # the label is under the table, not drawn over its last row
    header = table.horizontalHeader()
    shown = [review.proxy.headerData(header.logicalIndexAt(x), Qt.Orientation.Horizontal)
             for x in range(0, table.viewport().width(), 10)]  # fmt: skip
    assert {"image", "F1", "pixel IoU"} <= set(shown), shown
    review.tabs.setCurrentIndex(1)
    review.refresh_image_level()
    qtbot.wait(50)
    curves = review.curves
    assert curves.pixmap() is not None and curves.height() >= curves.pixmap().height()


def test_the_summary_and_the_tabs_wrap_between_words_not_inside_numbers(review):
    """Train & review's progress in the summary ("... pixel F1) 0.188") ended a line with
    "0." and began the next with "188" at some widths of the dock: the summary and the
    tabs' texts are status labels now, as Train's status."""
    from napari_bioanomaly.ml.events import VAL_F1, TrainEvent
    from napari_bioanomaly.widgets._jobs import epoch_text

    epoch = TrainEvent("epoch", 2, 20, 50, 50, loss=0.4123, val_loss=0.5, val_score=0.188,
                       val_f1=0.026, val_iou=0.212, score_label=VAL_F1)  # fmt: skip
    said = f"Training: {epoch_text(epoch)}"
    review.jobs.say(said)  # as Train & review says each epoch
    assert review.summary.text() == said  # as set, to read and copy
    assert "pixel F1) 0.188" in said and numbers_cut(review.summary) == []
    review.refresh()  # the scores
    assert review.summary.text().startswith("all: TP") and numbers_cut(review.summary) == []
    review.tabs.setCurrentIndex(1)
    review.refresh_image_level()
    review.tabs.setCurrentIndex(2)
    review.fill_classes()
    for label in (review.image_text, review.agreement_text):
        assert ".0" in label.text() and numbers_cut(label) == [], label.text()


def test_fields_start_at_the_open_dataset_and_the_last_trained_model_and_follow(
    make_napari_viewer, dataset_dir, sample_dir, qtbot, tmp_path
):
    """The ground truth the Annotate widget has open and the model the Train widget
    trained last fill Review's fields (Predict & review said "choose the ground-truth file
    and a model first" with both open), and follow them, but what the user typed stays."""
    import shutil

    from napari_bioanomaly.widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    annotate = AnnotateWidget(viewer)
    qtbot.addWidget(annotate)
    assert annotate.open_path(dataset_dir)
    workspace = annotate.workspace
    workspace.model_path = tmp_path / "first.pt"  # as the Train widget does when it ends
    review = ReviewWidget(viewer)  # opened after both
    qtbot.addWidget(review)
    assert review.gt_edit.text() == str(dataset_dir / "annotations.json")
    assert review.model_edit.text() == str(tmp_path / "first.pt")
    other = tmp_path / "other"
    shutil.copytree(sample_dir, other)
    assert annotate.open_path(other)  # another dataset, another model: followed
    workspace.model_path = tmp_path / "second.pt"
    assert review.gt_edit.text() == str(other / "annotations.json")
    assert review.model_edit.text() == str(tmp_path / "second.pt")
    review.model_edit.setText(str(tmp_path / "mine.pt"))  # the user's choice stays
    workspace.model_path = tmp_path / "third.pt"
    assert review.model_edit.text() == str(tmp_path / "mine.pt")
    assert annotate.open_path(dataset_dir)  # a dataset opened before, shown again: followed
    assert review.gt_edit.text() == str(dataset_dir / "annotations.json")
    review.gt_edit.setText(str(other / "annotations.json"))
    shutil.copytree(sample_dir, tmp_path / "third")
    assert annotate.open_path(tmp_path / "third")
    assert review.gt_edit.text() == str(other / "annotations.json")
    # a review opened on the suggested file stays what the field names
    review.gt_edit.setText("")
    assert annotate.open_path(dataset_dir)
    shutil.copy(sample_dir / "annotations.json", tmp_path / "pred.json")
    assert review.open(dataset_dir / "annotations.json", tmp_path / "pred.json")
    assert annotate.open_path(tmp_path / "third")
    assert review.gt_edit.text() == str(dataset_dir / "annotations.json")


def test_a_prediction_of_no_pixel_is_said_and_not_counted(review):
    """A sliver between pixel centres counted as a false positive: left out now, and the
    summary says so, naming the image."""
    name = review.names[0]
    before = review.review.rows()[0]
    sliver = np.array([[10.1, 10.1], [10.1, 10.4], [10.4, 10.4], [10.4, 10.1]])
    review.review.prediction(name).regions.append(Region(sliver, "dust", score=0.9, source="model"))
    review.review.rescore(name)
    review.refresh()
    after = review.review.rows()[0]
    assert (after.tp, after.fp, after.n_pred) == (before.tp, before.fp, before.n_pred)
    assert review.summary.text().splitlines()[-1] == (
        f"1 predicted region covers no pixel (a sliver, or outside the image), left out of "
        f"the scores: {name} (1)"
    )
    # accepted, it is not added, and the widget says why (not "the ground truth has it")
    review.review.accept(name, [len(review.review.shown(name)) - 1])
    assert review._not_added() == [
        "1 accepted prediction not added: it covers no pixel of the image (outside it, or a "
        "sliver), and is left out of the scores"
    ]


def test_a_message_about_one_image_goes_when_another_is_shown(review, dataset_dir):
    """An image that cannot be read was said in the summary, in place of the scores, and
    stayed there while every image after it was shown: the message now goes under the
    scores, and goes when another image is shown."""
    names = [im.filename for im in review.annotator.session.dataset.images]
    (dataset_dir / names[2]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not its format
    scores = review.summary.text()
    review.annotator.show(2)
    text = review.summary.text()
    assert text.startswith(scores) and names[2] in text and "cannot read" in text
    review.annotator.show(3)
    assert review.summary.text() == scores
    review.annotator.show(2)
    assert "cannot read" in review.summary.text()
    review._on_save_failed("annotations.json: cannot save (disk full)")  # not one image's
    review.annotator.show(4)
    assert review.summary.text() == f"{scores}\nannotations.json: cannot save (disk full)"


def test_predictions_of_the_image_folder_are_drawn_scored_and_said_as_evaluate_does(
    make_napari_viewer, dataset_dir, qtbot
):
    """The ground truth names ``images/img_000.tif``, ``predict --images ds/images`` named
    it ``img_000.tif``, and only 2 of the 6 images were predicted: the widget drew no
    prediction, showed TP 0 FP 0 and said nothing, where evaluate paired them and warned
    of the 4 images without predictions; now it draws, scores and says what evaluate does,
    and a reject goes to the predictions' own entry."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    pred = annotations.load(dataset_dir / "annotations.json")[0]
    pred.images = pred.images[:2]
    for im in pred.images:
        im.regions = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions]
    annotations.save(pred, dataset_dir / "pred.json", "via")
    (dataset_dir / "images").mkdir()
    for im in gt.images:
        (dataset_dir / im.filename).rename(dataset_dir / "images" / im.filename)
        im.filename = f"images/{im.filename}"
    annotations.save(gt, dataset_dir / "annotations.json", "via-project")
    widget = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    truth, _ = annotations.load(dataset_dir / "annotations.json")
    expected = evaluate(truth, annotations.load(dataset_dir / "pred.json", read_images=False)[0])
    assert expected.summary["tp"] > 0
    table = {r.image: (r.n_pred, r.tp, r.fp, r.fn) for r in widget.model.rows}
    assert table == {r.image: (r.n_pred, r.tp, r.fp, r.fn) for r in expected.rows}
    assert f"TP {expected.summary['tp']} FP 0 FN {expected.summary['fn']}" in widget.summary.text()
    assert (f"4 of 6 ground-truth images are not in {dataset_dir / 'pred.json'}: scored as "
            "predicting nothing there") in widget.summary.text().splitlines()  # fmt: skip
    widget.annotator.show(0)
    n = len(pred.images[0].regions)
    assert len(widget.pred_layer.data) == n > 0
    widget.pred_layer.selected_data = {0}
    assert widget.reject_selected() == 1
    saved = annotations.load(dataset_dir / "pred.json", read_images=False)[0].images
    assert [im.filename for im in saved] == ["img_000.tif", "img_001.tif"]
    assert len(saved[0].regions) == n - 1


def test_opening_says_which_file_it_reads_before_it_counts_images(dataset_dir, tmp_path):
    """Reading a 60 MB pair of files took the first 5-6 s of an open at 2,000 images, with
    nothing said but "Opening pred.json for review..."; the worker says what it reads."""
    import threading

    from napari_bioanomaly.widgets.review import _opening

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for r in gt.regions:
        r.score, r.source = 0.9, "model"
    annotations.save(gt, dataset_dir / "pred.json", "via")
    big = dataset_dir / "big.json"  # over a MiB: its size said too
    big.write_bytes((dataset_dir / "pred.json").read_bytes() + b" " * 2**21)
    steps = list(_opening(None, dataset_dir / "annotations.json", big, None, (0.5, 0.0),
                          threading.Event()))  # fmt: skip
    assert steps[:2] == ["reading annotations.json", "reading big.json, 2 MiB"]
    assert steps[2:] == [(0, 6), (6, 6)]
