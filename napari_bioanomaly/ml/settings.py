"""Every training setting declared once: the CLI's options and the Train widget's form are
built from :data:`SETTINGS`, and both turn their values into a :class:`TrainConfig`.

To add a setting: a field (with its default) in :class:`TrainConfig`, then one
:class:`Setting` here. The CLI option, its help, the form row, its tooltip, its greying
for models it does not apply to, and the test that checks the two agree follow.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.model import BioAnomalyError
from .config import (
    CLASS_WEIGHTS,
    DESCRIPTORS,
    DEVICES,
    FOREST_FEATURES,
    LINES,
    REGISTRY,
    REMOVED_MODELS,
    RESUME_FREE,
    RESUME_ON,
    RESUME_START,
    SHARPEN,
    TTA_MODELS,
    TTA_POINT,
    ModelInfo,
    TrainConfig,
)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _network(info: ModelInfo) -> bool:
    return info.network


def _learns_weights(info: ModelInfo) -> bool:
    """Networks, and the memory bank (its descriptor network, with learned descriptors)."""
    return info.network or info.name == "memory"


def _takes_weights(info: ModelInfo) -> bool:
    return info.name in ("unet", "maskrcnn")


def _memory(info: ModelInfo) -> bool:
    return info.name == "memory"


def _forest(info: ModelInfo) -> bool:
    return info.name == "forest"


def _unet(info: ModelInfo) -> bool:
    return info.name == "unet"


def _tta(info: ModelInfo) -> bool:
    return info.name in TTA_MODELS


def _learning(model: str, values: Mapping[str, Any]) -> bool:
    """The memory bank learns weights only with learned descriptors."""
    return model != "memory" or values.get("descriptors", _DEFAULTS["descriptors"]) == "learned"


#: The settings of learning weights: networks, and the memory bank with learned
#: descriptors (the form greys them out otherwise; their CLI help says so).
_LEARNS: dict[str, Any] = {"applies": _learns_weights, "needs": _learning,
                           "needs_help": " (memory: with learned descriptors only)"}  # fmt: skip


def _learns_classes(info: ModelInfo) -> bool:
    return info.learns_classes


def _class_weights(info: ModelInfo) -> bool:
    return info.class_weights


#: The attribute of parsed options that holds the settings given on the command line.
GIVEN = "given_settings"


class _Given(argparse.Action):
    """Store an option's value (a flag's ``const``) and note that it was given, so that a
    resumed run can tell the options asked for from their defaults."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        setattr(namespace, GIVEN, {*getattr(namespace, GIVEN, ()), self.dest})


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings (by name, and ``model``) given on the command line."""
    return set(getattr(args, GIVEN, ()))


@dataclass(frozen=True)
class Setting:
    """One training setting, as the CLI and the Train widget show it.

    ``name``: the CLI option (``--name`` with dashes) and the widget's attribute;
    ``field``: the :class:`TrainConfig` field (default: ``name``); ``kind``: ``int``,
    ``float``, ``choice``, ``flag``, ``text`` (empty: None) or ``list`` (comma-separated);
    ``auto``: None is allowed and written 0 ("auto" in the form); ``negate``: a flag
    that switches the field off (``--no-augment``); ``applies``: the models it applies
    to (the form greys it out for the others); ``needs``: a further condition on the
    model and the other form values (by setting name), with ``needs_help`` saying it in
    the CLI's help; ``form``: shown in the Train widget
    (advanced settings are CLI-only); ``group``: form rows of one group share a line;
    ``check``: the text beside a flag's check box.
    """

    name: str
    label: str
    help: str
    kind: str = "int"
    field: str = ""
    low: float = 0
    high: float = 1_000_000
    step: float = 1
    decimals: int = 2
    choices: tuple[str, ...] = ()
    auto: bool = False
    negate: bool = False
    applies: Callable[[ModelInfo], bool] | None = None
    needs: Callable[[str, Mapping[str, Any]], bool] | None = None
    needs_help: str = ""
    form: bool = True
    group: str = ""
    metavar: str | None = None
    check: str = ""

    @property
    def key(self) -> str:
        return self.field or self.name

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.key]

    @property
    def option(self) -> str:
        flag = f"no-{self.name}" if self.negate else self.name
        return "--" + flag.replace("_", "-")

    def applies_to(self, model: str, values: Mapping[str, Any] | None = None) -> bool:
        """Whether ``model`` uses this setting (given the other form ``values``, when
        known)."""
        if self.applies is not None and not self.applies(REGISTRY[model]):
            return False
        return values is None or self.needs is None or self.needs(model, values)

    # ------------------------------------------------------------------ CLI

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        default = self.default
        text = self.help
        if self.kind in ("int", "float", "choice"):
            text += f" ({'auto' if default is None else default})"
        if self.applies is not None:
            text += "; for " + ", ".join(n for n in REGISTRY if self.applies_to(n))
        text += self.needs_help
        if self.kind == "flag":
            parser.add_argument(self.option, dest=self.name, action=_Given, nargs=0,
                                const=True, default=False, help=text)  # fmt: skip
        elif self.kind == "choice":
            parser.add_argument(self.option, dest=self.name, choices=self.choices,
                                default=default, help=text, action=_Given)  # fmt: skip
        else:
            kind = {"int": int, "float": float}.get(self.kind, str)
            parser.add_argument(
                self.option, dest=self.name, type=kind, metavar=self.metavar,
                default=None if self.kind in ("text", "list") else default, help=text,
                action=_Given,
            )  # fmt: skip

    def from_cli(self, value: Any) -> Any:
        """The config value of a parsed option."""
        if self.kind == "flag":
            return not value if self.negate else bool(value)
        return self._from_text(value) if self.kind in ("text", "list") else value

    # ------------------------------------------------------------------ form

    def to_form(self, value: Any) -> Any:
        """How the form holds a config value (auto: 0, text: "", list: "a,b")."""
        if self.auto and value is None:
            return 0
        if self.kind == "text":
            return value or ""
        if self.kind == "list":
            return ",".join(value)
        return value

    def from_form(self, value: Any) -> Any:
        """The config value of what the form holds."""
        if self.auto and not value:
            return None
        if self.kind in ("text", "list"):
            return self._from_text(value)
        if self.kind == "float":
            return float(value)
        return value

    def _from_text(self, value: str | None) -> Any:
        if self.kind == "list":
            return tuple(v.strip() for v in (value or "").split(",") if v.strip())
        return (value or "").strip() or None


#: The training settings in the order of the CLI's help and the Train widget's form
#: (the model is chosen from :data:`REGISTRY`).
SETTINGS: tuple[Setting, ...] = (
    Setting("epochs", "epochs", "epochs; auto: as many as fit in the time budget, stopping "
            "early when the validation score stops improving (the best model is kept)",
            auto=True, high=10_000, **_LEARNS, metavar="N"),
    Setting("budget", "time budget (min)", "minutes of an auto run; auto: 15 on a CPU, 60 on "
            "a GPU", kind="float", field="budget_min", auto=True, high=60 * 24 * 7, step=5,
            decimals=0, **_LEARNS, metavar="MIN"),
    Setting("pretrain", "pretraining (min)", "minutes of self-supervised pretraining on all "
            "the images, annotated or not, before learning the annotations (0: none)",
            kind="float", field="pretrain_min", high=60 * 24, step=5, decimals=0,
            applies=_unet, metavar="MIN"),
    Setting("descriptors", "descriptors", "what the memory bank compares: filters (filter "
            "responses: fastest), random (features of several random-weight encoders), "
            "learned (an encoder trained on the normal images for most of the time budget) "
            "or auto (filters and random, the better on the annotated validation images); "
            "see docs/anomaly.md", kind="choice",
            choices=DESCRIPTORS, applies=_memory),
    Setting("sharpen", "sharpen map", "sharpen the memory bank's map by local contrast so "
            "proposals follow thin anomalies (cracks, scratches, hairs): yes, no, or auto "
            "(where it raises the validation F1)", kind="choice", choices=SHARPEN,
            applies=_memory),
    Setting("lines", "line cue", "join the memory bank's map and image score with the "
            "evidence of long thin structures (scratches, hairs, cracks), calibrated on "
            "normal pixels: yes, no, or auto (where it tells the annotated validation "
            "images apart better; joined when none is annotated: choose no when your "
            "anomalies are spots or pits, or your normal images have long lines of their "
            "own)", kind="choice", choices=LINES, applies=_memory),
    Setting("bank_outliers", "outlier share", "share of the memory bank's candidate patches "
            "left out as outliers, those least like any other image's: anomalies nobody "
            "annotated, which the bank would otherwise learn as normal; 0.05 where most "
            "images hold anomalies (0: none; see docs/anomaly.md)",
            kind="float", high=0.5, step=0.01, decimals=3, applies=_memory, metavar="SHARE"),
    Setting("features", "pixel features", "what the forest describes each pixel by: context "
            "(filter responses, the line cue of long thin structures and local contrast) or "
            "filters (filter responses only: 1.5-4x faster to predict)",
            kind="choice", choices=FOREST_FEATURES, applies=_forest),
    Setting("autocontext", "second stage", "switch the forest's second stage off (auto-context: "
            "a second forest that also sees the first one's probabilities around each "
            "pixel; one stage fits 2-3x and predicts about 2x faster)", kind="flag",
            negate=True, applies=_forest, check="auto-context"),
    Setting("tta_point", "point for TTA", "also choose an operating point on validation "
            "maps averaged over the 8 flips and rotations, which predicting with test-time "
            "augmentation uses: yes, no, or auto (when that takes at most a tenth of the "
            "training time)", kind="choice", choices=TTA_POINT, applies=_tta),
    Setting("patience", "patience (epochs)", "stop after this many epochs without a better "
            "validation score (0: never)", high=10_000, applies=_network, metavar="N"),
    Setting("steps", "steps per epoch", "batches per epoch", field="steps_per_epoch", low=1,
            high=100_000, **_LEARNS, metavar="N"),
    Setting("tile", "tile size (px)", "tile side in pixels (a multiple of 16)", low=32,
            high=4096, step=16, **_LEARNS, metavar="PX"),
    Setting("batch", "batch size", "tiles per batch; auto: 4, and 32 per GPU for the U-Net",
            auto=True, high=512, **_LEARNS, metavar="N"),
    Setting("lr", "learning rate", "learning rate (AdamW, warm-up and cosine decay)",
            kind="float", low=1e-5, high=1.0, step=1e-4, decimals=5, **_LEARNS,
            metavar="X"),
    Setting("augment", "augment", "switch augmentations off (flips, rotations, zoom, "
            "brightness, blur, noise)", kind="flag", negate=True, applies=_network, check="on"),
    Setting("device", "device", "where to train: auto picks cuda, then mps, then the CPU",
            kind="choice", choices=DEVICES),
    Setting("val_fraction", "validation fraction", "share of images held out for validation "
            "(the unsupervised models validate on every annotated image too when most "
            "images are normal)", kind="float", high=0.9, step=0.05, metavar="F"),
    Setting("val_attribute", "validate on attribute", "validate on the images whose file "
            "attribute ATTR has one of --val-values (e.g. a cell line)", kind="text",
            form=False, metavar="ATTR"),
    Setting("val_values", "validation values", "values of --val-attribute to validate on",
            kind="list", form=False, metavar="V1,V2"),
    Setting("low", "normalise percentiles", "intensity percentile mapped to 0", kind="float",
            high=100, step=0.1, group="normalise", metavar="P"),
    Setting("high", "to", "intensity percentile mapped to 1", kind="float", high=100,
            step=0.1, group="normalise", metavar="P"),
    Setting("class_balance", "class imbalance", "oversample tiles of rare classes (anomaly "
            "tiles pick a class uniformly, then one of its regions)", kind="flag",
            applies=_learns_classes, check="oversample rare classes"),
    Setting("class_weights", "class weights", "balanced: weight the loss by inverse "
            "square-root class frequency", kind="choice", choices=CLASS_WEIGHTS,
            applies=_class_weights),
    Setting("exclude_qc", "quality control", "leave images with quality flags (uniform, "
            "binary, dim, saturated, out of focus) out of training", kind="flag",
            check="leave out QC-flagged images"),
    Setting("ema", "weight averaging", "decay per step of the moving average of the "
            "weights that is kept (0: the last weights)", kind="float", high=0.9999,
            decimals=4, applies=_network, form=False, metavar="D"),
    Setting("anomaly_fraction", "anomaly tiles", "share of training tiles centred on an "
            "annotated region", kind="float", high=1, step=0.05, applies=_network, form=False,
            metavar="F"),
    Setting("base_channels", "network width", "channels of the network's first level: 8 for the "
            "U-Net (about 0.5 M parameters), 16 for the others", low=1, high=256,
            applies=_learns_weights, form=False, metavar="N"),
    Setting("amp", "mixed precision", "switch mixed precision off (float16 on CUDA, bfloat16 on "
            "CPUs that compute it natively)", kind="flag",
            negate=True, applies=_learns_weights, form=False),
    Setting("seed", "seed", "random seed (CPU runs are reproducible)", form=False),
    Setting("weights", "weights", "local weights to start from: a Mask R-CNN state dict, or "
            "a U-Net pretrained by napari-bioanomaly pretrain (nothing is downloaded)",
            kind="text", applies=_takes_weights, form=False, metavar="FILE"),
    Setting("workers", "data workers", "data loader processes, each drawing whole batches "
            "of tiles (0: drawn in the training thread; auto: none on a CPU, where they "
            "would take the training's cores, a few on a GPU)", field="num_workers",
            high=256, form=False, metavar="N"),
)  # fmt: skip

#: Settings by name.
BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and one option per setting."""
    parser.add_argument(
        "--model", choices=tuple(REGISTRY), default=_DEFAULTS["model"], type=_model_name,
        action=_Given,
        help="; ".join(f"{name}: {info.help}" for name, info in REGISTRY.items())
        + f" ({_DEFAULTS['model']})",
    )  # fmt: skip
    for setting in SETTINGS:
        setting.add_to(parser)


def _model_name(text: str) -> str:
    """``--model``'s value; a removed model is refused saying why and what replaces it."""
    if text in REMOVED_MODELS:
        raise argparse.ArgumentTypeError(REMOVED_MODELS[text])
    return text


def config_from_cli(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed options (see :func:`add_cli_options`)."""
    values = {s.key: s.from_cli(getattr(args, s.name)) for s in SETTINGS}
    return TrainConfig(model=args.model, **values)


def unused_options(args: argparse.Namespace) -> list[str]:
    """The options given (other than their defaults) that ``--model`` does not use."""
    values = {s.name: s.from_cli(getattr(args, s.name)) for s in SETTINGS}
    return [s.option for s in SETTINGS
            if values[s.name] != s.default and not s.applies_to(args.model, values)]  # fmt: skip


def config_from_form(model: str, values: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of form values by setting name (those not in the form
    keep their defaults)."""
    chosen = {BY_NAME[name].key: BY_NAME[name].from_form(v) for name, v in values.items()}
    return TrainConfig(model=model, **chosen)


def resume_config(
    args: argparse.Namespace, saved: TrainConfig, source: object
) -> tuple[TrainConfig, str]:
    """The settings of ``train --resume``: the stopped run's (``saved``, read from
    ``source``), so that the resumed epochs train and are scored as the earlier ones were;
    of the options given on the command line, those a resumed run may change
    (:data:`~.config.RESUME_FREE`: epochs, time budget, patience, device, ...) are applied,
    as is ``--exclude-qc`` (:data:`~.config.RESUME_ON`: it only leaves images out), and
    those that only start a run (:data:`~.config.RESUME_START`) not used. A ``--tile``
    larger than the stopped run's may be the one it fitted to its images: it is left to
    :func:`.train.train`, which knows the images, to judge (see :func:`.config.resumed`).
    Returns the settings and a line saying them, and what the options changed or did not.
    Any other option given with a value other than the stopped run's is refused, naming
    the option and both values."""
    given = given_settings(args)
    refused, changes, changed, unused = [], {}, [], []
    judged_later: dict[str, Any] = {}
    if "model" in given and args.model != saved.model:
        refused.append(f"--model {args.model} (the stopped run: {saved.model})")
    for s in SETTINGS:
        if s.name not in given or not s.applies_to(saved.model):  # not used: warned of
            continue
        value, before = s.from_cli(getattr(args, s.name)), getattr(saved, s.key)
        if value == before:
            continue
        asked = s.option if s.kind == "flag" else f"{s.option} {_option_text(value)}"
        before_text = "without it" if s.kind == "flag" else _option_text(before)
        was = f"{asked} (the stopped run: {before_text})"
        if s.key in RESUME_START:
            unused.append(asked)
        elif s.key in RESUME_FREE:
            changes[s.key] = value
            changed.append(was)
        elif s.key in RESUME_ON and value:
            changes[s.key] = value
            changed.append(f"{asked} (the stopped run: {before_text}; images with quality flags "
                           "are left out of training and validation from now on)")  # fmt: skip
        elif s.key == "tile" and value > before:  # fitted to small images? (fit_tile)
            judged_later[s.key] = value
        else:
            refused.append(was)
    if refused:
        raise BioAnomalyError(
            f"{source}: resuming goes on with the settings of the stopped run, so that its "
            f"epochs are trained and scored alike; {'; '.join(refused)}: leave "
            f"{'it' if len(refused) == 1 else 'them'} out, or train a new model without "
            "--resume"
        )
    kept = [s.option if s.kind == "flag" else f"{s.option} {_option_text(getattr(saved, s.key))}"
            for s in SETTINGS
            if s.key not in RESUME_START and s.key not in changes
            and s.applies_to(saved.model) and getattr(saved, s.key) != s.default]  # fmt: skip
    text = f"resuming {source} with the settings of the stopped run (--model {saved.model}"
    text += "".join(f" {k}" for k in kept) + ")"
    text += f"; changed: {', '.join(changed)}" if changed else ""
    if unused:
        text += f"; not used: {', '.join(unused)} (a resumed run goes on from its own weights)"
    return saved.replace(**changes, **judged_later), text


def _option_text(value: Any) -> str:
    """A setting's value as its option takes it."""
    if value is None:
        return "auto"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
