"""The "no annotations yet" story in napari: a folder of images -> anomaly map -> proposals
-> accepted annotations, with the Annotate, Train and Review widgets."""

from __future__ import annotations

import json

from napari_bioanomaly.ml.config import NO_LINES_CHOICE
from napari_bioanomaly.widgets.annotate import AnnotateWidget
from napari_bioanomaly.widgets.review import ReviewWidget
from napari_bioanomaly.widgets.train import TrainWidget
from tests.support.jobs import wait_for_job


def test_unannotated_folder_to_heatmap_proposals_and_annotations(
    make_napari_viewer, dataset_dir, qtbot
):
    (dataset_dir / "annotations.json").unlink()  # only images: nothing annotated yet
    viewer = make_napari_viewer()
    annotate = AnnotateWidget(viewer)
    qtbot.addWidget(annotate)
    assert annotate.open_path(dataset_dir)
    # nothing written yet (it said "saved" even in a folder it could not write)
    assert annotate.save_label.text().startswith(
        "new: annotations.json is written at the first edit"
    )
    train = TrainWidget(viewer)
    qtbot.addWidget(train)
    assert train.source.currentText() == str(dataset_dir / "annotations.json")  # not saved yet
    train.model.setCurrentText("memory")
    assert train.start(), train.status.text()
    wait_for_job(qtbot, train, 120_000)
    model = dataset_dir / "bioanomaly-memory.pt"
    assert model.is_file(), train.status.text()
    # nothing annotated chose the line cue: the end of the run says how it joined, and
    # what spots and pits want; no last state to resume (fitted in one pass)
    assert train.status.text().endswith(f"; {NO_LINES_CHOICE}.")

    review = ReviewWidget(viewer)
    qtbot.addWidget(review)
    # what Annotate opened and Train trained, ready to predict with
    assert review.gt_edit.text() == train.source.currentText()
    assert review.model_edit.text() == str(model)
    assert review.predict_and_review(), review.summary.text()
    wait_for_job(qtbot, review, 120_000)
    assert len(review.model.rows) == 6
    assert (dataset_dir / "annotations.predictions.heatmaps").is_dir()
    # go to the image the model finds most anomalous: its map is shown, proposals outlined
    top = max(review.rows(), key=lambda r: r.score)
    review.annotator.show(review.names.index(top.image))
    assert review.heat_layer is not None and review.heat_layer.visible
    review.score_slider.setValue(0)
    proposed = review.propose()
    assert proposed >= 1
    assert review.accept_all() == proposed
    saved = json.loads((dataset_dir / "annotations.json").read_text())
    entry = next(v for v in saved["_via_img_metadata"].values() if v["filename"] == top.image)
    assert len(entry["regions"]) == proposed
    assert {r["region_attributes"]["source"] for r in entry["regions"]} == {"model-accepted"}
