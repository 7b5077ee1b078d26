"""The Train widget in a real viewer: training runs in a worker thread, can be stopped."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from napari_bioanomaly.ml.train import load_checkpoint
from napari_bioanomaly.widgets.annotate import AnnotateWidget
from napari_bioanomaly.widgets.train import TrainWidget
from tests.support.jobs import wait_for_job
from tests.support.wrap import numbers_cut


@pytest.fixture
def widgets(make_napari_viewer, dataset_dir, qtbot):
    folder = dataset_dir
    viewer = make_napari_viewer()
    annotate = AnnotateWidget(viewer)
    qtbot.addWidget(annotate)
    assert annotate.open_path(folder)
    train = TrainWidget(viewer)
    qtbot.addWidget(train)
    train.tile.setValue(64)
    train.batch.setValue(2)
    train.epochs.setValue(2)
    train.steps.setValue(3)
    return annotate, train, folder


def test_source_comes_from_the_open_dataset(widgets):
    _, train, folder = widgets
    assert train.source.currentText() == str(folder / "annotations.json")


def test_train_in_a_worker_and_see_the_plot(widgets, qtbot):
    _, train, folder = widgets
    assert train.start()
    assert not train.train_button.isEnabled() and train.stop_button.isEnabled()
    wait_for_job(qtbot, train, 180_000)
    assert train.result is not None and not train.result.cancelled
    assert len(train.plot.loss) == 6 and len(train.plot.val_loss) == 2
    # the plotted score is the one the best model was chosen by, and named as it is
    history = train.result.history
    assert [v for _, v in train.plot.val_f1] == [h["val_score"] for h in history]
    assert train.plot.score_label == f"{train.result.best_label} (right)"
    assert max(h["val_score"] for h in history) == train.result.best_f1
    assert "Finished" in train.status.text()
    # the best score named by what it is, and the operating point prediction will use
    assert "best validation F1 (mean of instance and pixel F1) 0." in train.status.text()
    assert "predicts at threshold" in train.status.text()
    assert load_checkpoint(folder / "bioanomaly-unet.pt")["operating_point"]["source"] == (
        "validation"
    )
    assert load_checkpoint(folder / "bioanomaly-unet.pt")["config"]["tile"] == 64  # the best
    assert len(load_checkpoint(folder / "bioanomaly-unet.last.pt")["history"]) == 2
    assert train.train_button.isEnabled()


def test_train_with_loader_processes_started_from_napari(widgets, qtbot, monkeypatch):
    """A GPU run draws its tiles in loader processes started from napari's process; forced
    here on the CPU (where the default is none). They end with the run."""
    import multiprocessing

    from napari_bioanomaly.ml import train_network

    asked = []
    monkeypatch.setattr(train_network, "loader_workers",
                        lambda requested, device, processes=1: asked.append(device) or 2)  # fmt: skip
    _, train, folder = widgets
    assert train.start()
    wait_for_job(qtbot, train, 180_000)
    assert asked and train.result is not None and not train.result.cancelled
    assert len(train.plot.loss) == 6  # every step's batch arrived
    assert len(load_checkpoint(folder / "bioanomaly-unet.last.pt")["history"]) == 2
    assert not multiprocessing.active_children()


def test_automatic_length_is_the_default_with_a_budget(widgets):
    _, train, _ = widgets
    train.epochs.setValue(0)
    assert train.epochs.text() == "auto" and train.budget.isEnabled()
    config = train.config()
    assert config.epochs is None and config.budget_min is None  # 15 min CPU, 60 min GPU
    train.budget.setValue(5)
    assert train.config().budget_min == 5.0
    train.epochs.setValue(3)
    assert not train.budget.isEnabled() and train.config().epochs == 3


def test_stop_leaves_a_resumable_checkpoint(widgets, qtbot):
    _, train, folder = widgets
    train.epochs.setValue(50)
    assert train.start()
    qtbot.waitUntil(lambda: len(train.plot.val_loss) >= 1, timeout=60_000)  # an epoch
    worker = train.worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        train.stop()
        assert train.status.text() == ("Stopping after this step, then choosing the best "
                                       "model's operating point...")  # fmt: skip
    assert train.result.cancelled
    assert len(train.plot.loss) < 10  # stopped within a step or so of the request
    assert load_checkpoint(folder / "bioanomaly-unet.last.pt")["format"]
    # the best weights so far predict as a finished run's: at their point, said
    assert train.status.text().startswith("Stopped on cpu. Model: ")
    assert "predicts at threshold" in train.status.text()
    best = load_checkpoint(folder / "bioanomaly-unet.pt")
    assert best["operating_point"]["source"] == "validation"


def _stop_after_an_epoch(train, qtbot, before=0):
    """Stop the run once it has validated an epoch more than the ``before`` it resumed."""
    qtbot.waitUntil(lambda: len(train.plot.val_loss) > before, timeout=60_000)
    with qtbot.waitSignal(train.worker.finished, timeout=60_000):
        train.stop()
    assert train.result.cancelled


def test_resume_goes_on_from_the_last_state_with_the_run_s_settings(
    widgets, make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Only the CLI could go on with a stopped run (train --resume): a biologist who
    stopped training, or closed napari, started again from nothing."""
    import shutil
    import threading

    from napari_bioanomaly.ml import checkpoint
    from napari_bioanomaly.ml.checkpoint import save_checkpoint

    _, train, folder = widgets
    last = folder / "bioanomaly-unet.last.pt"
    train.epochs.setValue(50)
    assert not train.resume()  # nothing to go on from yet
    assert train.status.text().startswith("Nothing to resume: no last state of a network's run")
    assert train.start()
    _stop_after_an_epoch(train, qtbot)
    stopped = load_checkpoint(last)
    done = stopped["epoch"] + 1
    # a baseline trained since, or a forest's last state beside it: not what Resume takes
    (folder / "bioanomaly-forest.last.pt").write_bytes(b"a forest's last state, newer")
    read_here = []  # its weights, read on napari's thread (hundreds of MB for a Mask R-CNN)
    real_load = checkpoint.load_checkpoint

    def load(path, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            read_here.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_checkpoint", load)
    train.plot.score_label = "validation score (right)"  # as a new window's plot
    qtbot.mouseClick(train.resume_button, Qt.MouseButton.LeftButton)
    assert train.worker is not None  # the form holds the run's settings: it goes on at once
    assert not read_here
    # its score named as the run names it, from the first (said "validation score")
    assert train.plot.score_label == f"{stopped['best_label']} (right)"
    assert train.status.text().startswith(f"Resuming bioanomaly-unet.pt from epoch {done + 1} "
                                          "of 50")  # fmt: skip
    # the plot goes on from the epochs before (the checkpoint's history), not from nothing
    assert [x for x, _ in train.plot.val_loss[:done]] == list(range(1, done + 1))
    _stop_after_an_epoch(train, qtbot, before=done)
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] + 1 > done and len(ckpt["history"]) == ckpt["epoch"] + 1
    assert ckpt["config"] == stopped["config"]  # every setting the stopped run's
    done = ckpt["epoch"] + 1
    # another dataset opened: its Resume is not this run's
    other = tmp_path / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("bioanomaly-*"))
    train.use_source(other / "annotations.json")
    assert not train.resume()
    assert train.status.text().startswith("Nothing to resume")
    # a run of another learning rate than the form can hold (the CLI's --lr 1e-6)
    ckpt["config"]["lr"] = 1e-6
    save_checkpoint(last, ckpt, backup=False)
    # napari opened again: the form holds its defaults; the run's settings are put in it
    fresh = TrainWidget(make_napari_viewer())
    qtbot.addWidget(fresh)
    fresh.use_source(folder / "annotations.json")
    assert not fresh.resume() and fresh.worker is None
    text = fresh.status.text()
    assert text.startswith("The form now holds the settings of the run in "
                           "bioanomaly-unet.last.pt") and "tile size (px) 256 (the run: 64)" in text  # fmt: skip
    assert "epochs auto (the run: 50)" in text
    assert "The form cannot show learning rate 1e-06: the run goes on with that." in text
    assert (fresh.tile.value(), fresh.epochs.value()) == (64, 50)
    assert fresh.batch.value() == 0  # auto: the run goes on with the batch it chose (2)
    # epochs typed before Resume are the user's: kept, and said done when they are
    again = TrainWidget(make_napari_viewer())
    qtbot.addWidget(again)
    again.use_source(folder / "annotations.json")
    again.epochs.setValue(done)
    assert not again.resume()
    assert again.epochs.value() == done and "epochs" not in again.status.text().split("(")[1]
    assert not again.resume()
    assert again.status.text() == (
        f"Cannot resume bioanomaly-unet.last.pt: its {done} epochs are done; set epochs to "
        f"{done + 1} or more to train it longer, then press Resume."
    )
    again.epochs.setValue(done + 1)
    assert again.resume()
    wait_for_job(qtbot, again, 120_000)
    assert again.status.text().startswith("Finished on cpu. Model: ")
    resumed = load_checkpoint(last)
    assert resumed["epoch"] + 1 == done + 1
    assert resumed["config"] == {**ckpt["config"], "epochs": done + 1}  # lr 1e-6 too
    again.out.setText(str(folder / "elsewhere.pt"))
    assert not again.resume()
    assert again.status.text().startswith("Nothing to resume: no last state of a network's "
                                          f"run (MODEL.last.pt) for {folder / 'elsewhere.pt'}")  # fmt: skip


def test_a_last_state_names_its_model_file():
    from pathlib import Path

    from napari_bioanomaly.widgets.train import is_last_state, model_of

    for last, model in (("a/m.last.pt", "a/m.pt"), ("a/m.v2.last.pt", "a/m.v2.pt"),
                        ("a/mymodel.last", "a/mymodel")):  # fmt: skip
        assert is_last_state(Path(last)) and model_of(Path(last)) == Path(model)
    assert not is_last_state(Path("a/m.pt"))


def test_a_run_stopped_before_it_kept_a_model_says_so(widgets, qtbot):
    """Stopped in its first epoch, the status said "Model: None"."""
    _, train, _ = widgets
    train.epochs.setValue(50)
    train.steps.setValue(200)
    assert train.start()
    qtbot.waitUntil(lambda: len(train.plot.loss) >= 1, timeout=60_000)
    with qtbot.waitSignal(train.worker.finished, timeout=60_000):
        train.stop()
    assert train.result.best is None
    assert train.status.text().startswith("Stopped on cpu: stopped before the first "
                                          "validation: no model kept")  # fmt: skip
    assert "None" not in train.status.text()


def test_bad_settings_are_explained(widgets, qtbot):
    _, train, _ = widgets
    train.source.setCurrentText("/nonexistent/annotations.json")
    assert not train.start()
    assert "file not found" in train.status.text()
    train.status.setText("")
    # the buttons say it as the method does (their slots drop its result)
    for button in (train.train_button, train.cv_button):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        assert "file not found" in train.status.text(), button.text()
        train.status.setText("")


def test_baseline_is_one_click_and_unsupervised_models_train(widgets, qtbot):
    _, train, folder = widgets
    assert train.start_baseline()
    assert train.model.currentText() == "forest" and not train.epochs.isEnabled()
    wait_for_job(qtbot, train, 120_000)
    assert "Finished" in train.status.text() and "F1" in train.status.text()
    assert "forest" in load_checkpoint(folder / "bioanomaly-forest.pt")
    # pressed again: the earlier model (and its last state) are kept, a new name taken
    first = (folder / "bioanomaly-forest.pt").read_bytes()
    assert train.start_baseline()
    assert "bioanomaly-forest.pt is an earlier run's, kept" in train.status.text()
    wait_for_job(qtbot, train, 120_000)
    assert (folder / "bioanomaly-forest.pt").read_bytes() == first
    assert "forest" in load_checkpoint(folder / "bioanomaly-forest-2.pt")
    train.model.setCurrentText("memory")
    assert not train.class_weights.isEnabled()
    # outliers left out of the bank (for folders whose images mostly hold anomalies)
    assert train.fields["bank_outliers"].isEnabled()
    train.fields["bank_outliers"].setValue(0.05)
    assert train.start()
    wait_for_job(qtbot, train, 120_000)
    assert "ROC-AUC" in train.status.text(), train.status.text()
    saved = load_checkpoint(folder / "bioanomaly-memory.pt")
    assert "scoring" in saved and saved["config"]["bank_outliers"] == 0.05


def test_status_lines_of_steps_without_a_loss_count_steps_not_images():
    from napari_bioanomaly.ml.events import TrainEvent
    from napari_bioanomaly.widgets._jobs import step_text

    # the forest's steps are images read and eight trees grown at a time
    event = TrainEvent("step", 0, 1, 29, 36, message="8 trees")
    assert step_text(event) == "Step 29/36: 8 trees"


def test_imbalance_qc_and_normalisation_settings_reach_the_config(widgets):
    _, train, _ = widgets
    train.class_balance.setChecked(True)
    train.class_weights.setCurrentText("balanced")
    train.exclude_qc.setChecked(True)
    train.low.setValue(1.0)
    train.high.setValue(99.0)
    config = train.config()
    assert (config.class_balance, config.class_weights, config.exclude_qc) == (
        True,
        "balanced",
        True,
    )
    assert (config.low, config.high) == (1.0, 99.0)


def test_cross_validate_from_napari(widgets, qtbot):
    _, train, folder = widgets
    train.model.setCurrentText("forest")
    train.cv_folds.setValue(3)
    train.cv_group.setText("cell_line")
    assert train.start_crossval()
    assert not train.cv_button.isEnabled()
    wait_for_job(qtbot, train, 180_000)
    result = train.result
    assert len(result.folds) == 3 and result.group_by == "cell_line"
    assert all(len(f["groups"]) == 1 for f in result.folds)  # one cell line per fold
    text = train.cv_result.text()
    assert text.count("fold ") >= 3 and "\nF1: " in text and "+-" in text
    assert "\nimage ROC-AUC: " in text and "\nprecision: " in text and "f1:" not in text
    # a fold that trained without a class is said where the folds are, as it is in the CLI
    missing = [f for f in result.folds if f["trained_without"]]
    for f in missing:
        assert f"fold {f['fold'] + 1} trains without {', '.join(f['trained_without'])}" in text
    assert ("warning" in train.status.text()) == bool(missing)
    assert (folder / "crossval-forest" / "crossval.json").is_file()
    assert "finished" in train.status.text() and train.cv_button.isEnabled()


def test_the_form_is_built_from_the_settings(make_napari_viewer, qtbot):
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.settings import SETTINGS

    train = TrainWidget(make_napari_viewer())
    qtbot.addWidget(train)
    assert set(train.fields) == {s.name for s in SETTINGS if s.form}
    assert train.config() == TrainConfig()  # an untouched form trains with the defaults
    train.model.setCurrentText("forest")
    greyed = {name for name, field in train.fields.items() if not field.isEnabled()}
    assert greyed == {s.name for s in SETTINGS if s.form and not s.applies_to("forest")}
    assert "tile" in greyed and "class_weights" not in greyed and "features" not in greyed
    assert train.config().features == "context"
    train.fields["features"].setCurrentText("filters")
    assert train.config().features == "filters"
    assert train.config().autocontext
    train.fields["autocontext"].setChecked(False)
    assert not train.config().autocontext
    train.tile.setValue(64)  # greyed settings do not reach the forest's config
    assert train.config().tile == TrainConfig().tile and train.config().model == "forest"
    # the memory bank learns weights only with learned descriptors: the learning rows
    # follow the descriptors chosen, and stay out of its config while greyed
    learning = {"epochs", "steps", "tile", "batch", "lr"}
    train.model.setCurrentText("memory")
    assert train.descriptors.currentText() == "auto" and train.sharpen.isEnabled()
    assert all(not train.fields[n].isEnabled() for n in learning | {"budget"})
    assert train.config().tile == TrainConfig().tile
    train.descriptors.setCurrentText("learned")
    assert all(train.fields[n].isEnabled() for n in learning | {"budget"})
    assert train.config().tile == 64 and train.config().descriptors == "learned"
    train.descriptors.setCurrentText("filters")
    assert not train.tile.isEnabled() and train.config().tile == TrainConfig().tile
    train.model.setCurrentText("unet")  # a network uses them whatever the descriptors
    assert train.tile.isEnabled() and not train.sharpen.isEnabled()
    assert not train.fields["features"].isEnabled()  # the forest's alone
    assert not train.fields["autocontext"].isEnabled()
    assert train.descriptors.currentText() == "auto"


def test_the_status_says_when_the_model_will_predict_with_flips_and_rotations(widgets, tmp_path):
    """Where the point for TTA beat the plain one on validation by 0.01 (20 regions or
    more), the status line says Predict & review uses TTA by default, with both scores."""
    from napari_bioanomaly.core.operating import OperatingPoint
    from napari_bioanomaly.ml.events import TrainResult

    _, train, _ = widgets
    plain = OperatingPoint(0.4, 64.0, 0.60, 0.80, "validation", regions=162)
    tta = OperatingPoint(0.5, 256.0, 0.70, 0.80, "validation", min_peak=0.9, regions=162)
    model = tmp_path / "m.pt"
    train._on_returned(TrainResult(model, model, best_f1=0.7, operating_point=plain,
                                   tta_point=tta))  # fmt: skip
    text = train.status.text()
    assert "with flips and rotations at threshold 0.5, min peak 0.9" in text
    assert (
        "(Predict & review uses them by default: validation score 0.750 with flips and "
        "rotations against 0.700 without, on 162 regions)" in text
    )
    train._on_returned(TrainResult(model, model, best_f1=0.7, operating_point=plain,
                                   tta_point=plain))  # fmt: skip
    assert "uses them by default" not in train.status.text()


def test_the_train_widget_scrolls_rather_than_growing_the_window(widgets):
    """Docked under Annotate, the Train widget's form made the window taller than a 1100 px
    screen and squeezed Annotate to one line: its content scrolls now, as Annotate's does."""
    from qtpy.QtWidgets import QScrollArea

    annotate, train, _ = widgets
    for widget in (annotate, train):
        assert widget.findChild(QScrollArea) is not None
        assert widget.minimumSizeHint().height() < 300


def test_a_fresh_form_greys_out_what_its_model_does_not_use(make_napari_viewer, qtbot):
    """Opened with the U-Net chosen, the memory bank's and the forest's rows were enabled
    until another field changed."""
    from napari_bioanomaly.ml.settings import SETTINGS

    train = TrainWidget(make_napari_viewer())
    qtbot.addWidget(train)
    assert train.model.currentText() == "unet"
    values = train.form_values()
    greyed = {name for name, field in train.fields.items() if not field.isEnabled()}
    assert greyed == {s.name for s in SETTINGS if s.form and not s.applies_to("unet", values)}
    mine = {"descriptors", "sharpen", "lines", "bank_outliers", "features", "autocontext"}
    assert mine <= greyed and "tile" not in greyed


def test_the_first_status_knows_the_open_dataset(widgets, make_napari_viewer, qtbot):
    """With an annotated dataset open, the first status asked to annotate some anomalies;
    it says what is there to train on."""
    _, train, folder = widgets
    regions = sum(len(im.regions) for im in train.workspace.sessions[0].dataset.images)
    assert regions > 0
    text = train.status.text()
    assert "Annotate some" not in text
    assert str(folder) in text and f"{regions} regions" in text and "Press Train" in text
    # nothing open: it says where a dataset comes from
    alone = TrainWidget(make_napari_viewer())
    qtbot.addWidget(alone)
    assert "open a dataset in the Annotate widget" in alone.status.text()


def test_train_follows_the_dataset_opened_last(widgets, sample_dir, tmp_path):
    """Annotate opened A, then B: Train still said A, trained on A and wrote into A's
    folder. It follows the dataset opened; a file chosen in Train after that stays until
    the next dataset is opened."""
    import shutil

    annotate, train, a = widgets
    b = tmp_path / "other"
    shutil.copytree(sample_dir, b)
    assert annotate.open_path(b)
    assert train.source.currentText() == str(b / "annotations.json")
    assert str(b / "annotations.json") in train.status.text()  # what a run would train on
    assert str(b) in train.source.toolTip()
    prepared = train._prepare()
    assert prepared is not None and prepared[2] == str(b / "annotations.json")
    train.source.setCurrentText(str(a / "annotations.json"))  # chosen here: it stays
    train.viewer.add_points([[1, 1]])  # a layer inserted reads the layers again
    assert train.source.currentText() == str(a / "annotations.json")
    assert annotate.open_path(b)  # the same dataset again: nothing new opened
    assert train.source.currentText() == str(a / "annotations.json")
    assert annotate.open_path(a) and annotate.open_path(b)
    assert train.source.currentText() == str(b / "annotations.json")


def test_a_train_widget_opened_later_takes_the_dataset_on_screen(widgets, sample_dir, tmp_path,
                                                                 qtbot):  # fmt: skip
    import shutil

    annotate, _, _ = widgets
    b = tmp_path / "other"
    shutil.copytree(sample_dir, b)
    assert annotate.open_path(b)
    later = TrainWidget(annotate.viewer)
    qtbot.addWidget(later)
    assert later.source.currentText() == str(b / "annotations.json")


def test_a_model_folder_that_cannot_be_written_is_refused_before_training(widgets, monkeypatch,
                                                                         tmp_path):  # fmt: skip
    """A read-only dataset folder trained for 20 s, then failed with an unexpected
    PermissionError naming a hidden temporary file."""
    from napari_bioanomaly.widgets import train as train_module

    _, train, folder = widgets
    train.model.setCurrentText("forest")
    (tmp_path / "notes.txt").write_text("x")
    train.out.setText(str(tmp_path / "notes.txt" / "m.pt"))  # a file where a folder must be
    assert not train.start()
    text = train.status.text()
    assert text.startswith(f"Cannot train: cannot write the model into {tmp_path / 'notes.txt'}")
    assert "is a file" in text and not train.workspace.busy
    train.out.setText("")  # beside the annotations, in a folder refused as read-only ones are
    monkeypatch.setattr(train_module, "unwritable_reason", lambda f: "Permission denied")
    assert not train.start()
    assert train.status.text() == (f"Cannot train: cannot write the model into {folder} "
                                   '(Permission denied): choose another file in "save model '
                                   'to".')  # fmt: skip
    assert not train.start_crossval()
    assert f"cannot write the fold models into {folder / 'crossval-forest'}" in (
        train.status.text()
    )
    assert train.train_button.isEnabled() and not train.workspace.busy


def test_a_model_that_cannot_be_saved_fails_plainly_naming_it(widgets, monkeypatch, qtbot):
    """Written as the run ends (the folder checked before, then made read-only): the
    failure names the model file, and it is no bug (no traceback, nothing raised again)."""
    from napari_bioanomaly.ml import checkpoint

    def refused(path, raw, backup=True):
        raise PermissionError(13, "Permission denied", str(path.parent / f".{path.name}.x.tmp"))

    monkeypatch.setattr(checkpoint, "atomic_write", refused)
    _, train, folder = widgets
    assert train.start_baseline()
    wait_for_job(qtbot, train, 120_000)
    assert train.status.text() == (
        f"Training failed: cannot write the model {folder / 'bioanomaly-forest.pt'}: "
        "Permission denied"
    )
    assert train.train_button.isEnabled() and train.workspace.job == "failed"


def test_the_progress_is_in_view_while_training_without_scrolling(widgets, qtbot):
    """The plot sat under some 25 rows of settings: while a run went on, only its top edge
    showed. The buttons, status and plot have a part of the dock of their own."""
    from napari.qt import get_stylesheet

    _, train, _ = widgets
    # docked, napari's style sheet pads every widget 1 px: a scroll area's viewport is
    # 2 px shorter than the area, which was sized to its content alone (a scroll bar with
    # 2 px to scroll after every run); a widget shown the first time scrolled its lower
    # area in 69 px
    train.setStyleSheet(get_stylesheet("dark"))
    train.resize(470, 905)  # the walkthrough's dock
    train.show()
    qtbot.waitExposed(train)
    bar = train.progress_area.verticalScrollBar()

    def fits() -> None:  # as the layouts settle
        assert not bar.isVisible() and bar.maximum() == 0, train.splitter.sizes()

    qtbot.waitUntil(fits, timeout=2000)
    train.model.setCurrentText("forest")
    assert train.start()
    for widget in (train.stop_button, train.status, train.plot):
        seen = widget.visibleRegion().boundingRect()
        assert seen.height() == widget.height() and seen.width() == widget.width(), widget
    wait_for_job(qtbot, train, 120_000)
    assert "Finished" in train.status.text()
    qtbot.waitUntil(fits, timeout=2000)
    for widget in (train.stop_button, train.status, train.plot):  # everything fits: shown
        assert widget.visibleRegion().boundingRect().size() == widget.size(), widget


def test_the_plot_legend_lies_below_the_curves(qtbot):
    """The legend was drawn inside the axes, over the loss curve."""
    from napari_bioanomaly.ml.events import VAL_F1, TrainEvent
    from napari_bioanomaly.widgets._loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    for step in range(1, 4):
        plot.add(TrainEvent("step", 0, 2, step, 3, loss=1.0 / step))
    plot.add(TrainEvent("epoch", 0, 2, 3, 3, val_loss=0.5, val_score=0.4, score_label=VAL_F1))
    for width in (220, 460):
        plot.resize(width, 220)
        axes, legend = plot.layout_rects()
        texts = [text for _, text, _ in legend]
        assert texts[:2] == ["loss", "val loss"]
        if width == 460:  # short enough to read whole
            assert texts[2] == "val F1 (instance+pixel)/2 (right axis)"
        for _, _, box in legend:
            assert box.top() >= axes.bottom() and plot.rect().contains(box.toRect())
    assert "validation F1 (mean of instance and pixel F1)" in plot.toolTip()


def test_the_status_wraps_between_words_not_inside_numbers(widgets):
    """ "... pixel F1) 0." ended a line and "072" began the next."""
    _, train, _ = widgets
    text = ("Finished on cpu. Model: /tmp/t1/bioanomaly-unet.pt (best validation F1 (mean of "
            "instance and pixel F1) 0.072); predicts at threshold 0.9, min area 32 px")  # fmt: skip
    train._set_status(text)
    assert train.status.text() == text  # as set, to read and copy
    assert numbers_cut(train.status) == []


def test_a_new_run_s_plot_does_not_name_the_score_of_the_run_before(widgets, qtbot):
    """After a run scored by pixel F1 (thin structures), Train showed "val pixel F1" in
    the legend of the next run until its first epoch."""
    _, train, _ = widgets
    train.plot.score_label = "validation pixel F1 (right)"  # the run before's
    train.plot._set_tooltip()
    assert "pixel F1" in train.plot.toolTip()
    assert train.start()
    assert train.plot.score_label == "validation score (right)"
    assert "pixel F1" not in train.plot.toolTip()
    train.stop()
    wait_for_job(qtbot, train, 120_000)
