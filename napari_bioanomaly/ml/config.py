"""Training configuration: one frozen, validated object for the CLI, the widget and checkpoints."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..core.model import BioAnomalyError


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the program needs to know about a model, in one place: the CLI's
    choices and help, the Train widget's list, tooltips and greyed settings, and the
    checks of :class:`TrainConfig` all read :data:`REGISTRY`.

    ``kind``: ``segmentation`` (learns the annotated classes), ``anomaly`` (learns
    normal appearance only; one class "anomaly") or ``classic``. ``network``: trained
    by steps of tiles (epochs, steps, tile, batch, learning rate and augmentation
    apply). ``class_weights``: takes loss weights per class. ``width``: channels of the
    first level of its network (the U-Net, the memory bank's encoders) when
    ``base_channels`` is not given.
    """

    name: str
    kind: str
    help: str
    network: bool
    class_weights: bool = False
    #: the trainer of :data:`~.train.TRAINERS` that fits it (networks: ``network``)
    trainer: str = "network"
    width: int = 16

    @property
    def learns_classes(self) -> bool:
        return self.kind != "anomaly"


#: Every model, in the order the CLI and the Train widget list them.
REGISTRY: dict[str, ModelInfo] = {m.name: m for m in (
    # U-Net width 8: on NEU-Seg (2-core CPU, float32, 15 min) instance F1 0.667 against
    # 0.585 at width 16, whose steps cost 3x as much (docs/benchmarks.md)
    ModelInfo("unet", "segmentation", "U-Net segmentation: small, fast, trains on a CPU",
              network=True, class_weights=True, width=8),
    ModelInfo("maskrcnn", "segmentation", "Mask R-CNN instances: needs a GPU", network=True),
    ModelInfo("forest", "classic", "classic baseline: random forest on filter features, "
              "trains in minutes on a CPU", network=False, class_weights=True, trainer="forest"),
    ModelInfo("memory", "anomaly", "unsupervised: memory bank of normal patches, no "
              "annotations needed", network=False, trainer="memory"),
)}  # fmt: skip
#: Supervised segmentation models (learn the annotated classes).
SEGMENTATION_MODELS = tuple(n for n, m in REGISTRY.items() if m.kind == "segmentation")
#: Unsupervised anomaly models (learn what normal looks like; one class "anomaly").
ANOMALY_MODELS = tuple(n for n, m in REGISTRY.items() if m.kind == "anomaly")
#: The classic baseline: a random forest on multi-scale filter features.
CLASSIC_MODELS = tuple(n for n, m in REGISTRY.items() if m.kind == "classic")
MODELS = tuple(REGISTRY)
#: Models of earlier versions that were removed, and why: named when a setting, a command
#: line or a checkpoint asks for one.
REMOVED_MODELS = {
    "autoencoder": "the autoencoder was removed (2026-12): the memory bank maps anomalies "
    "better (on KolektorSDD image ROC-AUC 0.96 against the autoencoder's 0.69, pixel AUROC "
    "0.96 against its 0.77, below even a no-learning reference's 0.85; docs/anomaly.md); "
    "train model memory on the same images instead",
}


def _no_lines_choice(switch_off: str) -> str:
    """:data:`NO_LINES_CHOICE`, saying how to switch the line cue off in ``switch_off``."""
    return (
        "line cue: no annotated validation image to choose by; joining it by the root mean "
        "square, what found the most anomalies without annotations on real images (for spots "
        f"or pits only, or where normal images have long lines of their own, {switch_off})"
    )


#: What the memory bank's training says when no annotated validation image can choose
#: whether the line cue joins (it then joins by the root mean square; docs/benchmarks.md,
#: "The line cue without annotations, joined by the root mean square"); the Train widget
#: repeats it when the run ends. It names the setting as the Train widget shows it (its
#: field); the CLI says :data:`NO_LINES_CHOICE_CLI` instead, naming its option.
NO_LINES_CHOICE = _no_lines_choice('set "line cue" to no')
NO_LINES_CHOICE_CLI = _no_lines_choice("train with --lines no")
#: Messages of training events that the CLI says in its own words (naming its options, where
#: the events name the Train widget's fields).
CLI_WORDS = {NO_LINES_CHOICE: NO_LINES_CHOICE_CLI}
#: How the line cue joins a memory bank's calibrated map (:func:`.anomaly.with_lines`):
#: their mean where annotated validation images choose the operating point, their root
#: mean square where the calibrated 0.5 is the point (a strong anomaly in one of the two
#: then stays above it).
LINE_JOINS = ("mean", "rms")
#: What a memory bank's image score is taken from (:func:`.anomaly.image_map`): the bank's
#: raw map (and the line cue's) standardised on normal images, pooled as the annotated
#: validation images chose, or, without annotated validation images, the top of the
#: calibrated map the proposals come from (:data:`.anomaly.MAP_TOP_FRACTION`).
IMAGE_SOURCES = ("bank", "map")
DEVICES = ("auto", "cpu", "cuda", "mps")
CLASS_WEIGHTS = ("none", "balanced")
#: What a memory bank's descriptors can be (fixed filter responses, random-weight
#: encoders, an encoder learnt from the images), and what the user can ask for.
BANK_DESCRIPTORS = ("filters", "random", "learned")
DESCRIPTORS = ("auto", *BANK_DESCRIPTORS)
#: Share of a memory bank's candidate patches left out as outliers before its coreset
#: (:func:`.anomaly.outliers`), by default none: on a folder whose images mostly hold
#: anomalies 0.05 rescues the map (sample pixel AUROC 0.22 -> 0.94), on real sets whose
#: anomalies are rare it cost image ROC-AUC (BSData 0.74 -> 0.66, KolektorSDD 0.72 ->
#: 0.70; docs/benchmarks.md, "Outliers left out of the bank").
BANK_OUTLIERS = 0.0
#: Whether a memory bank's map is sharpened by local contrast (auto: where validation says).
SHARPEN = ("auto", "yes", "no")
#: Whether the line cue joins a memory bank's map and image score (auto: where validation says).
LINES = ("auto", "yes", "no")
#: The forest's per-pixel features: filters and wider context (line cue, local
#: contrast), or the filters alone (faster; :mod:`.features`).
FOREST_FEATURES = ("context", "filters")
#: The models test-time augmentation (8 flips and rotations) applies to: the supervised
#: networks. They may keep a second operating point chosen on averaged maps.
TTA_MODELS = ("unet", "maskrcnn")
#: Whether training also chooses that second point (auto: when it costs little; see
#: :func:`.validation.tta_point_wanted`).
TTA_POINT = ("auto", "yes", "no")
#: Whether predict, Review and crossval use test-time augmentation: ``auto`` where the
#: model's validation shows it pays (:func:`..core.chooser.tta_pays`), ``yes``, ``no``.
TTA_SETTINGS = ("auto", "yes", "no")
#: Share of an image's pixels whose mean anomaly score is the image score, by default,
#: and the shares the memory bank's trainer may choose from on annotated validation
#: images (anomalies of different sizes want different pooling; :mod:`.train_memory`).
TOP_FRACTION = 0.001
TOP_FRACTIONS = (0.001, 0.003, 0.01, 0.03)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run.

    Parameters
    ----------
    model
        ``unet`` (default; small, trains on a laptop CPU), ``maskrcnn``, the
        unsupervised ``memory`` (a PatchCore-style memory bank of patch
        descriptors), or ``forest`` (random
        forest on multi-scale filter features, the classic baseline).
    epochs, steps_per_epoch
        Length of training; an epoch is ``steps_per_epoch`` batches of random tiles.
        ``epochs=None`` (the default) fits the run into ``budget_min``: the epochs
        run so far are timed and set how many follow (re-planned after each epoch).
    budget_min
        Minutes a run without ``epochs`` may take; ``None``: 15 on a CPU, 60 on a GPU.
    patience
        Stop when the validation score has not improved for this many epochs
        (0: never); the best checkpoint is kept either way. 25: validation scores
        move by +-0.02 from epoch to epoch, and 10 stopped NEU-Seg runs at half their
        budget (instance F1 0.535-0.571; with 25: 0.590, 78 epochs in 15 min).
    tile, batch
        Tile side in pixels and tiles per batch (over all processes of a distributed
        run). ``batch`` ``None`` (the default): :func:`.device.default_batch`, 4 tiles
        per process, and 32 per GPU for the U-Net. On an H200, NEU-Seg in the same 2-2.5 min:
        batch 4 instance F1 0.625 (109 samples/s), 16 0.662-0.675 (457-523), 32 0.715
        (975); on a CPU a larger batch only slows each step down.
    lr
        Learning rate (AdamW, cosine decay).
    anomaly_fraction
        Share of tiles centred on an annotated region (oversampling of anomalies).
    val_fraction, val_attribute, val_values
        Validation images: a seeded fraction of the images, or those whose file
        attribute ``val_attribute`` has one of ``val_values`` (e.g. a cell line).
    augment
        Flips, 90-degree rotations, contrast x0.8-1.25, brightness +-0.1, a slight
        Gaussian blur and Gaussian noise; for the supervised networks half the tiles
        also turned by up to 45 degrees and zoomed x0.8-1.25 (image and masks together).
    low, high
        Percentiles of the intensity normalisation.
    device
        ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda`` or ``mps``.
    amp
        Mixed precision: float16 on CUDA, bfloat16 on CPUs that compute it natively
        (AVX512-BF16, AMX); float32 elsewhere (see :func:`.device.autocast_dtype`).
    seed
        Seeds numpy and torch; CPU runs are reproducible.
    base_channels
        Channels of the first level of the network (the U-Net, the memory bank's
        encoders); ``None`` (the default): the model's own
        (:attr:`ModelInfo.width`: 8 for the U-Net, about 0.5 M parameters; 16 for the
        others). Read it as :attr:`width`; checkpoints store the width built.
    weights
        Optional local weights to start from (nothing is downloaded): a state dict for
        Mask R-CNN, or for the U-Net a file of ``napari-bioanomaly pretrain``
        (self-supervised on the user's own images; see :mod:`.pretrain`).
    num_workers
        Data loader processes, each drawing whole batches of tiles (0: tiles are drawn in
        the training thread); ``None`` (the default): :func:`.device.loader_workers`
        chooses (none on a CPU, a few on a GPU).
    class_balance
        Rare-class oversampling: anomaly tiles pick a class uniformly first,
        then one of its regions (otherwise every region is equally likely, so
        common classes dominate); the forest samples pixels per class.
    class_weights
        ``none`` or ``balanced``: loss weights inverse to the square root of
        each class's pixel share in the training images (U-Net and forest).
    ema
        Networks are validated, kept and used with an exponential moving average of
        their weights (this decay per step; 0: the last weights, as trained). The
        average smooths the step-to-step noise of small batches.
    pretrain_min
        Minutes of self-supervised pretraining of the U-Net on every image of the dataset,
        annotated or not (masked-image reconstruction, :mod:`.pretrain`), before it learns
        the annotations; 0: none. Not the default: see ``docs/benchmarks.md``.
    descriptors
        What the memory bank compares: ``filters``, multi-scale filter responses (a
        minute, and the fastest to predict); ``random``, mid-level features of several
        U-Net encoders with random weights, concatenated (nothing to learn, a few
        minutes); ``learned``, features of one encoder trained on the normal images by
        masked-image reconstruction for most of the time budget (:mod:`.descriptors`);
        or ``auto`` (default): a bank of filters and one of random encoders, keeping the
        one that tells the annotated validation images apart better (filters without
        any). Measured in ``docs/benchmarks.md``.
    sharpen
        Whether the memory bank's map is sharpened by the image's local contrast, so
        that proposals follow thin anomalies (cracks, scratches, hairs) instead of
        blobs around them (:func:`.anomaly.sharpen`): ``yes``, ``no``, or ``auto``
        (default): where that raises the validation F1 of the operating point.
    lines
        Whether the memory bank's map and image score are joined by the line cue, the
        evidence of long thin structures calibrated on normal pixels
        (:func:`.anomaly.with_lines`): ``yes``, ``no``, or ``auto`` (default): where that
        tells the annotated validation images apart better, and where no validation image
        is annotated (joined by the root mean square then, as with ``yes``:
        :data:`LINE_JOINS`).
    bank_outliers
        Share of the memory bank's candidate patches left out before its coreset as
        outliers, those least like any other image's (:func:`.anomaly.outliers`): the
        anomalies nobody annotated, which the coreset would otherwise keep as normal.
        0 (default): none; 0.05 for a folder whose images mostly hold anomalies unlike
        each other's. Measured in ``docs/benchmarks.md``.
    features
        What the forest describes each pixel by: ``context`` (default), multi-scale
        filter responses, the line cue and local contrast; ``filters``, the filter
        responses alone (:mod:`.features`).
    autocontext
        Stack a second forest on the first (default): it also sees the first forest's
        anomaly probabilities around each pixel (:mod:`.forest`). Measured in
        ``docs/benchmarks.md``.
    tta_point
        Whether a U-Net or Mask R-CNN also gets an operating point chosen on validation
        maps averaged over the 8 flips and rotations, used when predicting with
        test-time augmentation (their maps peak lower than plain ones, so the plain
        point can lose what augmentation gains): ``yes``, ``no``, or ``auto`` (default):
        when choosing it takes at most a tenth of the training time (8x the plain
        point's validation pass; :func:`.validation.tta_point_wanted`).
    exclude_qc
        Leave images with image-quality flags (uniform, binary, dim, saturated,
        out of focus; see :mod:`napari_bioanomaly.core.quality`) out of training.
    """

    model: str = "unet"
    epochs: int | None = None
    steps_per_epoch: int = 50
    tile: int = 256
    batch: int | None = None
    lr: float = 1e-3
    anomaly_fraction: float = 0.5
    val_fraction: float = 0.2
    val_attribute: str | None = None
    val_values: tuple[str, ...] = ()
    augment: bool = True
    low: float = 0.1
    high: float = 99.9
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    base_channels: int | None = None
    weights: str | None = None
    num_workers: int | None = None
    class_balance: bool = False
    class_weights: str = "none"
    exclude_qc: bool = False
    budget_min: float | None = None
    patience: int = 25
    ema: float = 0.99
    pretrain_min: float = 0.0
    descriptors: str = "auto"
    sharpen: str = "auto"
    lines: str = "auto"
    bank_outliers: float = BANK_OUTLIERS
    features: str = "context"
    autocontext: bool = True
    tta_point: str = "auto"

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:  # values of the wrong type cannot be compared below
            raise BioAnomalyError("invalid training settings: " + "; ".join(problems))
        if self.model in REMOVED_MODELS:
            problems.append(REMOVED_MODELS[self.model])
        elif self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        for name in ("epochs", "steps_per_epoch", "batch", "base_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1")
        if self.budget_min is not None and not 0 < self.budget_min <= 60 * 24 * 30:
            problems.append("budget_min must be > 0 minutes")
        if self.patience < 0:
            problems.append("patience must be >= 0")
        if not 0 <= self.ema < 1:
            problems.append("ema must be in [0, 1)")
        if not 0 <= self.pretrain_min <= 60 * 24 * 30:
            problems.append("pretrain_min must be >= 0 minutes")
        elif self.pretrain_min and self.model != "unet":
            problems.append(f"pretraining applies to the U-Net, not to {self.model}")
        elif self.pretrain_min and self.weights:
            problems.append("give pretrained weights or minutes of pretraining, not both")
        if self.descriptors not in DESCRIPTORS:
            problems.append(f"descriptors must be one of {', '.join(DESCRIPTORS)}, not "
                            f"{self.descriptors!r}")  # fmt: skip
        for name, choices in (
            ("sharpen", SHARPEN),
            ("lines", LINES),
            ("features", FOREST_FEATURES),
            ("tta_point", TTA_POINT),
        ):
            if getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, not "
                                f"{getattr(self, name)!r}")  # fmt: skip
        if not 0 <= self.bank_outliers <= 0.5:
            problems.append("bank_outliers must be in [0, 0.5]")
        if self.tile < 32 or self.tile % 16:
            problems.append(f"tile must be a multiple of 16 and at least 32, not {self.tile}")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if not 0 <= self.anomaly_fraction <= 1:
            problems.append("anomaly_fraction must be in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            problems.append("val_fraction must be in [0, 1)")
        if not 0 <= self.low < self.high <= 100:
            problems.append("percentiles must satisfy 0 <= low < high <= 100")
        if self.class_weights not in CLASS_WEIGHTS:
            problems.append(
                f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, not "
                f"{self.class_weights!r}"
            )
        elif (
            self.class_weights != "none"
            and self.model in REGISTRY
            and not REGISTRY[self.model].class_weights
        ):
            weighted = ", ".join(n for n, m in REGISTRY.items() if m.class_weights)
            problems.append(f"class weights apply to these models only: {weighted}")
        if self.class_balance and self.model in ANOMALY_MODELS:
            problems.append(
                "class balance applies to models that learn classes, not to " + self.model
            )
        if self.num_workers is not None and self.num_workers < 0:
            problems.append("num_workers must be >= 0")
        for name, most in LIMITS.items():
            value = getattr(self, name)
            if value is not None and value > most:
                problems.append(f"{name} must be at most {most:g}, not {value:g}")
        if problems:
            raise BioAnomalyError("invalid training settings: " + "; ".join(problems))
        object.__setattr__(self, "val_values", tuple(str(v) for v in self.val_values))

    def _type_problems(self) -> list[str]:
        """Settings of the wrong type (e.g. from a checkpoint made elsewhere)."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _TYPES[f.name]
            if value is None and f.name in _OPTIONAL:
                continue
            if kind is float:
                ok = (
                    isinstance(value, numbers.Real)
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                )
            elif kind is int:
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            elif kind is tuple:
                ok = isinstance(value, tuple | list) and all(
                    isinstance(v, str | int | float) for v in value
                )
            else:
                ok = isinstance(value, kind)
            if not ok:
                problems.append(f"{f.name} must be {_KIND_NAMES[kind]}, not {repr(value)[:40]}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (and torch ``weights_only``-loadable) plain dict."""
        out = dataclasses.asdict(self)
        out["val_values"] = list(self.val_values)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "val_values" in kwargs:
            kwargs["val_values"] = tuple(kwargs["val_values"])
        return cls(**kwargs)

    @property
    def width(self) -> int:
        """Channels of the network's first level: ``base_channels``, or the model's own."""
        if self.base_channels is not None:
            return self.base_channels
        info = REGISTRY.get(self.model)
        return info.width if info else ModelInfo.width

    @property
    def unsupervised(self) -> bool:
        """Whether the model learns normal appearance only (no classes)."""
        return self.model in ANOMALY_MODELS

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: Settings a resumed run may change: how long it goes on and where it runs, not what it
#: learns from nor how its epochs are scored against the earlier ones.
RESUME_FREE = frozenset(
    {"epochs", "budget_min", "patience", "device", "num_workers", "amp", "tta_point"}
)
#: Settings that only start a run (its first weights): a resumed run goes on from its
#: checkpoint's weights and keeps the values it started with.
RESUME_START = frozenset({"weights", "pretrain_min"})
#: Settings a run chooses when it starts where they are left auto (None): a resumed run
#: left them auto keeps the stopped run's choice.
RESUME_AUTO = frozenset({"batch", "base_channels"})
#: Flags a resumed run may switch on, not off: leaving out the images with quality flags
#: only takes images away (one that cannot be read any more is flagged unreadable, and a
#: run cannot go on with it), it adds none the stopped run did not learn from.
RESUME_ON = frozenset({"exclude_qc"})


def resume_differences(
    saved: TrainConfig, asked: TrainConfig, fitted_tile: int | None = None
) -> list[str]:
    """The settings of ``asked`` that a run resuming one of ``saved`` may not take, in
    words ("tile 176 (the stopped run: 64)"): all but :data:`RESUME_FREE` and
    :data:`RESUME_START`, those of :data:`RESUME_AUTO` left auto and those of
    :data:`RESUME_ON` switched on. ``fitted_tile`` is the tile the run makes of the one
    asked for its images (see :func:`.data.fit_tile`): a tile asked that the stopped run
    fitted to the same is not a difference (the checkpoint keeps the fitted one)."""
    differ = []
    for f in dataclasses.fields(TrainConfig):
        name = f.name
        value, before = getattr(asked, name), getattr(saved, name)
        if name in RESUME_FREE or name in RESUME_START or value == before:
            continue
        auto = value is None and name in RESUME_AUTO
        if auto or (value is True and name in RESUME_ON) or (name, fitted_tile) == ("tile", before):
            continue
        fitted = ""
        if name == "tile" and fitted_tile not in (None, value):
            fitted = f", fitted to the images: {fitted_tile}"
        differ.append(f"{name} {_value_text(value)}{fitted} (the stopped run: "
                      f"{_value_text(before)})")  # fmt: skip
    return differ


def resumed(
    saved: TrainConfig,
    asked: TrainConfig,
    source: object = "the checkpoint",
    fitted_tile: int | None = None,
) -> TrainConfig:
    """The settings of a run that resumes one of ``saved`` settings as ``asked``: the
    stopped run's, with the :data:`RESUME_FREE` ones asked and the :data:`RESUME_ON` ones
    asked on. Any other setting asked otherwise is refused (the epochs of the two runs
    would be trained or scored unlike each other), naming each (see
    :func:`resume_differences`, and ``fitted_tile`` there)."""
    differ = resume_differences(saved, asked, fitted_tile)
    if differ:
        raise BioAnomalyError(f"{source}: cannot resume with other settings than the stopped "
                              f"run's: {'; '.join(differ)}")  # fmt: skip
    switched = {name: True for name in RESUME_ON if getattr(asked, name)}
    return saved.replace(**{name: getattr(asked, name) for name in RESUME_FREE}, **switched)


def _value_text(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


#: The type of each setting (checked before anything else; ``None`` is allowed for those
#: in :data:`_OPTIONAL`).
_TYPES: dict[str, type] = {
    "model": str, "epochs": int, "steps_per_epoch": int, "tile": int, "batch": int,
    "lr": float, "anomaly_fraction": float, "val_fraction": float, "val_attribute": str,
    "val_values": tuple, "augment": bool, "low": float, "high": float, "device": str,
    "amp": bool, "seed": int, "base_channels": int, "weights": str, "num_workers": int,
    "class_balance": bool, "class_weights": str, "exclude_qc": bool, "budget_min": float,
    "patience": int, "ema": float, "pretrain_min": float, "descriptors": str,
    "sharpen": str, "lines": str, "bank_outliers": float, "features": str, "autocontext": bool,
    "tta_point": str,
}  # fmt: skip
_OPTIONAL = frozenset(
    {"epochs", "val_attribute", "weights", "budget_min", "base_channels", "num_workers", "batch"}
)
_KIND_NAMES = {str: "text", int: "a whole number", float: "a finite number",
               bool: "true or false", tuple: "a list of text values"}  # fmt: skip
#: Upper bounds: beyond them a run (or a checkpoint made elsewhere) only exhausts memory.
LIMITS = {"epochs": 1_000_000, "steps_per_epoch": 10_000_000, "tile": 8192, "batch": 4096,
          "base_channels": 256, "num_workers": 256, "patience": 1_000_000}  # fmt: skip
