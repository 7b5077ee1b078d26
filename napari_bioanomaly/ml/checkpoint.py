"""Checkpoints: what they hold, how they are written and read, and every array and number
checked before it is used.

Checkpoints come from other people. They load as data only
(``torch.load(weights_only=True)``: no code runs), but data can still do harm
once used: a forest whose child indices point outside its tree or back to a
parent makes scikit-learn's C code read out of bounds or loop for ever, and a
``base_channels`` of a billion allocates until the machine stops. So
:func:`validate` checks the whole checkpoint first and names the item at fault
in a :class:`~napari_bioanomaly.core.model.BioAnomalyError`.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from ..core.fileio import WriteError, atomic_write
from ..core.model import BioAnomalyError
from ..core.operating import OperatingPoint
from . import models
from .config import (
    ANOMALY_MODELS,
    BANK_DESCRIPTORS,
    IMAGE_SOURCES,
    LINE_JOINS,
    TOP_FRACTION,
    TrainConfig,
)
from .descriptors import descriptor_dims, descriptor_network
from .features import FEATURE_SETS, PROBABILITY_FEATURES

#: At most this many classes and characters in a class name.
MAX_CLASSES, MAX_NAME = 1000, 200
#: At most this many trees, nodes per tree and features of a forest.
MAX_TREES, MAX_NODES, MAX_FEATURES = 4096, 1 << 22, 4096
#: At most this many memory-bank rows and descriptor dimensions.
MAX_BANK, MAX_DIMS = 1 << 22, 4096
#: The largest window of the memory bank's line cue a checkpoint may name (px).
MAX_LINE_WINDOW = 1025
#: Calibration numbers of the unsupervised models.
SCORING_NUMBERS = ("center", "threshold", "image_center", "image_threshold")


def validate(ckpt: dict[str, Any]) -> None:
    """Raise :class:`BioAnomalyError` naming the first item of ``ckpt`` that cannot be
    used safely: config, classes, operating point, weights, forest, calibration."""
    config = _config(ckpt.get("config"))
    classes = ckpt.get("classes")
    if not isinstance(classes, list | tuple) or not 1 <= len(classes) <= MAX_CLASSES:
        raise BioAnomalyError(f"classes: a list of 1 to {MAX_CLASSES} names, not {_short(classes)}")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise BioAnomalyError(f"classes[{i}]: not a class name ({_short(name)})")
        if name != name.encode("utf-8", "replace").decode("utf-8"):
            raise BioAnomalyError(f"classes[{i}]: not valid text ({name!r})")
    if len(set(classes)) != len(classes):
        raise BioAnomalyError(f"classes: names repeat ({list(classes)})")
    for key in ("operating_point", "operating_point_tta"):
        try:
            OperatingPoint.from_dict(ckpt.get(key))
        except BioAnomalyError as exc:
            raise BioAnomalyError(f"{key}: {exc}") from None
    best = ckpt.get("best_f1")
    if best is not None and not _number(best):
        raise BioAnomalyError(f"best_f1: not a finite number ({_short(best)})")
    steps = ckpt.get("ema_steps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 2**62:
        raise BioAnomalyError(f"ema_steps: not a count of steps ({_short(steps)})")
    for key in ("state_dict", "train_state_dict"):
        if key in ckpt:
            _weights(ckpt[key], key)
    if config.model == "forest":
        if "forest" not in ckpt:
            raise BioAnomalyError("forest checkpoint without its trees")
        forest_arrays(ckpt["forest"], len(classes) + 1)
    if config.model in ANOMALY_MODELS and "scoring" in ckpt:
        _scoring(ckpt["scoring"], config.model)
        _descriptors(ckpt, config)


def _cue_levels(scoring: dict[str, Any], prefix: str, cue: str) -> None:
    """``{prefix}center`` and ``{prefix}threshold`` of ``scoring``: finite, 0 <= center <
    threshold."""
    center, threshold = (scoring.get(f"{prefix}{k}") for k in ("center", "threshold"))
    if not (_number(center) and _number(threshold) and 0 <= center < threshold):
        raise BioAnomalyError(f"scoring.{prefix}center, {prefix}threshold (the calibration "
                              f"of {cue}): two finite numbers, 0 <= center < threshold, not "
                              f"{_short(center)}, {_short(threshold)}")  # fmt: skip


def _descriptors(ckpt: dict[str, Any], config: TrainConfig) -> None:
    """A memory bank of random or learnt descriptors comes with its network (for random
    ones, a count of encoders), of the bank's width."""
    if config.model != "memory":
        return
    kind = ckpt["scoring"].get("descriptors", "filters")
    if kind not in BANK_DESCRIPTORS:
        raise BioAnomalyError(f"scoring.descriptors: one of {', '.join(BANK_DESCRIPTORS)}, not "
                              f"{_short(kind)}")  # fmt: skip
    if kind == "filters":
        return
    if "state_dict" not in ckpt:
        raise BioAnomalyError(f"a memory bank of {kind} descriptors without its network "
                              "(state_dict)")  # fmt: skip
    members = _encoders(ckpt["scoring"]) if kind == "random" else 1
    dims = members * descriptor_dims(config.width)
    width = len(ckpt["scoring"]["mean"])
    if width != dims:
        raise BioAnomalyError(f"scoring.bank: descriptors of {width} values, the network of "
                              f"width {config.width} makes {dims}")  # fmt: skip


def _encoders(scoring: dict[str, Any]) -> int:
    """The number of random encoders of a memory bank, checked."""
    members = scoring.get("encoders")
    if not isinstance(members, int) or isinstance(members, bool) or not 1 <= members <= 64:
        raise BioAnomalyError(f"scoring.encoders: a count of 1 to 64 encoders, not "
                              f"{_short(members)}")  # fmt: skip
    return members


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _config(data: Any) -> TrainConfig:
    if not isinstance(data, dict):
        raise BioAnomalyError(f"config: not a mapping ({_short(data)})")
    try:
        return TrainConfig.from_dict(data)
    except BioAnomalyError as exc:
        raise BioAnomalyError(f"config: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise BioAnomalyError(f"config: malformed ({exc})") from None


def _weights(state: Any, key: str = "state_dict") -> None:
    if not isinstance(state, dict):
        raise BioAnomalyError(f"{key}: not a mapping of names to tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise BioAnomalyError(f"{key}[{_short(name)}]: not a named tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BioAnomalyError(f"{key}[{name!r}]: holds NaN or infinite weights")


def _array(state: dict[str, Any], key: str, ndim: int, kind: str) -> np.ndarray:
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        raise BioAnomalyError(f"forest.{key}: not a tensor ({_short(value)})")
    a = value.numpy()
    if a.ndim != ndim or a.dtype.kind not in kind:
        raise BioAnomalyError(f"forest.{key}: a {ndim}-D array of kind {kind!r} expected, "
                              f"not {a.ndim}-D {a.dtype}")  # fmt: skip
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise BioAnomalyError(f"forest.{key}: holds NaN or infinite values")
    return a


def forest_arrays(state: Any, n_out: int, second: bool = True) -> dict[str, Any]:
    """The checked arrays of a forest's state (see :meth:`.forest.Forest.state`).

    Every tree is a tree: each internal node's two children come after it and
    inside the tree (so no path loops or leaves the arrays), leaves have no
    children, internal nodes test a feature that exists, leaf fractions are
    finite, non-negative and one per output class. A two-stage forest's ``first`` is
    checked the same way (one stage deep: a first stage has no first of its own), on
    the same feature set, and the second stage's feature count includes the first's
    probability features.
    """
    if not isinstance(state, dict):
        raise BioAnomalyError("forest: not a mapping of arrays")
    first = None
    if state.get("first") is not None:
        if not second:
            raise BioAnomalyError("forest.first: a first stage cannot have a first stage")
        try:
            first = forest_arrays(state["first"], n_out, second=False)
        except BioAnomalyError as exc:
            raise BioAnomalyError(str(exc).replace("forest", "forest.first", 1)) from None
    left, right, feature = (_array(state, k, 2, "iu") for k in ("left", "right", "feature"))
    threshold = _array(state, "threshold", 2, "f")
    value = _array(state, "value", 3, "f")
    n_nodes = _array(state, "n_nodes", 1, "iu")
    n_features = state.get("n_features")
    if not isinstance(n_features, int) or not 1 <= n_features <= MAX_FEATURES:
        raise BioAnomalyError(f"forest.n_features: 1 to {MAX_FEATURES}, not {_short(n_features)}")
    feature_set = state.get("feature_set", "filters")  # checkpoints before 2026-12-03
    if feature_set not in FEATURE_SETS:
        raise BioAnomalyError(f"forest.feature_set: one of {', '.join(FEATURE_SETS)}, not "
                              f"{_short(feature_set)}")  # fmt: skip
    expected = FEATURE_SETS[feature_set] + (PROBABILITY_FEATURES if first else 0)
    if n_features != expected:
        stages = " and the first stage's probabilities" if first else ""
        raise BioAnomalyError(f"forest.n_features: {n_features}, but the {feature_set} "
                              f"features{stages} give {expected} per pixel")  # fmt: skip
    if first and first["feature_set"] != feature_set:
        raise BioAnomalyError(f"forest.first.feature_set: {first['feature_set']}, but the "
                              f"second stage describes pixels by {feature_set}")  # fmt: skip
    trees, width = left.shape
    if not 1 <= trees <= MAX_TREES or not 1 <= width <= MAX_NODES:
        raise BioAnomalyError(f"forest: {trees} trees of {width} nodes is out of range")
    for key, a in (("right", right), ("feature", feature), ("threshold", threshold)):
        if a.shape != left.shape:
            raise BioAnomalyError(f"forest.{key}: shape {a.shape}, not {left.shape} as left")
    if value.shape[:2] != left.shape or value.shape[2] != n_out:
        raise BioAnomalyError(f"forest.value: shape {value.shape}, not {(*left.shape, n_out)} "
                              f"({n_out - 1} classes and background)")  # fmt: skip
    if (value < 0).any():
        raise BioAnomalyError("forest.value: negative class fractions")
    if n_nodes.shape != (trees,) or (n_nodes < 1).any() or (n_nodes > width).any():
        raise BioAnomalyError(f"forest.n_nodes: one count in 1..{width} per tree expected")
    for k, n in enumerate(n_nodes.tolist()):
        lo, ro, fo = left[k, :n], right[k, :n], feature[k, :n]
        index = np.arange(n)
        leaf = (lo == -1) & (ro == -1)
        inner = ~leaf
        bad = inner & ~((lo > index) & (lo < n) & (ro > index) & (ro < n))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BioAnomalyError(
                f"forest tree {k} node {i}: children {int(lo[i])}, {int(ro[i])} must come "
                f"after it inside the tree's {n} nodes (or both be -1 for a leaf)"
            )
        bad = inner & ((fo < 0) | (fo >= n_features))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BioAnomalyError(f"forest tree {k} node {i}: feature {int(fo[i])} outside "
                                  f"0..{n_features - 1}")  # fmt: skip
    return {"left": left, "right": right, "feature": feature, "threshold": threshold,
            "value": value, "n_nodes": n_nodes, "n_features": n_features,
            "feature_set": feature_set, "first": first}  # fmt: skip


def _scoring(scoring: Any, model: str) -> None:
    if not isinstance(scoring, dict):
        raise BioAnomalyError("scoring: not a mapping")
    for key in SCORING_NUMBERS:
        if not _number(scoring.get(key)):
            raise BioAnomalyError(f"scoring.{key}: not a finite number "
                                  f"({_short(scoring.get(key))})")  # fmt: skip
    top = scoring.get("image_top", TOP_FRACTION)
    if not (_number(top) and 0 < top <= 0.5):
        raise BioAnomalyError(f"scoring.image_top: a share of pixels in (0, 0.5], not "
                              f"{_short(top)}")  # fmt: skip
    window = scoring.get("line_window")
    if window is not None and (
        isinstance(window, bool)
        or not isinstance(window, int)
        or not 3 <= window <= MAX_LINE_WINDOW
    ):
        raise BioAnomalyError(f"scoring.line_window: a window of 3 to {MAX_LINE_WINDOW} px, not "
                              f"{_short(window)}")  # fmt: skip
    for flag, cue, prefixes in (("sharpen", "local contrast", ("contrast_",)),
                                ("lines", "the line cue", ("line_", "line_image_"))):  # fmt: skip
        on = scoring.get(flag, False)
        if not isinstance(on, bool):
            raise BioAnomalyError(f"scoring.{flag}: true or false, not {_short(on)}")
        for prefix in prefixes if on else ():  # the calibration of the cue the map uses
            _cue_levels(scoring, prefix, cue)
    join = scoring.get("line_join", "mean")
    if join not in LINE_JOINS:
        raise BioAnomalyError(f"scoring.line_join: one of {', '.join(LINE_JOINS)}, not "
                              f"{_short(join)}")  # fmt: skip
    source = scoring.get("image_from", "bank")
    if source not in IMAGE_SOURCES:
        raise BioAnomalyError(f"scoring.image_from: one of {', '.join(IMAGE_SOURCES)}, not "
                              f"{_short(source)}")  # fmt: skip
    if model != "memory":
        return
    arrays = {}
    for key, ndim in (("mean", 1), ("std", 1), ("bank", 2)):
        value = scoring.get(key)
        try:
            a = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
        except (TypeError, ValueError):
            a = np.asarray(None)
        if a.ndim != ndim or a.dtype.kind not in "iuf" or not np.isfinite(a).all():
            raise BioAnomalyError(f"scoring.{key}: a finite {ndim}-D array expected")
        arrays[key] = a
    dims = arrays["mean"].shape[0]
    bank = arrays["bank"]
    if not 1 <= dims <= MAX_DIMS or arrays["std"].shape != (dims,) or (arrays["std"] <= 0).any():
        raise BioAnomalyError(f"scoring.std: {dims} positive values expected")
    if bank.shape[1] != dims or not 1 <= bank.shape[0] <= MAX_BANK:
        raise BioAnomalyError(f"scoring.bank: shape {bank.shape}, not (1..{MAX_BANK}, {dims})")


# ---------------------------------------------------------------- reading and writing

CHECKPOINT_FORMAT = "napari-bioanomaly-checkpoint"
CHECKPOINT_VERSION = 1
#: What :mod:`.pretrain` writes: U-Net weights learnt without annotations.
PRETRAINED_FORMAT = "napari-bioanomaly-pretrained-unet"
#: The U-Net's first convolution: its filters are the network's width.
FIRST_CONV = "down.0.0.weight"


def last_path(out: Path) -> Path:
    """Where the last (resumable) checkpoint of a run whose best model goes to ``out`` is kept."""
    return out.with_name(out.stem + ".last" + out.suffix)


def save_checkpoint(path: Path, payload: dict[str, Any], backup: bool = True) -> Path:
    """Write a checkpoint atomically (the previous file is kept as ``.bak`` unless
    ``backup`` is false: see :func:`~napari_bioanomaly.core.fileio.atomic_write`).

    Refused (:class:`BioAnomalyError`, nothing written) when the model's parameters hold
    NaN or infinite values (:func:`non_finite_item`): such a model cannot be used.
    """
    wrong = non_finite_item(payload)
    if wrong:
        raise BioAnomalyError(
            f"{path}: not written: {wrong} holds NaN or infinite values (the model cannot be "
            "used; were images with NaN or infinite pixels, or a diverging training, behind it?)"
        )
    buf = io.BytesIO()
    torch.save(payload, buf)
    raw = buf.getvalue()
    try:
        return atomic_write(path, raw, backup)
    except WriteError:
        raise  # names the model file and says why (a read-only folder, a full disk)
    except OSError as exc:  # its own name, not the temporary file's beside it
        raise BioAnomalyError(f"cannot write the model {path}: {exc.strerror or exc}") from exc


#: The parts of a checkpoint that are the model: its weights, trees and calibration.
MODEL_PARTS = ("state_dict", "train_state_dict", "forest", "scoring")


def non_finite_item(payload: dict[str, Any]) -> str:
    """The first item of the model's parts (:data:`MODEL_PARTS`) of ``payload`` that holds
    NaN or infinite values, named as :func:`validate` names it (``forest.first.threshold``);
    ``""`` when none does."""
    for key in MODEL_PARTS:
        if key in payload:
            where = _non_finite_in(payload[key], key)
            if where:
                return where
    return ""


def _non_finite_in(value: Any, name: str) -> str:
    """``name``, or that of the item within ``value``, that holds NaN or infinite values."""
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            inner = f"{name}.{key}" if isinstance(value, dict) else f"{name}[{key}]"
            where = _non_finite_in(item, inner)
            if where:
                return where
        return ""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
    elif isinstance(value, np.ndarray):
        finite = value.dtype.kind != "f" or bool(np.isfinite(value).all())
    elif isinstance(value, float):
        finite = math.isfinite(value)
    else:
        return ""
    return "" if finite else name


def checkpoint_payload(
    config: TrainConfig,
    classes: list[str],
    history: list[dict[str, Any]],
    epoch: int,
    best: float | None,
    class_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """The fields every checkpoint has; the model's own state is added by the caller
    (``state_dict`` for networks, ``forest``, ``scoring`` for anomaly models)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        # the width built, not "the model's default", which a later version may change
        "config": config.replace(base_channels=config.width).to_dict(),
        "classes": classes,
        "normalisation": {"method": "percentile", "low": config.low, "high": config.high},
        "history": history,
        "epoch": epoch,
        "best_f1": best,
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
    }


def is_torch_file(path: Path) -> bool:
    """Whether the file starts as PyTorch writes one: a zip archive, or an old pickle."""
    with path.open("rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head.startswith(b"\x80")


def _zip_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive (what ``torch.save`` writes since PyTorch 1.6, and
    the only format ``torch.load`` can map)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _read(path: Path, mmap: bool = False) -> Any:
    """The file's contents as data only (``weights_only=True``: no code from it runs);
    ``mmap``: the tensors mapped, not read (see :func:`peek_checkpoint`)."""
    if not is_torch_file(path):
        raise BioAnomalyError(
            f"{path}: not a model file (PyTorch writes a zip archive; this is something "
            "else: a text, an image, an annotation file?)"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing
            warnings.simplefilter("ignore")
            ckpt = None
            if mmap and _zip_archive(path):  # mapped, not read (an older format cannot be)
                try:
                    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except (RuntimeError, OSError, ValueError):
                    ckpt = None  # a file system that cannot map it: read as usual
            if ckpt is None:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BioAnomalyError(
            f"{path}: refused: it holds objects other than tensors, numbers and text (code "
            "could run when it loads); a napari-bioanomaly checkpoint holds data only"
        ) from None
    except Exception as exc:
        raise BioAnomalyError(f"{path}: not a readable checkpoint ({_one_line(exc)})") from None
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint as data only (``weights_only=True``: no code from the file runs),
    every item of it checked (:func:`validate`)."""
    return _checked(path, peek=False)


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """What a checkpoint says of its run (config, epoch, history, ...) without reading its
    weights: the tensors are mapped from the file, not read nor checked (a Mask R-CNN's
    last state with its optimiser's, hundreds of MB, read on napari's thread froze it).
    Its format, version and config are checked; :func:`load_checkpoint` checks the rest
    before anything is trained or predicted with it.
    """
    return _checked(path, peek=True)


def _checked(path: str | Path, peek: bool) -> dict[str, Any]:
    """A checkpoint read as data, its format and version checked, and its config alone
    (``peek``, its tensors mapped) or every item (:func:`validate`)."""
    path = Path(path)
    if not path.is_file():
        raise BioAnomalyError(f"{path}: checkpoint not found")
    ckpt = _read(path, mmap=peek)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise BioAnomalyError(f"{path}: not a napari-bioanomaly checkpoint")
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise BioAnomalyError(f"{path}: made by a newer napari-bioanomaly; please upgrade")
    try:
        if peek:
            _config(ckpt.get("config"))
        else:
            validate(ckpt)
    except BioAnomalyError as exc:
        raise BioAnomalyError(f"{path}: cannot be used: {exc}") from None
    return ckpt


def _one_line(exc: BaseException) -> str:
    """The first line of an error, without terminal colour codes, at most 200 characters."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}"


def model_from_checkpoint(
    ckpt: dict[str, Any], device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """The trained model of a checkpoint, in eval mode on ``device``."""
    config = TrainConfig.from_dict(ckpt["config"])
    if "state_dict" not in ckpt:
        raise BioAnomalyError(f"a {config.model} checkpoint holds no network weights")
    if config.model == "memory":  # its descriptor network (validated: not filters)
        scoring = ckpt.get("scoring") or {}
        kind = scoring.get("descriptors", "filters")
        if kind == "filters":
            raise BioAnomalyError("a memory bank of filter descriptors holds no network")
        model = descriptor_network(kind, config.width, scoring.get("encoders", 1))
    else:
        model = models.build(config.model, len(ckpt["classes"]), config.tile,
                             config.width)  # fmt: skip
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped weights
        first = str(exc).splitlines()[:3]
        raise BioAnomalyError(
            f"the {config.model} weights do not fit the network they describe: {' '.join(first)}"
        ) from None
    return model.to(device).eval()


def _pretrained(path: Path) -> dict[str, Any]:
    """The contents of a file of ``pretrain``, read as data only, or a message why not."""
    if not path.is_file():
        raise BioAnomalyError(f"{path}: pretrained weights not found")
    ckpt = _read(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        raise BioAnomalyError(
            f"{path}: a trained model, not pretrained weights (to continue training it, "
            "use --resume; to pretrain, use napari-bioanomaly pretrain)"
        )
    if not isinstance(ckpt, dict) or ckpt.get("format") != PRETRAINED_FORMAT:
        raise BioAnomalyError(f"{path}: not a file of napari-bioanomaly pretrain")
    return ckpt


def pretrained_width(path: str | Path) -> int | None:
    """The U-Net width (``base_channels``) a file of ``pretrain`` was made at: what it
    says, or else the number of filters of its first convolution (files written by hand
    or by other tools often store the weights alone); ``None`` if neither is there."""
    ckpt = _pretrained(Path(path))
    width = ckpt.get("base_channels")
    if isinstance(width, int) and not isinstance(width, bool) and width > 0:
        return width
    state = ckpt.get("state_dict")
    first = state.get(FIRST_CONV) if isinstance(state, dict) else None
    if isinstance(first, torch.Tensor) and first.dim() == 4 and first.shape[0] > 0:
        return int(first.shape[0])
    return None


def load_pretrained(path: str | Path, model: torch.nn.Module) -> int:
    """Start ``model`` (a U-Net) from the pretrained file ``path`` (see :mod:`.pretrain`):
    every weight except the output head, whose classes the pretraining did not know.
    The file is read as data only and must match the network's width and depth.
    Returns how many tensors were loaded."""
    path = Path(path)
    ckpt = _pretrained(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise BioAnomalyError(f"{path}: state_dict: missing")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    for key, value in own.items():
        theirs = state.get(key)
        if not isinstance(theirs, torch.Tensor):
            raise BioAnomalyError(
                f"{path}: state_dict[{key!r}]: missing (pretrained for another network: "
                f"base_channels {_short(ckpt.get('base_channels'))})"
            )
        if theirs.shape != value.shape or not theirs.is_floating_point():
            raise BioAnomalyError(
                f"{path}: state_dict[{key!r}]: {tuple(theirs.shape)} {theirs.dtype}, the network "
                f"needs {tuple(value.shape)} (pretrained with base_channels "
                f"{_short(ckpt.get('base_channels'))}? leave base_channels unset to train at "
                "the width of the pretrained weights)"
            )
        if not bool(torch.isfinite(theirs).all()):
            raise BioAnomalyError(f"{path}: state_dict[{key!r}]: not finite")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    return len(own)
