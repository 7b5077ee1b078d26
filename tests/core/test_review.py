"""ReviewSession without a GUI: the figures evaluate gives, accept / reject / propose, and
no accepted region ever in neither file."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core import review as review_module
from napari_bioanomaly.core.evaluate import evaluate
from napari_bioanomaly.core.fileio import DiskChanged
from napari_bioanomaly.core.maps import heatmap_path
from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.core.review import COLUMNS, ReviewSession, predictions_path
from napari_bioanomaly.core.session import AnnotationSession


def square(r, c, s):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)


@pytest.fixture
def files(dataset_dir):
    """Predictions: each image's ground truth without its first region, the others grown
    by a quarter about their centres (IoU about 0.64), plus a weak false positive."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images:
        kept = []
        for k, r in enumerate(im.regions[1:]):
            centre = r.polygon.mean(axis=0)
            poly = centre + (r.polygon - centre) * (1.25 if k % 2 else 1.0)
            kept.append(Region(poly, r.label, score=0.9, source="model"))
        im.regions = [*kept, Region(square(100, 100, 12), "dust", score=0.3, source="model")]
    pred = dataset_dir / "pred.json"
    annotations.save(gt, pred, "via")
    return dataset_dir / "annotations.json", pred


def open_review(files):
    session = AnnotationSession.open(files[0])
    return ReviewSession.open(session, files[1])


@pytest.mark.parametrize(("iou", "score"), [(0.5, 0.5), (0.7, 0.5), (0.5, 0.2), (0.3, 0.0)])
def test_rows_and_report_are_what_evaluate_gives(files, iou, score):
    review = open_review(files)
    review.iou_threshold, review.score_threshold = iou, score
    gt, _ = annotations.load(files[0])
    pred, _ = annotations.load(files[1], read_images=False)
    expected = evaluate(gt, pred, iou, score, group_by="cell_line")
    rows = {r.image: (r.tp, r.fp, r.fn, r.inter_px, r.union_px) for r in review.rows()}
    assert rows == {r.image: (r.tp, r.fp, r.fn, r.inter_px, r.union_px) for r in expected.rows}
    report = review.report()
    for key in ("tp", "fp", "fn", "precision", "recall", "f1", "pixel_iou"):
        assert report.summary[key] == expected.summary[key]
    assert report.groups.keys() == expected.groups.keys()
    assert report.classes == expected.classes
    _, summary, groups = review.summaries()  # what a slider move computes
    assert summary == report.summary and groups == report.groups


def test_thresholds_change_the_figures(files):
    review = open_review(files)
    assert review.score_threshold == 0.0  # every prediction counts, as in evaluate
    review.score_threshold = 0.5
    loose = review.report().summary
    review.iou_threshold = 0.7  # the grown regions (IoU 0.64) no longer match
    strict = review.report().summary
    assert strict["tp"] < loose["tp"] and strict["fn"] > loose["fn"]
    review.score_threshold = 0.2  # the weak false positives count
    assert review.report().summary["fp"] == strict["fp"] + len(review.names)


def test_records_are_found_by_name_whatever_happens_to_the_lists(files):
    """Images are looked up through a map of positions (opening 2,000 images searched the
    lists once per image before): reordered, shortened or replaced lists still give each
    name its own record, and an image without predictions gets an empty record once, kept
    out of the predictions file (there it would say the model predicted nothing)."""
    review = open_review(files)
    names = list(review.names)
    own = {n: review.prediction(n) for n in names}
    review.predictions.images.reverse()
    assert all(review.prediction(n) is own[n] for n in names)
    gone = review.predictions.images.pop()
    added = review.prediction(gone.filename)
    assert added is not gone and not added.regions
    assert review.prediction(gone.filename) is added
    assert len(review.predictions.images) == len(names) - 1
    review.predictions.images = [own[n] for n in names[1:]]
    assert review.prediction(names[1]) is own[names[1]]
    gt = review.gt.dataset.images
    assert [review.ground_truth(n) for n in names] == [im for im in gt if im.filename in names]
    gt.insert(0, gt.pop())
    assert all(review.ground_truth(n).filename == n for n in names)
    with pytest.raises(BioAnomalyError, match=r"not-there\.png: not an image of"):
        review.ground_truth("not-there.png")


def test_accept_copies_regions_into_the_saved_ground_truth_and_they_count_as_found(files):
    """An accepted prediction joins the ground truth and stays a prediction: the model
    found it, so it is a true positive now, where it was a false one (until 2026-12-06 it
    left the predictions and turned into a miss)."""
    review = open_review(files)
    name = review.names[0]
    before_gt = len(review.ground_truth(name).regions)
    row = review.rows()[0]
    shown = review.shown(name)
    weak = review.prediction(name).regions[shown[-1]]  # the weak false positive
    accepted = review.accept(name, [len(shown) - 1])
    assert [r.source for r in accepted] == ["model-accepted"] and review.confirmed == 0
    np.testing.assert_allclose(accepted[0].polygon, weak.polygon)
    gt, _ = annotations.load(files[0])
    pred, _ = annotations.load(files[1], read_images=False)
    on_disk = {im.filename: im for im in gt.images}[name]
    assert len(on_disk.regions) == before_gt + 1 and on_disk.regions[-1].source == "model-accepted"
    assert len({im.filename: im for im in pred.images}[name].regions) == len(shown)  # kept
    after = review.rows()[0]  # rescored: the false positive is found now
    assert (after.n_gt, after.n_pred) == (before_gt + 1, row.n_pred)
    assert (after.tp, after.fp, after.fn) == (row.tp + 1, row.fp - 1, row.fn)
    expected = evaluate(gt, pred, review.iou_threshold, review.score_threshold)
    assert {r.image: (r.tp, r.fp, r.fn) for r in expected.rows}[name] == (
        after.tp, after.fp, after.fn)  # fmt: skip


def test_accepting_a_prediction_of_a_region_the_ground_truth_has_adds_it_once(files):
    """A prediction matching a ground-truth region (IoU at the review's threshold) is found
    already: accepted, nothing changes in either file."""
    review = open_review(files)
    name = review.names[0]
    before = list(review.ground_truth(name).regions)
    n_pred = len(review.prediction(name).regions)
    mtime = files[1].stat().st_mtime_ns
    assert review.accept(name, [0]) == [] and review.confirmed == 1
    assert review.ground_truth(name).regions == before
    assert len(review.prediction(name).regions) == n_pred
    assert files[1].stat().st_mtime_ns == mtime


def test_accepting_a_prediction_of_no_pixel_adds_nothing_and_says_why(files):
    """A prediction that covers no pixel (a sliver between pixel centres) is left out of
    the scores: accepted, it is not added, and counted apart, not among those kept out
    because the ground truth has their region (which it has not)."""
    from napari_bioanomaly.core.model import Region

    review = open_review(files)
    name = review.names[0]
    before = list(review.ground_truth(name).regions)
    sliver = np.array([[10.1, 10.1], [10.1, 10.4], [10.4, 10.4], [10.4, 10.1]])
    review.prediction(name).regions.append(Region(sliver, "dust", score=0.9, source="model"))
    review.rescore(name)
    last = len(review.shown(name)) - 1
    assert review.accept(name, [last]) == []
    assert (review.confirmed, review.kept_out, review.empty) == (0, 0, 1)
    assert review.ground_truth(name).regions == before


def test_accept_takes_the_edited_outline(files):
    review = open_review(files)
    name = review.names[0]
    edited = [square(5, 5, 30)] * len(review.shown(name))
    model = review.prediction(name).regions[review.shown(name)[0]].polygon.copy()
    accepted = review.accept(name, [0], polygons=edited)
    np.testing.assert_allclose(accepted[0].polygon, edited[0])
    np.testing.assert_allclose(review.prediction(name).regions[0].polygon, model)  # the model's


def test_an_outline_edited_before_its_accept_is_added_once(files):
    """Trimmed below the IoU threshold before it is accepted, a prediction no longer
    matches its accepted copy: the model's outline is a false alarm and the copy a miss
    (the model's outline was off by more than the threshold), and a second accept of it
    adds nothing again (it added a duplicate): kept out, a false alarm still."""
    review = open_review(files)
    name = review.names[0]
    shown = review.shown(name)
    weak = len(shown) - 1  # the 12 px false alarm at (100, 100)
    before = review.rows()[0]
    trimmed = [review.prediction(name).regions[i].polygon for i in shown]
    trimmed[weak] = square(100, 100, 6)
    (copy,) = review.accept(name, [weak], polygons=trimmed)
    np.testing.assert_allclose(copy.polygon, square(100, 100, 6))
    after = review.rows()[0]
    assert (after.tp, after.fp, after.fn) == (before.tp, before.fp, before.fn + 1)
    n_gt = len(review.ground_truth(name).regions)
    assert review.accept(name, [weak]) == [] and (review.confirmed, review.kept_out) == (0, 1)
    assert len(review.ground_truth(name).regions) == n_gt
    assert review.rows()[0] == after  # what the table says is what happened: nothing
    again = open_review(files)  # another review of the same files: known again
    assert again.accept(name, [weak]) == [] and again.kept_out == 1
    assert len(again.ground_truth(name).regions) == n_gt


def _unscored_pair(files, truth: bool):
    """The first image with two overlapping unscored predictions (IoU 0.6 with each
    other) and nothing else; with ``truth``, a ground-truth region both match."""
    review = open_review(files)
    name = review.names[0]
    a, b = square(20, 20, 40), square(20, 30, 40)  # 40 x 40, shifted 10 px: IoU 0.6
    review.prediction(name).regions = [Region(a, "dust", source="model"),
                                       Region(b, "dust", source="model")]  # fmt: skip
    index = review._gt_position(name)
    review.gt.set_regions([Region(square(20, 25, 40), "dust")] if truth else [], index)
    review.rescore(name)
    return review, name


@pytest.mark.parametrize("truth", [False, True])
@pytest.mark.parametrize("together", [False, True])
def test_two_overlapping_unscored_predictions_accepted_count_as_the_table_does(
    files, truth, together
):
    """Only one of two overlapping predictions can match a ground-truth region. Accepted
    together or one after the other, the same happens: the first is found (or added), the
    second is not added a second time over the same anomaly, and what accept says is what
    the table counts (unscored, the second was "found" by any model-accepted region it
    touched, and said found while the table counted it a false positive)."""
    review, name = _unscored_pair(files, truth)
    n_gt = len(review.ground_truth(name).regions)
    if together:
        added = review.accept(name, [0, 1])
        said = (review.confirmed, review.kept_out)
    else:
        added = review.accept(name, [0])
        first = review.confirmed
        added += review.accept(name, [1])
        said = (first + review.confirmed, review.kept_out)
    row = review.rows()[0]
    assert (row.tp, row.fp) == (1, 1) and row.n_gt == 1
    assert len(added) == (0 if truth else 1) and len(review.ground_truth(name).regions) == 1
    assert said == ((1, 1) if truth else (0, 1))  # found already / kept out
    assert len(review.ground_truth(name).regions) - n_gt == len(added)


def test_two_unscored_predictions_that_touch_are_both_added(files):
    """Two distinct anomalies side by side (their outlines touch, IoU 0.05), unscored:
    accepted one after the other, the second was taken for the first one's copy (same
    score, None, and overlapping) and never added; accepted as together, both were."""
    for together in (True, False):
        review, name = _unscored_pair(files, truth=False)
        a, b = square(20, 20, 20), square(20, 38, 20)  # 2 px of 20 overlap
        review.prediction(name).regions = [Region(a, "dust", source="model"),
                                           Region(b, "hair", source="model")]  # fmt: skip
        review.rescore(name)
        if together:
            added = review.accept(name, [0, 1])
        else:
            added = review.accept(name, [0]) + review.accept(name, [1])
        assert [r.label for r in added] == ["dust", "hair"], together
        assert (review.confirmed, review.kept_out) == (0, 0)
        row = review.rows()[0]
        assert (row.tp, row.fp, row.fn) == (2, 0, 0)


def test_a_ground_truth_save_refused_loses_no_accepted_region(files):
    review = open_review(files)
    name = review.names[0]
    n_pred = len(review.prediction(name).regions)
    files[0].write_text(files[0].read_text().replace("}", "} ", 1))  # someone else saved it
    with pytest.raises(DiskChanged):
        review.accept(name, [len(review.shown(name)) - 1])  # the false positive
    assert review.gt.dirty  # in memory, waiting for a choice
    pred, _ = annotations.load(files[1], read_images=False)
    assert len({im.filename: im for im in pred.images}[name].regions) == n_pred  # still there
    review.gt.save(force=True)
    gt, _ = annotations.load(files[0])
    assert {im.filename: im for im in gt.images}[name].regions[-1].source == "model-accepted"


def test_a_correction_never_writes_over_predictions_written_again(files):
    """predict wrote the predictions file again while it was under review: a rejection
    wrote the old predictions over the new ones (kept only in the .bak, which the next
    rejection replaced). Now nothing is changed or written, and said; a review opened
    again corrects the new file."""
    review = open_review(files)
    name = review.names[0]
    new = files[1].read_text().replace("}", "} ", 1)  # the same predictions, written again
    files[1].write_text(new)
    n = len(review.prediction(name).regions)
    with pytest.raises(DiskChanged, match="changed on disk since the review read it"):
        review.reject(name, [0])
    assert files[1].read_text() == new and len(review.prediction(name).regions) == n
    again = open_review(files)
    assert again.reject(name, [0]) == 1
    assert again.reject(name, [0]) == 1  # its own save is no change on disk
    pred, _ = annotations.load(files[1], read_images=False)
    assert len({im.filename: im for im in pred.images}[name].regions) == n - 2


def test_predictions_are_written_under_the_lock_a_correction_takes(files):
    """A correction compares the file and writes it under a lock; predict wrote without
    it, so new predictions could land between the review's check and its write, and be
    written over. The predictions are written under the same lock now."""
    import threading

    from napari_bioanomaly.core.fileio import file_lock

    pred, _ = annotations.load(files[1], read_images=False)
    before = files[1].read_bytes()
    saved = threading.Event()
    writer = threading.Thread(target=lambda: (annotations.save(pred, files[1], "via"),
                                              saved.set()))  # fmt: skip
    with file_lock(files[1]):  # a correction between its check and its write
        writer.start()
        assert not saved.wait(0.5)
        assert files[1].read_bytes() == before
    assert saved.wait(10)
    writer.join()


def test_a_rejection_that_cannot_be_written_changes_nothing(files, monkeypatch):
    """The predictions file could not be written (a full disk): the rejection was kept in
    memory all the same, so the list on screen and the one picked from differed, and the
    next rejection removed another prediction than the one shown (and wrote both)."""
    review = open_review(files)
    name = review.names[0]
    before = list(review.prediction(name).regions)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_bioanomaly.core.review.replace_if_unchanged", full)
    with pytest.raises(OSError):
        review.reject(name, [0])
    assert review.prediction(name).regions == before
    monkeypatch.undo()  # the disk has room again: the one shown first is the one rejected
    assert review.reject(name, [0]) == 1
    assert review.prediction(name).regions == before[1:]


def test_a_ground_truth_read_again_is_scored_again_for_every_image(files):
    """An earlier version restored (or theirs reloaded) changes any image: every one is
    scored again (only the image on screen was)."""
    review = open_review(files)
    before = {r.image: (r.tp, r.fn) for r in review.rows()}
    gt, _ = annotations.load(files[0])
    for im in gt.images:
        im.regions = []
    annotations.save(gt, files[0], "via-project")
    review.gt.reload()
    review.ground_truth_reloaded()
    assert {r.image: (r.tp, r.fn) for r in review.rows()} == {name: (0, 0) for name in before}
    assert any(tp for tp, _ in before.values())


def test_reject_saves_the_predictions_at_once(files):
    review = open_review(files)
    name = review.names[1]
    n = len(review.prediction(name).regions)
    assert review.reject(name, [0, 99]) == 1  # out-of-range positions are ignored
    pred, _ = annotations.load(files[1], read_images=False)
    assert len({im.filename: im for im in pred.images}[name].regions) == n - 1


def test_each_correction_re_encodes_its_image_only_and_writes_what_a_full_export_does(
    files, monkeypatch
):
    """Every rejection wrote the whole predictions file again from the model (1.5 s per
    click at 2,000 images): only the changed image is encoded again, and the file is still
    exactly what a full export of the predictions writes, failed writes included."""
    from napari_bioanomaly.core import via_write
    from napari_bioanomaly.core.jsonio import dumps

    review = open_review(files)
    first, second = review.names[:2]
    review.reject(first, [0])
    encoded = []
    real_entry = via_write.image_entry
    monkeypatch.setattr(via_write, "image_entry", lambda im, *a, **k: encoded.append(
        im.filename) or real_entry(im, *a, **k))  # fmt: skip
    review.reject(second, [0])
    assert encoded == [second]

    def full_export() -> bytes:
        return dumps(via_write.to_via_export(review.predictions), check_finite=False)

    assert files[1].read_bytes() == full_export()
    kept = files[1].read_bytes()
    real_replace = review_module.replace_if_unchanged
    monkeypatch.setattr(review_module, "replace_if_unchanged", lambda *a, **k: (_ for _ in ()
                        ).throw(OSError(28, "No space left on device")))  # fmt: skip
    with pytest.raises(OSError):
        review.reject(second, [0])
    assert files[1].read_bytes() == kept
    monkeypatch.setattr(review_module, "replace_if_unchanged", real_replace)
    review.reject(first, [0])  # the entry of the failed rejection was not kept
    assert files[1].read_bytes() == full_export()
    assert annotations.load(files[1], read_images=False)[0] is not None


def test_opened_in_steps_the_ground_truth_is_left_alone_until_adopted(files):
    """A worker thread opens the review while the GUI thread may edit the ground truth:
    opening reads it but changes nothing (sizes are read aside), an edit made meanwhile
    is scored once the review is adopted, and the scores are those of an open in one go."""
    session = AnnotationSession.open(files[0])
    steps = ReviewSession.opening(session, files[1])
    assert next(steps) == (0, 6)
    first = session.dataset.images[0]
    session.set_regions([*first.regions, Region(square(2, 2, 8), "dust")], 0)  # meanwhile
    edits, dirty = session.edits, session.dirty
    progress = list(_run(steps))
    review = progress.pop()
    assert progress[-1] == (6, 6)
    assert all(im.shape is None for im in session.dataset.images)  # nothing set yet
    assert (session.edits, session.dirty, session.problems) == (edits, dirty, {})
    rescored = []
    real = review.rescore
    review.rescore = lambda name: rescored.append(name) or real(name)
    review.adopt()
    assert rescored == [first.filename]  # the image edited meanwhile, alone
    assert all(im.shape is not None for im in session.dataset.images)
    in_one_go = ReviewSession.open(AnnotationSession.open(files[0]), files[1])
    in_one_go.gt.set_regions([*in_one_go.gt.dataset.images[0].regions,
                              Region(square(2, 2, 8), "dust")], 0)  # fmt: skip
    in_one_go.rescore(first.filename)
    assert review.rows() == in_one_go.rows()
    unedited = ReviewSession.open(AnnotationSession.open(files[0]), files[1])
    assert review.rows()[0].n_gt == unedited.rows()[0].n_gt + 1  # the edit is scored


def test_an_image_smaller_than_recorded_is_clipped_and_scored_clipped_when_adopted(files):
    """The sizes an open in steps reads aside are set as the session sets them: regions
    past the edges of an image smaller than its record are clipped, and scored so."""
    import json

    data = json.loads(files[0].read_text())
    entry = next(iter(data["_via_img_metadata"].values()))
    entry["regions"].append({"shape_attributes": {"name": "rect", "x": 250, "y": 250,
                             "width": 40, "height": 40}, "region_attributes": {"class": "dust"}})  # fmt: skip
    files[0].write_text(json.dumps(data))
    session = AnnotationSession.open(files[0])
    name = session.dataset.images[0].filename
    steps = ReviewSession.opening(session, files[1])
    review = list(_run(steps)).pop()
    rescored = []
    real = review.rescore
    review.rescore = lambda name: rescored.append(name) or real(name)
    review.adopt()
    assert rescored == [name]  # the clipped image, alone (clipping counts as an edit)
    eager = ReviewSession.open(AnnotationSession.open(files[0]), files[1])
    assert review.ground_truth(name).regions[-1].area == eager.ground_truth(name).regions[-1].area
    assert review.rows() == eager.rows()


def test_a_class_renamed_is_scored_under_its_new_name_open_or_opening(files):
    """A class renamed in the Annotate widget while a review was open, or opening, kept
    its old name in the per-class figures (a rename counted as no edit, and the cache
    kept the labels) until the review was opened again."""
    session = AnnotationSession.open(files[0])
    review = ReviewSession.open(session, files[1])
    assert "dust" in review.report().classes
    session.rename_class("dust", "debris")
    assert review.relabel() > 0
    fresh = ReviewSession.open(session, files[1])
    assert review.report().classes == fresh.report().classes
    assert "debris" in review.report().classes
    assert review.report().classes["debris"]["gt"] > 0
    assert review.relabel() == 0  # nothing more to take
    # renamed while a review opens in steps: scored again when adopted
    steps = ReviewSession.opening(session, files[1])
    next(steps)
    session.rename_class("debris", "fibre")
    opened = list(_run(steps)).pop()
    opened.adopt()
    assert opened.report().classes == ReviewSession.open(session, files[1]).report().classes
    assert "fibre" in opened.report().classes and "debris" not in opened.report().classes


def test_a_ground_truth_read_again_with_fewer_images_while_opening_is_opened_again(files):
    """The ground truth's file read again while a review opened in steps (an earlier
    version restored, with one image fewer): the steps looked its images up in the new
    dataset and failed ("not an image of ..."), instead of being opened again."""
    import dataclasses

    session = AnnotationSession.open(files[0])
    steps = ReviewSession.opening(session, files[1])
    next(steps)
    session.dataset = dataclasses.replace(session.dataset, images=session.dataset.images[:-1])
    review = list(_run(steps)).pop()  # no error
    assert review.ground_truth_replaced()  # the widget opens it again


def test_two_images_of_one_name_are_written_whole_not_from_kept_entries(files):
    """Entries are kept by file name: a dataset holding two records of one name (the
    readers merge them, a caller may not) is encoded whole, each record once."""
    import json

    from napari_bioanomaly.core import via_write
    from napari_bioanomaly.core.model import ImageRecord

    review = open_review(files)
    ds = review.predictions
    ds.images.append(ImageRecord(ds.images[0].filename, regions=[Region(square(5, 5, 9), "dust")]))
    cache = {}
    raw = via_write.encode_cached(lambda e: via_write.to_via_export(ds, e), ds, cache)
    assert not cache
    written = json.loads(raw)
    assert len(written) == len(ds.images)
    assert sorted(len(v["regions"]) for v in written.values()) == sorted(
        len(im.regions) for im in ds.images)  # fmt: skip


def _run(steps):
    """Every step of a generator, then what it returned."""
    while True:
        try:
            yield next(steps)
        except StopIteration as done:
            yield done.value
            return


def test_the_ground_truth_chosen_as_the_predictions_is_refused(files):
    """The same annotations.json in both fields (two browse buttons) opened a review of
    F1 1.000, and a rejection deleted an annotation from the ground truth's file,
    rewritten as a VIA export (its classes and settings gone)."""
    session = AnnotationSession.open(files[0])
    before = files[0].read_bytes()
    with pytest.raises(BioAnomalyError, match="the ground truth's own annotations, chosen as"):
        ReviewSession.open(session, files[0])
    assert files[0].read_bytes() == before


def test_the_fields_swapped_are_refused_and_another_annotator_s_file_stays_whole(files):
    """The ground truth and the predictions swapped (pred.json as the ground truth,
    annotations.json as the predictions): each rejection deleted an annotation from
    annotations.json, rewritten as a VIA export, and Accept wrote a person's regions into
    pred.json (made a VIA project). The swap is refused. Another annotator's file given as
    the predictions opens read-only: scores and accepting work, rejecting and proposing
    are refused, naming the file and why, and it is never written."""
    import shutil

    import tifffile

    before_pred = files[1].read_bytes()
    with pytest.raises(BioAnomalyError, match=r"pred\.json: holds only a model's predictions "
                       r"\(\d+ regions, source 'model'\), chosen as the ground truth"):  # fmt: skip
        ReviewSession.open(AnnotationSession.open(files[1]), files[0])
    assert files[1].read_bytes() == before_pred
    # a ground truth of a model's regions alone is fine with a model's predictions
    # (predict's output corrected in Annotate, then a new run reviewed against it)
    rerun = files[1].with_name("pred_rerun.json")
    shutil.copy(files[1], rerun)
    assert ReviewSession.open(AnnotationSession.open(files[1]), rerun).rows()
    other = files[0].with_name("annotator_b.json")  # a person's regions, as the predictions
    shutil.copy(files[0], other)
    before = other.read_bytes()
    review = ReviewSession.open(AnnotationSession.open(files[0]), other)
    assert review.read_only is not None
    assert "annotator_b.json holds" in review.read_only
    assert "drawn or accepted by a person" in review.read_only
    assert review.rows()  # scored as any review: the two annotators' agreement
    name = next(n for n in review.names if review.shown(n))
    with pytest.raises(BioAnomalyError, match=r"annotator_b\.json holds .* reviewed read-only"):
        review.reject(name, [0])
    heat = np.zeros(review.ground_truth(name).shape, np.float32)
    heat[40:60, 50:80] = 0.9
    path = heatmap_path(review.heatmaps, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, heat)
    with pytest.raises(BioAnomalyError, match="read-only"):
        review.propose(name, 0.5, 16)
    with pytest.raises(BioAnomalyError, match="read-only"):
        review.save_predictions()
    assert len(review.prediction(name).regions) == len(
        annotations.load(other, read_images=False)[0].images[review.names.index(name)].regions
    )
    assert other.read_bytes() == before
    assert not other.with_name(other.name + ".bak").exists()


def test_another_tool_s_predictions_without_scores_are_corrected_in_a_copy_marked_so(files):
    """Another tool's predictions with neither score nor source read as drawn by a person:
    reviewed read-only, and the copy the message suggested was read-only too. ``convert
    --as-predictions`` makes a copy marked as a model's, which Review corrects."""
    import json

    from napari_bioanomaly.cli import main

    data = json.loads(files[1].read_text())
    for entry in data.values():  # what another tool writes: a class, nothing else
        for r in entry["regions"]:
            r["region_attributes"] = {"class": r["region_attributes"]["class"]}
    tool = files[1].with_name("tool.json")
    tool.write_text(json.dumps(data))
    review = ReviewSession.open(AnnotationSession.open(files[0]), tool)
    assert review.read_only is not None
    assert "or predicted by a tool that gives no score nor source" in review.read_only
    assert f"convert {tool} --to via <copy>.json --as-predictions" in review.read_only
    copy = files[1].with_name("tool_copy.json")
    assert main(["convert", str(tool), "--to", "coco", str(copy), "--as-predictions"]) == 2
    assert not copy.exists()  # a COCO file would not keep the mark
    assert main(["convert", str(tool), "--to", "via", str(copy), "--as-predictions"]) == 0
    corrected = ReviewSession.open(AnnotationSession.open(files[0]), copy)
    assert corrected.read_only is None
    name = next(n for n in corrected.names if corrected.shown(n))
    n = len(corrected.prediction(name).regions)
    assert corrected.reject(name, [0]) == 1
    saved, _ = annotations.load(copy, read_images=False)
    assert len(next(im for im in saved.images if im.filename == name).regions) == n - 1
    assert all(r.source == "model" for r in saved.regions)


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("via-project", "a VIA 2 project"), ("coco", "COCO"), ("via1", "a VIA 1 export")],
)
def test_predictions_of_another_kind_than_a_via_export_are_reviewed_read_only(files, fmt, kind):
    """Model predictions kept as a VIA project, COCO results or a VIA 1 export: a rejection
    rewrote the file as a VIA 2 export (the project's settings, COCO's ids gone; VIA 1
    cannot open it)."""
    import json

    pred, _ = annotations.load(files[1], read_images=False)
    other = files[1].with_name("pred_other.json")
    if fmt == "via1":  # VIA 1 keeps an image's regions as an object
        data = json.loads(files[1].read_text())
        for entry in data.values():
            entry["regions"] = {str(i): r for i, r in enumerate(entry["regions"])}
        other.write_text(json.dumps(data))
    else:
        annotations.save(pred, other, fmt)
    before = other.read_bytes()
    review = ReviewSession.open(AnnotationSession.open(files[0]), other)
    assert review.read_only is not None and f"is {kind}, not a VIA export" in review.read_only
    assert f"convert {other} --to via" in review.read_only
    name = next(n for n in review.names if review.shown(n))
    with pytest.raises(BioAnomalyError, match="read-only"):
        review.reject(name, [0])
    assert other.read_bytes() == before
    # the predictions predict writes stay correctable
    writable = ReviewSession.open(AnnotationSession.open(files[0]), files[1])
    assert writable.read_only is None and writable.reject(name, [0]) == 1


def test_propose_outlines_the_stored_map(files):
    import tifffile

    review = open_review(files)
    name = review.names[0]
    assert review.propose(name, 0.5, 16) is None  # no map yet
    heat = np.zeros(review.ground_truth(name).shape, np.float32)
    heat[40:60, 50:80] = 0.9
    path = heatmap_path(review.heatmaps, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, heat)
    regions = review.propose(name, 0.5, 16)
    assert len(regions) == 1 and regions[0].area == pytest.approx(600, rel=0.1)
    assert review.prediction(name).regions == regions
    heat[10:20, 10:20] = 0.3  # a faint patch: proposed at 0.2 unless it must reach a peak
    tifffile.imwrite(path, heat)
    review._heat.clear()
    assert len(review.propose(name, 0.2, 16)) == 2
    assert len(review.propose(name, 0.2, 16, min_peak=0.8)) == 1
    path.write_bytes(b"not a tiff")
    review._heat.clear()
    with pytest.raises(Exception, match="cannot read the anomaly map"):
        review.heatmap(name)


def test_table_csv_and_predictions_path(files, tmp_path):
    review = open_review(files)
    out = review.table_csv(tmp_path / "t.csv")
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == COLUMNS and len(lines) == len(review.names) + 1
    # a mean IoU where nothing matched is an empty cell, as in evaluate --csv (a -1 pulled
    # a spreadsheet's mean down), and a number elsewhere
    rows = list(csv.DictReader(lines))
    unmatched = [r for r in rows if r["TP"] == "0"]
    matched = [r for r in rows if r["TP"] not in ("", "0")]
    assert unmatched and matched
    assert all(r["mean IoU"] == "" for r in unmatched)
    assert all(0 < float(r["mean IoU"]) <= 1 for r in matched)
    assert predictions_path(files[0]).name == "annotations.predictions.json"
    assert predictions_path(files[0].parent) == files[0].parent / "annotations.predictions.json"


def test_a_table_that_cannot_be_written_is_said_once_naming_the_file(files, tmp_path):
    """The table's own "cannot write PATH: ..." wrapped atomic_write's WriteError, which
    names the file already: two wordings of one failure. The WriteError comes through."""
    from napari_bioanomaly.core.fileio import WriteError

    review = open_review(files)
    (tmp_path / "notes").write_text("a file where a folder should be")
    target = tmp_path / "notes" / "t.csv"
    with pytest.raises(WriteError) as info:
        review.table_csv(target)
    said = str(info.value)
    assert said.startswith(f"{target}: cannot be written (") and "\n" not in said
    assert "cannot write" not in said and said.count(str(target)) == 1
    assert isinstance(info.value, OSError) and info.value.filename == str(target)


def test_the_ground_truth_s_state_is_counted_once_per_change(files, monkeypatch):
    """The Review widget asks for it several times per refresh (each slider step): with
    thousands of images each ask walked them all. Counted again after any change of a
    region or a flag, or a reload of the file, and only then."""
    review = open_review(files)
    counts = []
    count = review._count_state
    monkeypatch.setattr(review, "_count_state", lambda: counts.append(1) or count())
    first = review.ground_truth_state()
    assert review.scored and review.scoring_note() == "" and review.ground_truth_state() == first
    assert len(counts) == 1  # once for the four asks
    annotated, checked, unknown = first
    name = review.names[0]
    index = review._gt_position(name)
    review.gt.set_regions([], index)  # its regions deleted (as in Annotate): neither now
    assert review.ground_truth_state() == (annotated - 1, checked, unknown + 1)
    assert review.scoring_note().startswith(f"{unknown + 1} of {len(review.names)} images")
    review.gt.set_flag("no_anomaly", True, index)  # checked
    assert review.ground_truth_state() == (annotated - 1, checked + 1, unknown)
    assert len(counts) == 3
    review.gt.reload()  # the file as saved: the regions are back
    review.ground_truth_reloaded()
    assert review.ground_truth_state() == first and len(counts) == 4


def test_files_written_for_a_folder_of_images_go_into_it(tmp_path):
    """A model trained from a folder of images went into its parent, beside other
    datasets' models; beside an annotation file it stays beside it."""
    from napari_bioanomaly.core.review import beside

    folder = tmp_path / "plate 1"
    folder.mkdir()
    assert beside(folder, "bioanomaly-forest.pt") == folder / "bioanomaly-forest.pt"
    ann = folder / "annotations.json"
    assert beside(ann, "bioanomaly-forest.pt") == folder / "bioanomaly-forest.pt"


def test_nothing_annotated_is_not_scored_and_unchecked_images_are_said(files):
    """A dataset nobody annotated yet (a new folder, an unsupervised model): its
    predictions are proposals, not false positives of a model that scores 0; once one
    image is annotated the scores are evaluate's, and the images neither annotated nor
    checked are said to count as without anomaly."""
    gt_path, _ = files
    gt, _ = annotations.load(gt_path)
    for im in gt.images:  # nothing annotated, nothing checked
        im.regions, im.no_anomaly, im.reviewed = [], False, False
    annotations.save(gt, gt_path, "via-project")
    review = open_review(files)
    n = len(review.names)
    assert review.ground_truth_state() == (0, 0, n) and not review.scored
    shown = review.n_predictions()
    assert shown >= n  # every image has its weak false alarm at least
    assert review.scoring_note() == (
        f"No anomaly annotated yet: the {shown} predictions on {n} images are proposals to "
        "accept or reject, not scored."
    )
    review.accept(review.names[0], [0])  # one proposal accepted: ground truth to score by
    assert review.ground_truth_state() == (1, 0, n - 1) and review.scored
    assert review.scoring_note().startswith(f"{n - 1} of {n} images neither annotated nor "
                                            "checked: scored as without anomaly")  # fmt: skip
    for name in review.names[1:]:  # the others checked: nothing left unknown
        review.gt.set_flag("no_anomaly", True, review.names.index(name))
    assert review.ground_truth_state() == (1, n - 1, 0) and review.scoring_note() == ""


# ---------------------------------------------------------------- pairing, as evaluate's


@pytest.fixture
def folder_files(files):
    """``files`` as an annotation file beside its image folder and ``predict --images
    ds/images`` leave them: the ground truth names ``images/img_000.tif``, the
    predictions ``img_000.tif``."""
    gt_path, pred_path = files
    gt, _ = annotations.load(gt_path)
    (gt_path.parent / "images").mkdir()
    for im in gt.images:
        (gt_path.parent / im.filename).rename(gt_path.parent / "images" / im.filename)
        im.filename = f"images/{im.filename}"
    annotations.save(gt, gt_path, "via-project")
    return gt_path, pred_path


def _evaluated(files, iou=0.5, score=0.0):
    gt, _ = annotations.load(files[0])
    pred, _ = annotations.load(files[1], gt.root, read_images=False)
    return evaluate(gt, pred, iou, score, group_by="cell_line")


def _table(rows):
    return {r.image: (r.n_gt, r.n_pred, r.tp, r.fp, r.fn, r.inter_px, r.union_px, r.score)
            for r in rows}  # fmt: skip


def _saved(path):
    pred, _ = annotations.load(path, read_images=False)
    return {im.filename: im for im in pred.images}


@pytest.mark.parametrize(("iou", "score"), [(0.5, 0.0), (0.3, 0.5)])
def test_predictions_named_without_the_image_folder_are_reviewed_as_evaluate_pairs_them(
    folder_files, iou, score
):
    """``evaluate`` pairs ``images/img_000.tif`` with the predictions of ``img_000.tif``
    (:func:`paired`); Review took the same name only, and showed no prediction at all (TP 0
    FP 0, every region missed) without a word where evaluate scored them."""
    review = open_review(folder_files)
    review.iou_threshold, review.score_threshold = iou, score
    expected = _evaluated(folder_files, iou, score)
    assert expected.summary["pred"] > 0 and expected.summary["tp"] > 0
    assert _table(review.rows()) == _table(expected.rows)
    report = review.report()
    assert {k: v for k, v in report.summary.items() if k != "study"} == {
        k: v for k, v in expected.summary.items() if k != "study"
    }  # Review leaves the study scoring to the CLI
    assert report.classes == expected.classes and report.image_level == expected.image_level
    assert {k: v["f1"] for k, v in report.groups.items()} == {
        k: v["f1"] for k, v in expected.groups.items()
    }
    assert report.unmatched_predictions == expected.unmatched_predictions == []
    assert review.pairing_notes() == []  # nothing to say: every image has its predictions
    name = review.names[0]
    assert review.predicted_name(name) == name.removeprefix("images/")
    assert review.shown(name) and review.n_predictions() == expected.summary["pred"]


def test_corrections_of_predictions_named_without_the_folder_go_to_their_own_entries(
    folder_files,
):
    """Reject, accept and propose on ``images/img_001.tif`` change the predictions file's
    ``img_001.tif`` (the file keeps its own names: no ``images/...`` entry is added) and the
    ground truth's ``images/img_001.tif``; the anomaly map is ``predict``'s, under the
    predictions' name."""
    import tifffile

    gt_path, pred_path = folder_files
    review = open_review(folder_files)
    name = next(n for n in review.names if len(review.shown(n)) >= 3)
    own = name.removeprefix("images/")
    names = list(_saved(pred_path))
    n = len(review.prediction(name).regions)
    assert review.reject(name, [0]) == 1
    saved = _saved(pred_path)
    assert list(saved) == names and len(saved[own].regions) == n - 1
    row = {r.image: r for r in review.rows()}[name]
    weak = len(review.shown(name)) - 1  # the weak false positive
    assert len(review.accept(name, [weak])) == 1
    truth = {im.filename: im for im in annotations.load(gt_path)[0].images}[name]
    assert truth.regions[-1].source == "model-accepted"
    after = {r.image: r for r in review.rows()}[name]
    assert (after.tp, after.fp) == (row.tp + 1, row.fp - 1)
    assert _table(review.rows()) == _table(_evaluated(folder_files).rows)
    assert len(_saved(pred_path)[own].regions) == n - 1  # accepted: still the model's
    heat = np.zeros(review.ground_truth(name).shape, np.float32)
    heat[40:60, 50:80] = 0.9
    path = heatmap_path(review.heatmaps, own)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, heat)
    assert review.heatmap(name) is not None
    assert len(review.propose(name, 0.5, 16)) == 1
    saved = _saved(pred_path)
    assert list(saved) == names and len(saved[own].regions) == 1
    assert _table(review.rows()) == _table(_evaluated(folder_files).rows)


def test_images_without_predictions_and_predictions_of_other_images_are_said_as_evaluate_says(
    files, capsys
):
    """Predictions of 2 of the 6 images, and of one image not in the ground truth: Review
    scores and says what ``evaluate`` does (it said nothing), and a correction saved does
    not write the 4 images into the predictions as predicted empty (they were, and then
    evaluate no longer warned of them)."""
    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core.model import ImageRecord

    gt_path, pred_path = files
    pred, _ = annotations.load(pred_path, read_images=False)
    stray = ImageRecord("elsewhere.tif", regions=[Region(square(5, 5, 10), "dust", score=0.9)])
    pred.images = [*pred.images[:2], stray]
    annotations.save(pred, pred_path, "via")
    review = open_review(files)
    notes = [
        f"4 of 6 ground-truth images are not in {pred_path}: scored as predicting nothing there",
        f"1 of 3 images of {pred_path} are not in {gt_path}: left out of the scores "
        "(elsewhere.tif)",
    ]
    assert review.pairing_notes() == notes
    assert main(["evaluate", "--gt", str(gt_path), "--pred", str(pred_path)]) == 0
    err = capsys.readouterr().err
    assert all(f"warning: {note}\n" in err for note in notes)
    expected = _evaluated(files)
    assert _table(review.rows()) == _table(expected.rows)
    assert review.report().unmatched_predictions == expected.unmatched_predictions
    unpredicted = review.names[-1]
    assert not review.prediction(unpredicted).regions and not review.shown(unpredicted)
    assert review.reject(review.names[0], [0]) == 1  # the predictions file is saved
    assert list(_saved(pred_path)) == [im.filename for im in pred.images]
    assert review.pairing_notes() == notes
    assert _table(review.rows()) == _table(_evaluated(files).rows)


def test_a_name_without_its_folder_that_is_several_images_pairs_as_in_evaluate(folder_files):
    """``img_000.tif`` predicted twice (``img_000.tif`` and ``old/img_000.tif``): which is
    ``images/img_000.tif``'s is not known, so neither is, as evaluate pairs them, and the
    review says so."""
    gt_path, pred_path = folder_files
    pred, _ = annotations.load(pred_path, read_images=False)
    first = pred.images[0]
    pred.images.append(type(first)(f"old/{first.filename}", regions=list(first.regions)))
    annotations.save(pred, pred_path, "via")
    review = open_review(folder_files)
    expected = _evaluated(folder_files)
    assert _table(review.rows()) == _table(expected.rows)
    assert review.report().unmatched_predictions == expected.unmatched_predictions == [
        "img_000.tif", "old/img_000.tif",
    ]  # fmt: skip
    assert review.predicted_name("images/img_000.tif") is None
    assert review.pairing_notes() == [
        f"1 of 6 ground-truth images are not in {pred_path}: scored as predicting nothing there",
        f"2 images of {pred_path} paired with none of {gt_path}: several images have the name "
        "without its folder (images/img_000.tif ~ img_000.tif, old/img_000.tif); left out "
        "of the scores",
    ]
