"""One workspace per viewer: the widgets share one session (and one annotator) per file,
the Train widget's settings, and the state of the running job; no edit is lost between
them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly._workspace import Workspace, workspace_for
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.core.session import AnnotationSession, DiskChanged
from napari_bioanomaly.widgets.annotate import AnnotateWidget
from napari_bioanomaly.widgets.review import ReviewWidget
from napari_bioanomaly.widgets.train import TrainWidget


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


def labels_on_disk(folder):
    data = json.loads((folder / "annotations.json").read_text())
    return [r["region_attributes"].get("class") for v in data["_via_img_metadata"].values()
            for r in v["regions"]]  # fmt: skip


def test_one_session_per_file_whatever_name_it_is_given(dataset_dir):
    ws = Workspace()
    opened = []
    ws.session_opened.connect(opened.append)
    a = ws.session(dataset_dir)
    b = ws.session(dataset_dir / "annotations.json")
    c = ws.session(dataset_dir / "sub" / ".." / "annotations.json")
    assert a is b is c and opened == [a]
    ws.forget(a)
    assert ws.session(dataset_dir) is not a  # read again after it was closed


def test_a_session_read_elsewhere_is_out_of_date_only_where_its_file_changed_unheld(dataset_dir):
    """A worker's session missed a save made while it read (by the other widget, closed
    since) only where no session of its file is open and the file changed."""
    ws = Workspace()
    read = AnnotationSession.open(dataset_dir)  # as a worker reads it
    assert not ws.out_of_date(read)
    held = ws.session(dataset_dir)
    held.go_to(0)
    held.set_regions([])
    held.save()
    assert ws.out_of_date(read) is False  # held: adopting gives the open one
    ws.forget(held)
    assert ws.out_of_date(read) is True
    assert not ws.out_of_date(AnnotationSession.open(dataset_dir))


def test_the_session_of_an_edited_import_is_found_without_reading_it_again(
    dataset_dir, monkeypatch
):
    ds, _ = annotations.load(dataset_dir / "annotations.json", read_images=False)
    (dataset_dir / "annotations.json").unlink()
    annotations.save(ds, dataset_dir / "cells.json", "coco")
    ws = Workspace()
    s = ws.session(dataset_dir)
    s.go_to(0)
    s.set_regions([])
    s.save()  # now cells.via.json
    opened = []
    monkeypatch.setattr(AnnotationSession, "open", lambda *a, **k: opened.append(a))
    assert ws.session(dataset_dir) is s and ws.session(dataset_dir / "cells.json") is s
    assert not opened


def test_job_state_and_shared_settings():
    ws = Workspace()
    states = []
    ws.job_changed.connect(lambda state, message: states.append(state))
    assert not ws.busy and ws.train_config is None
    ws.set_job("running", "training")
    assert ws.busy
    ws.set_job("done")
    ws.set_job("failed")  # nothing runs: a late failure changes nothing
    assert states == ["running", "done"] and not ws.busy
    ws.provide_train_config(lambda: "the form's settings")
    assert ws.train_config == "the form's settings"
    with pytest.raises(ValueError, match="job state"):
        ws.set_job("paused")


def annotate_and_review(make_napari_viewer, dataset_dir, qtbot, gt):
    """A viewer with Annotate on the dataset and Review of predictions of one square on
    each of ``gt``'s images (``pred.json``, written from ``gt``'s images)."""
    for im in gt.images:
        im.regions = [Region(square(100, 100, 12), "dust", score=0.9, source="model")]
    annotations.save(gt, dataset_dir / "pred.json", "via")
    viewer = make_napari_viewer()
    annotate, review = AnnotateWidget(viewer), ReviewWidget(viewer)
    qtbot.addWidget(annotate)
    qtbot.addWidget(review)
    assert annotate.open_path(dataset_dir)
    assert review.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    return viewer, annotate, review


@pytest.fixture
def both(make_napari_viewer, dataset_dir, qtbot):
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    return annotate_and_review(make_napari_viewer, dataset_dir, qtbot, gt)


def test_annotate_and_review_edit_one_file_and_lose_nothing(both, dataset_dir):
    viewer, annotate, review = both
    assert review.annotator is annotate.annotator  # one copy of the annotations
    assert workspace_for(viewer) is annotate.workspace is review.workspace
    ground_truth = [layer for layer in viewer.layers if layer.name.startswith("ground truth")]
    assert len(ground_truth) == 1
    session = annotate.annotator.session
    annotate.annotator.shapes_layer.add_polygons([square(10, 10, 20) + 0.5])
    annotate.annotator.current_class = "hair"
    accepted = review.accept_all()  # the prediction on this image joins the ground truth
    assert accepted == 1 and not session.dirty
    on_disk = labels_on_disk(dataset_dir)
    assert "dust" in on_disk and len(on_disk) == sum(len(im.regions) for im in
                                                     session.dataset.images)  # fmt: skip
    pred, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    name = session.image.filename
    assert next(im for im in pred.images if im.filename == name).regions  # found, kept
    # closing one widget leaves the other editing
    annotate.close()
    assert review.annotator is not None and review.annotator.shapes_layer in viewer.layers
    review.annotator.shapes_layer.add_polygons([square(40, 40, 10) + 0.5])
    assert not review.annotator.session.dirty
    assert len(labels_on_disk(dataset_dir)) == len(on_disk) + 1


def test_accepted_predictions_stay_in_their_file_whatever_the_ground_truths_save(both, dataset_dir):
    _, _annotate, review = both
    session = review.annotator.session
    name = session.image.filename
    # someone else saves the ground truth: our next save is a conflict, decided later
    other = annotations.load(dataset_dir / "annotations.json", read_images=False)[0]
    other.images[-1].regions.append(Region(square(5, 5, 9), "theirs"))
    annotations.save(other, dataset_dir / "annotations.json")
    asked = []
    review.annotator.on_conflict = lambda exc: asked.append(exc) or "later"
    assert review.accept_all() == 1
    assert asked and isinstance(asked[0], DiskChanged) and session.dirty
    assert "changes not saved yet" in review.summary.text()
    pred, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    assert next(im for im in pred.images if im.filename == name).regions  # not lost
    review.annotator.on_conflict = lambda exc: "overwrite"
    review.annotator.autosave()
    assert not session.dirty
    pred, _ = annotations.load(dataset_dir / "pred.json", read_images=False)
    assert next(im for im in pred.images if im.filename == name).regions  # found, kept
    saved = annotations.load(dataset_dir / "annotations.json", read_images=False)[0]
    regions = next(im for im in saved.images if im.filename == name).regions
    assert regions[-1].source == "model-accepted"


def test_an_earlier_version_restored_in_annotate_is_scored_again_in_review(both, dataset_dir):
    from napari_bioanomaly.core import history

    _, annotate, review = both
    session = annotate.annotator.session
    other = next(i for i, im in enumerate(session.dataset.images)
                 if im.regions and i != session.current)  # fmt: skip
    name = session.dataset.images[other].filename
    n_gt = next(r for r in review.rows() if r.image == name).n_gt
    session.set_regions([], other)
    annotate.annotator.autosave()  # the version before it is kept
    review.review.rescore(name)
    assert next(r for r in review.rows() if r.image == name).n_gt == 0
    (version,) = history.versions(session.path)
    assert annotate.restore_version(version)
    assert next(r for r in review.rows() if r.image == name).n_gt == n_gt  # not only on screen


def test_closing_one_widget_hands_the_dialogs_and_keys_back_to_the_other(both, monkeypatch):
    """The failed-save and conflict dialogs were shown over the widget that opened the
    shared file last, even once it was closed; keys bound by a closed widget called it
    (or nothing). Closed, a widget hands both back to the one still open."""
    from napari.utils.key_bindings import KeyBinding

    from napari_bioanomaly.widgets import annotate as annotate_module
    from napari_bioanomaly.widgets import review as review_module

    viewer, annotate, review = both
    asked = []
    for module in (annotate_module, review_module):
        monkeypatch.setattr(module, "ask_save_failed",
                            lambda parent, exc, annotator: asked.append(parent))  # fmt: skip
    annotator = annotate.annotator
    annotator.on_save_failed(OSError("read-only"))
    assert asked == [review]  # opened last: its dialogs
    review.close()
    annotator.on_save_failed(OSError("read-only"))
    assert asked == [review, annotate]

    def press(key):
        viewer.keymap[KeyBinding.from_str(key)](viewer)

    start = annotator.index
    press("PageDown")  # Annotate's step
    assert annotator.index == start + 1
    assert KeyBinding.from_str("Alt-E") not in viewer.keymap  # Review's keys left with it
    annotate.close()
    assert KeyBinding.from_str("PageDown") not in viewer.keymap


def test_review_pages_on_once_the_annotate_widget_closes(make_napari_viewer, dataset_dir, qtbot):
    from napari.utils.key_bindings import KeyBinding

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    annotations.save(gt, dataset_dir / "pred.json", "via")
    viewer = make_napari_viewer()
    review = ReviewWidget(viewer)
    qtbot.addWidget(review)
    assert review.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    annotate = AnnotateWidget(viewer)
    qtbot.addWidget(annotate)
    assert annotate.open_path(dataset_dir)  # its PageDown on top of Review's
    annotate.close()
    page_down = viewer.keymap[KeyBinding.from_str("PageDown")]
    before = review.annotator.index
    page_down(viewer)
    assert review.annotator.index == before + 1


def test_train_and_review_uses_the_train_widgets_settings(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    train, review = TrainWidget(viewer), ReviewWidget(viewer)
    qtbot.addWidget(train)
    qtbot.addWidget(review)
    from napari_bioanomaly.ml.config import TrainConfig

    train.model.setCurrentText("forest")
    assert review.jobs.train_config(TrainConfig).model == "forest"
    train.model.setCurrentText("unet")
    train.tile.setValue(128)
    config = review.jobs.train_config(TrainConfig)
    assert (config.model, config.tile) == ("unet", 128)
    review.workspace.set_job("running", "something else")
    review.gt_edit.setText("x.json")
    assert not review.train_and_review()
    assert "Another job of this window runs" in review.summary.text()
    train.close()  # a closed Train widget no longer provides settings
    assert review.workspace.train_config is None


def test_while_one_widget_runs_a_job_the_others_buttons_wait(make_napari_viewer, qtbot):
    """Review's Train & review / Predict & review / Choose point stayed enabled while the
    Train widget trained (pressed, they only said another job runs), and the other way
    round: they are disabled until the job ends, the running widget's Stop stays."""
    viewer = make_napari_viewer()
    train, review = TrainWidget(viewer), ReviewWidget(viewer)
    qtbot.addWidget(train)
    qtbot.addWidget(review)
    review_buttons = [review.train_button, review.predict_button, review.point_button]
    train_buttons = [train.train_button, train.baseline_button, train.cv_button]
    workspace = review.workspace
    workspace.set_job("running", "Review predicts")  # another widget's job
    assert not any(b.isEnabled() for b in review_buttons + train_buttons)
    assert not train.stop_button.isEnabled()  # not its job to stop
    workspace.set_job("done")
    assert all(b.isEnabled() for b in review_buttons + train_buttons)
    train._own_job = True  # the Train widget's own job: its Stop stays enabled
    train._set_running(True)
    workspace.set_job("running", "training")
    assert train.stop_button.isEnabled() and not any(b.isEnabled() for b in review_buttons)
    workspace.set_job("done")
    assert all(b.isEnabled() for b in review_buttons)
    workspace.set_job("running", "Review predicts")
    late = TrainWidget(viewer)  # opened while the job runs: its buttons wait too
    qtbot.addWidget(late)
    assert not late.train_button.isEnabled() and not late.stop_button.isEnabled()
    workspace.set_job("done")
    assert late.train_button.isEnabled()
    for widget in (train, review, late):
        widget.close()
    assert len(workspace.job_changed) == 0  # nothing left connected to closed widgets


def test_conflict_dialog_can_keep_both_versions(both, dataset_dir, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    from napari_bioanomaly.widgets import _common

    _, annotate, _ = both
    annotator = annotate.annotator
    annotator.session.set_regions([Region(square(20, 20, 10), "mine")], 0)
    mine = tmp_path / "mine.json"
    clicked = {}

    def click(box):
        clicked["box"] = box
        box.clickedButton = lambda: next(b for b in box.buttons() if "copy" in b.text())
        return 0

    monkeypatch.setattr(QMessageBox, "exec", click)
    monkeypatch.setattr(QMessageBox, "exec_", click, raising=False)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(mine), ""))
    exc = DiskChanged("annotations.json: changed on disk")
    assert _common.ask_conflict(annotate, exc, annotator) == "reload"
    assert "mine" in mine.read_text()  # my version kept in the copy
    texts = [b.text() for b in clicked["box"].buttons()]
    assert any(t.startswith("Reload theirs") for t in texts) and "Decide later" in texts
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert _common.ask_conflict(annotate, exc, annotator) == "later"  # no file chosen


def test_a_file_moved_away_is_asked_about_as_such(both, dataset_dir, monkeypatch):
    """The annotation file was moved away while open: the dialog says so and offers to
    save it there again (it offered 'Reload theirs', which raised FileNotFoundError out of
    the autosave, and 'theirs kept as .bak'); a reload that fails is said, not raised."""
    from qtpy.QtWidgets import QMessageBox

    from napari_bioanomaly.widgets import _common

    _, annotate, _ = both
    annotator = annotate.annotator
    (dataset_dir / "annotations.json").rename(dataset_dir / "elsewhere.json")
    shown = {}

    def click(box):
        shown["title"], shown["buttons"] = box.windowTitle(), [b.text() for b in box.buttons()]
        box.clickedButton = lambda: box.buttons()[0]
        return 0

    monkeypatch.setattr(QMessageBox, "exec", click)
    monkeypatch.setattr(QMessageBox, "exec_", click, raising=False)
    annotator.on_conflict = lambda exc: _common.ask_conflict(annotate, exc, annotator)
    annotator.session.set_regions([Region(square(20, 20, 10), "dust")], 0)
    annotator.autosave()
    assert shown == {"title": "Annotation file moved or deleted",
                     "buttons": ["Save mine there again", "Decide later"]}  # fmt: skip
    assert (dataset_dir / "annotations.json").is_file() and not annotator.session.dirty
    said = []
    annotator.message.connect(said.append)
    (dataset_dir / "annotations.json").unlink()
    annotator.session.set_regions([], 0)
    annotator.on_conflict = lambda exc: "reload"  # as a dialog of before offered
    annotator.autosave()
    assert annotator.session.dirty and "not reloaded" in said[-1]


def test_closing_napari_with_annotations_not_saved_asks_first(both, dataset_dir, monkeypatch):
    """A conflict answered "Decide later", then napari's window closed: no dock widget's
    close runs, and the edits were lost without a word. The close tries to save once more
    (the conflict is asked again), then names the file and closes only if told to."""
    from qtpy.QtWidgets import QMessageBox

    viewer, annotate, _ = both
    window = viewer.window._qt_window
    window.show()
    annotator = annotate.annotator
    asked = []
    annotator.on_conflict = lambda exc: asked.append(exc) or "later"
    theirs = json.loads((dataset_dir / "annotations.json").read_text())
    theirs["_via_settings"]["project"]["name"] = "theirs"
    (dataset_dir / "annotations.json").write_text(json.dumps(theirs))
    annotator.session.set_regions([Region(square(20, 20, 10), "dust")], 0)
    annotator.autosave()
    assert annotator.session.dirty and len(asked) == 1
    shown, answer = [], {"text": "Cancel"}

    def click(box):
        shown.append(box.text())
        box.clickedButton = lambda: next(b for b in box.buttons() if b.text() == answer["text"])
        return 0

    monkeypatch.setattr(QMessageBox, "exec", click)
    monkeypatch.setattr(QMessageBox, "exec_", click, raising=False)
    assert not window.close() and window.isVisible()  # cancelled: napari stays open
    assert len(asked) == 2  # saving was tried again, the conflict asked again
    assert str(dataset_dir / "annotations.json") in shown[0] and annotator.session.dirty
    # a dataset let go of unsaved left its layer, named so: asked about too
    from napari_bioanomaly.widgets._common import unsaved_annotations

    viewer.add_shapes(name="ground truth (NOT SAVED)")
    assert "layer 'ground truth (NOT SAVED)'" in unsaved_annotations(viewer)
    answer["text"] = "Close and lose them"  # the close goes through (asked of the guard
    # itself: a window really closed deletes napari's viewer before the fixture closes it)
    from qtpy.QtGui import QCloseEvent

    event = QCloseEvent()
    assert window._bioanomaly_quit_guard.eventFilter(window, event) is False
    assert event.isAccepted() and len(shown) == 2
    annotator.session.dirty = False  # as lost: the fixture's teardown saves nothing


def test_a_region_without_a_class_stays_so_through_the_layer_features():
    from napari_bioanomaly._layers import region_from_row, region_row

    empty = Region(square(1, 1, 5), "anomaly", {"Cell": "x"}, class_attribute="Cell",
                   unlabelled='""')  # fmt: skip
    bare = Region(square(1, 1, 5), "anomaly", unlabelled="")
    given = Region(square(1, 1, 5), "dust")
    for region in (empty, bare, given):
        back = region_from_row(region.polygon, "polygon", region_row(region))
        assert (back.unlabelled, back.label, back.class_attribute) == (
            region.unlabelled,
            region.label,
            region.class_attribute,
        )


def test_reopening_the_same_file_keeps_one_session_and_one_layer(both, dataset_dir):
    viewer, annotate, review = both
    before = [layer.name for layer in viewer.layers]
    assert review.open(dataset_dir / "annotations.json", dataset_dir / "pred.json")
    assert annotate.open_path(dataset_dir / "annotations.json")
    assert [layer.name for layer in viewer.layers] == before
    assert annotate.annotator is review.annotator
    assert len(workspace_for(viewer).sessions) == 1


def _job(n, fail=False):
    yield from range(n)
    if fail:
        raise BioAnomalyError("no annotated anomalies")
    return n * 10


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("inline", [True, False])
def test_one_launcher_runs_every_job_and_keeps_the_job_state(qtbot, monkeypatch, inline, fail):
    from napari_bioanomaly.widgets._launch import INLINE_ENV, launch

    if inline:
        monkeypatch.setenv(INLINE_ENV, "1")
    else:
        monkeypatch.delenv(INLINE_ENV, raising=False)
    workspace, seen, states = Workspace(), [], []
    workspace.job_changed.connect(lambda state, message: states.append((state, message)))
    worker = launch(
        _job,
        (3, fail),
        on_event=seen.append,
        on_returned=lambda v: seen.append(("ret", v)),
        on_error=lambda exc: seen.append(("err", str(exc))),
        on_finished=lambda: seen.append("finished"),
        workspace=workspace,
        describe="job",
    )
    assert (worker is None) == inline
    if worker is not None:
        qtbot.waitUntil(lambda: "finished" in seen, timeout=10_000)
    end = [("err", "no annotated anomalies")] if fail else [("ret", 30)]
    assert seen == [0, 1, 2, *end, "finished"]
    last = ("failed", "no annotated anomalies") if fail else ("done", "")
    assert states == [("running", "job"), last] and not workspace.busy


def test_two_windows_on_one_file_surface_every_conflict(make_napari_viewer, dataset_dir, qtbot):
    """Two napari windows (two workspaces, two sessions) annotate one file: the second
    window's save after the first's is never silent; when the user then overwrites, the
    first window's edit is in the .bak, the second's in the file."""
    from collections import Counter

    from napari_bioanomaly.core.fileio import backup_path

    before = Counter(labels_on_disk(dataset_dir))
    windows = []
    for _ in range(2):
        widget = AnnotateWidget(make_napari_viewer())
        qtbot.addWidget(widget)
        assert widget.open_path(dataset_dir)
        windows.append(widget)
    first, second = (w.annotator for w in windows)
    assert first.session is not second.session  # one per window
    asked = []
    second.on_conflict = lambda exc: asked.append(exc) or "later"
    first.current_class = "hair"
    first.shapes_layer.add_polygons([square(10, 10, 20) + 0.5])
    assert not first.session.dirty
    assert Counter(labels_on_disk(dataset_dir)) == before + Counter(["hair"])
    second.current_class = "dust"
    second.shapes_layer.add_polygons([square(60, 60, 20) + 0.5])
    assert len(asked) == 1 and isinstance(asked[0], DiskChanged) and second.session.dirty
    assert Counter(labels_on_disk(dataset_dir)) == before + Counter(["hair"])  # untouched
    second.on_conflict = lambda exc: "overwrite"
    second.autosave()
    assert not second.session.dirty
    assert Counter(labels_on_disk(dataset_dir)) == before + Counter(["dust"])
    theirs = json.loads(backup_path(dataset_dir / "annotations.json").read_text())
    kept = Counter(r["region_attributes"].get("class") for v in
                   theirs["_via_img_metadata"].values() for r in v["regions"])  # fmt: skip
    assert kept == before + Counter(["hair"])


def _refused_job():
    yield 1
    raise PermissionError(13, "Permission denied", "/data/ro/model.pt")


def test_a_job_the_file_system_refuses_fails_plainly(qtbot, monkeypatch):
    """An OSError in a job (a full disk, a read-only folder) was raised again on the GUI
    thread as a bug (without napari's error hook the process aborted): it is said with the
    file's name, as the command line says it."""
    from napari_bioanomaly.widgets._launch import INLINE_ENV, launch

    monkeypatch.delenv(INLINE_ENV, raising=False)
    workspace, seen, states = Workspace(), [], []
    workspace.job_changed.connect(lambda state, message: states.append((state, message)))
    launch(_refused_job, on_error=lambda exc: seen.append(type(exc).__name__),
           on_finished=lambda: seen.append("finished"), workspace=workspace)  # fmt: skip
    qtbot.waitUntil(lambda: "finished" in seen, timeout=10_000)
    assert seen == ["PermissionError", "finished"]
    assert states[-1] == ("failed", "/data/ro/model.pt: Permission denied")


def test_review_s_note_follows_an_image_checked_in_annotate(make_napari_viewer, dataset_dir, qtbot):
    """Review counts the images neither annotated nor checked once per change of the
    ground truth; an image checked in Annotate changes its note at once."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images[3:]:  # three images nobody looked at yet
        im.regions, im.no_anomaly, im.reviewed = [], False, False
    annotations.save(gt, dataset_dir / "annotations.json", "via-project")
    _, annotate, review = annotate_and_review(make_napari_viewer, dataset_dir, qtbot, gt)
    note = "{} of 6 images neither annotated nor checked: scored as without anomaly"
    annotated, checked, unknown = review.review.ground_truth_state()
    assert unknown == 3 and note.format(3) in review.summary.text()
    annotate.go_to(4)
    annotate.no_anomaly_box.setChecked(True)  # in Annotate: Review's note follows at once
    assert review.review.ground_truth_state() == (annotated, checked + 1, 2)
    assert note.format(2) in review.summary.text()
    annotate.go_to(5)  # an outline drawn on an image not checked yet: annotated now
    annotate.annotator.shapes_layer.add_polygons([square(10, 10, 20) + 0.5])
    assert review.review.ground_truth_state() == (annotated + 1, checked + 1, 1)
    assert note.format(1) in review.summary.text()


def test_a_class_renamed_in_annotate_is_scored_under_its_new_name_in_review(both, qtbot):
    """Renamed in the Annotate widget, a class kept its old name in the Review widget's
    per-class figures (only the image on screen was scored again, and a rename was no
    edit) until the review was opened again."""
    _viewer, annotate, review = both
    review.tabs.setCurrentIndex(2)  # the per-class tab on screen
    assert "dust" in review.report().classes
    before = review.report().classes["dust"]["gt"]
    annotate.rename_class("dust", "debris")
    classes = review.report().classes
    assert classes["debris"]["gt"] == before and classes["dust"]["gt"] == 0  # a prediction's
    qtbot.waitUntil(lambda: any(
        (item := review.class_table.item(row, 0)) is not None and item.text() == "debris"
        for row in range(review.class_table.rowCount())))  # fmt: skip
