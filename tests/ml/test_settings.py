"""Training settings declared once: every TrainConfig field has one, and the CLI and the
Train widget's form turn the same values into the same config."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.settings import (
    SETTINGS,
    add_cli_options,
    config_from_cli,
    config_from_form,
    unused_options,
)

#: A value other than the default for each setting, as a CLI argument list and the config
#: value it means.
CHANGED = {
    "epochs": (["--epochs", "7"], 7), "budget": (["--budget", "3"], 3.0),
    "patience": (["--patience", "4"], 4), "steps": (["--steps", "9"], 9),
    "tile": (["--tile", "128"], 128), "batch": (["--batch", "2"], 2),
    "lr": (["--lr", "0.01"], 0.01), "augment": (["--no-augment"], False),
    "device": (["--device", "cpu"], "cpu"), "val_fraction": (["--val-fraction", "0.3"], 0.3),
    "val_attribute": (["--val-attribute", "cell_line"], "cell_line"),
    "val_values": (["--val-values", "HeLa, A549"], ("HeLa", "A549")),
    "low": (["--low", "1"], 1.0), "high": (["--high", "99"], 99.0),
    "class_balance": (["--class-balance"], True),
    "class_weights": (["--class-weights", "balanced"], "balanced"),
    "exclude_qc": (["--exclude-qc"], True), "ema": (["--ema", "0.9"], 0.9),
    "pretrain": (["--pretrain", "5"], 5.0),
    "descriptors": (["--descriptors", "filters"], "filters"),
    "sharpen": (["--sharpen", "no"], "no"),
    "lines": (["--lines", "yes"], "yes"),
    "bank_outliers": (["--bank-outliers", "0.1"], 0.1),
    "features": (["--features", "filters"], "filters"),
    "autocontext": (["--no-autocontext"], False),
    "tta_point": (["--tta-point", "yes"], "yes"),
    "amp": (["--no-amp"], False), "seed": (["--seed", "3"], 3),
    "weights": (["--weights", "w.pt"], "w.pt"), "workers": (["--workers", "2"], 2),
    "anomaly_fraction": (["--anomaly-fraction", "0.25"], 0.25),
    "base_channels": (["--base-channels", "8"], 8),
}  # fmt: skip


def parser():
    p = argparse.ArgumentParser()
    add_cli_options(p)
    return p


def test_every_config_field_is_a_setting_once():
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    assert set(keys) | {"model"} == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(CHANGED) == {s.name for s in SETTINGS}


def test_no_option_gives_the_defaults():
    assert config_from_cli(parser().parse_args([])) == TrainConfig()
    assert (
        config_from_form("unet", {s.name: s.to_form(s.default) for s in SETTINGS}) == TrainConfig()
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_cli_and_form_agree_on_each_setting(setting):
    argv, value = CHANGED[setting.name]
    from_cli = config_from_cli(parser().parse_args(argv))
    assert getattr(from_cli, setting.key) == value
    form_value = setting.to_form(value)
    if setting.kind == "list":
        form_value = "HeLa, A549"
    assert config_from_form("unet", {setting.name: form_value}) == from_cli
    # nothing else changed
    assert dataclasses.replace(from_cli, **{setting.key: setting.default}) == TrainConfig()


def test_settings_say_which_models_they_apply_to():
    by_name = {s.name: s for s in SETTINGS}
    assert by_name["tile"].applies_to("unet") and not by_name["tile"].applies_to("forest")
    assert by_name["tta_point"].applies_to("maskrcnn") and not by_name["tta_point"].applies_to(
        "memory"
    )
    assert not by_name["class_balance"].applies_to("memory")
    assert by_name["class_weights"].applies_to("forest")
    assert not by_name["class_weights"].applies_to("maskrcnn")
    # the memory bank trains its descriptor network: length and tiles apply, not patience
    assert by_name["tile"].applies_to("memory") and by_name["budget"].applies_to("memory")
    assert not by_name["patience"].applies_to("memory")
    assert by_name["descriptors"].applies_to("memory")
    assert not by_name["descriptors"].applies_to("unet")
    help_text = " ".join(parser().format_help().split())
    assert (
        "tiles per batch; auto: 4, and 32 per GPU for the U-Net (auto); for unet, maskrcnn, memory"
        in help_text
    )


def test_options_the_model_does_not_use_are_named():
    """train warns of them: --weights and --epochs mean nothing to the forest."""
    args = parser().parse_args(["--model", "forest", "--weights", "w.pt", "--epochs", "5",
                                "--class-weights", "balanced"])  # fmt: skip
    assert unused_options(args) == ["--epochs", "--weights"]
    assert unused_options(parser().parse_args(["--model", "unet", "--weights", "w.pt"])) == []
    # the memory bank learns (and so uses --epochs) only with learned descriptors
    assert unused_options(parser().parse_args(["--model", "memory", "--epochs", "5"])) == [
        "--epochs"
    ]
    learned = ["--model", "memory", "--epochs", "5", "--descriptors", "learned"]
    assert unused_options(parser().parse_args(learned)) == []


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_options_given_are_told_from_defaults_even_at_their_default(setting):
    from napari_bioanomaly.ml.settings import given_settings

    assert given_settings(parser().parse_args([])) == set()
    argv, _ = CHANGED[setting.name]
    assert given_settings(parser().parse_args(argv)) == {setting.name}
    args = parser().parse_args(["--tile", "256", "--model", "unet"])  # both the defaults
    assert given_settings(args) == {"tile", "model"}


def test_a_resumed_run_keeps_the_stopped_runs_settings_but_how_long_it_goes_on():
    from napari_bioanomaly.core.model import BioAnomalyError
    from napari_bioanomaly.ml.settings import resume_config

    saved = TrainConfig(epochs=3, steps_per_epoch=6, tile=64, batch=2, base_channels=8,
                        augment=False, weights="pre.pt")  # fmt: skip
    # options not given are the stopped run's, not the defaults; those given as it had them
    # pass, and how long it goes on changes
    args = parser().parse_args(["--epochs", "6", "--tile", "64", "--no-augment",
                                "--weights", "other.pt", "--features", "filters"])  # fmt: skip
    config, said = resume_config(args, saved, "m.last.pt")
    assert config == saved.replace(epochs=6)
    assert said == ("resuming m.last.pt with the settings of the stopped run (--model unet "
                    "--steps 6 --tile 64 --batch 2 --no-augment --base-channels 8); changed: "
                    "--epochs 6 (the stopped run: 3); not used: --weights other.pt (a resumed "
                    "run goes on from its own weights)")  # fmt: skip
    args = parser().parse_args(["--tile", "48", "--batch", "4", "--model", "maskrcnn"])
    with pytest.raises(BioAnomalyError, match=r"^m\.last\.pt: resuming goes on with the settings "
                       r"of the stopped run.*; --model maskrcnn \(the stopped run: unet\); "
                       r"--tile 48 \(the stopped run: 64\); --batch 4 \(the stopped run: 2\): "
                       r"leave them out, or train a new model without --resume$"):  # fmt: skip
        resume_config(args, saved, "m.last.pt")


def test_a_resumed_run_takes_the_command_that_started_it():
    from napari_bioanomaly.ml.settings import resume_config

    # the stopped run fitted --tile 256 to its small images: 64 kept. A larger tile given is
    # left for training, which knows the images, to judge (config.resumed); leaving out
    # flagged images may be switched on (it only takes images away), and is said
    saved = TrainConfig(epochs=3, steps_per_epoch=6, tile=64, batch=2, base_channels=8)
    args = parser().parse_args(["--tile", "256", "--batch", "2", "--exclude-qc"])
    config, said = resume_config(args, saved, "m.last.pt")
    assert config == saved.replace(tile=256, exclude_qc=True)
    assert said == ("resuming m.last.pt with the settings of the stopped run (--model unet "
                    "--epochs 3 --steps 6 --tile 64 --batch 2 --base-channels 8); changed: "
                    "--exclude-qc (the stopped run: without it; images with quality flags are "
                    "left out of training and validation from now on)")  # fmt: skip


def test_resumed_judges_the_tile_asked_as_the_stopped_run_fitted_it():
    from napari_bioanomaly.core.model import BioAnomalyError
    from napari_bioanomaly.ml.config import resumed

    saved = TrainConfig(epochs=3, tile=64, batch=2, base_channels=8)
    asked = saved.replace(tile=256, epochs=5)
    assert resumed(saved, asked, "m.last.pt", fitted_tile=64) == saved.replace(epochs=5)
    with pytest.raises(BioAnomalyError, match=r"tile 256, fitted to the images: 80 \(the stopped "
                       r"run: 64\)$"):  # fmt: skip
        resumed(saved, asked, "m.last.pt", fitted_tile=80)
    with pytest.raises(BioAnomalyError, match=r"tile 256 \(the stopped run: 64\)$"):
        resumed(saved, asked, "m.last.pt")  # not fitted: images larger than the tile
    # leaving out flagged images is switched on, not off
    assert resumed(saved, saved.replace(exclude_qc=True), "m.last.pt").exclude_qc is True
    with pytest.raises(BioAnomalyError, match=r"exclude_qc False \(the stopped run: True\)$"):
        resumed(saved.replace(exclude_qc=True), saved, "m.last.pt")
