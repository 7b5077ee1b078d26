"""The classic baseline: a random forest pixel classifier on multi-scale filter features.

As ilastik and APOC do: every pixel is described by Gaussian-smoothed
intensity, gradient magnitude (edges) and Hessian eigenvalues (texture) at
sigmas 0.7 to 16 px (:func:`skimage.feature.multiscale_basic_features`), and a
random forest (scikit-learn) learns the classes from pixels sampled inside the
annotated polygons and from the background. It trains in seconds on a CPU, so
users can see what deep learning adds on their data.

The forest is kept in the checkpoint as plain arrays (children, features,
thresholds, leaf class fractions), not as a pickle: checkpoints stay data
(``torch.load(..., weights_only=True)``) and the trees are rebuilt for
scikit-learn's fast prediction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.model import BioAnomalyError, Dataset
from ..core.operating import f1_score
from . import data
from .config import TrainConfig
from .events import SCORE_LABELS, TrainEvent, TrainResult
from .validation import operating_point, spread

SIGMA_MIN, SIGMA_MAX = 0.7, 16.0
#: Pixels sampled per image: up to this many anomalous and as many background pixels ...
SAMPLES_PER_IMAGE = 4000
#: ... and fewer with many images: the fit sees at most about this many pixels, read from
#: at most this many images (evenly spread), so its time is flat in the dataset's size.
MAX_SAMPLES, MAX_IMAGES = 300_000, 400
N_TREES, MAX_DEPTH, MIN_LEAF = 64, 16, 2


def features(norm: np.ndarray) -> np.ndarray:
    """Per-pixel features ``(rows, cols, 20)`` of a normalised image (float32)."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        norm.astype(np.float32, copy=False), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
    ).astype(np.float32, copy=False)


def sample_pixels(
    norm: np.ndarray,
    cls: np.ndarray,
    rng: np.random.Generator,
    per_image: int = SAMPLES_PER_IMAGE,
    per_class: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of up to ``per_image`` anomalous and as many background pixels.

    With ``per_class`` (rare-class oversampling) each anomaly class present gets up to
    ``per_image`` pixels of its own, so a small rare region is not outnumbered.
    """
    feats = features(norm)
    flat = cls.ravel()
    if per_class:
        groups = [np.flatnonzero(flat == c) for c in np.unique(flat[flat > 0])]
    else:
        groups = [np.flatnonzero(flat > 0)]
    picks = []
    for where in (*groups, np.flatnonzero(flat == 0)):
        if where.size:
            picks.append(rng.choice(where, min(where.size, per_image), replace=False))
    index = np.concatenate(picks)
    return feats.reshape(-1, feats.shape[-1])[index], cls.ravel()[index]


@dataclass
class Forest:
    """A trained forest as arrays ``(trees, nodes)``; ``value`` holds leaf class fractions."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray  # (trees, nodes, n_out)
    n_nodes: np.ndarray
    n_features: int

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_out: int,
        weights: np.ndarray | None = None,
        seed: int = 0,
    ) -> Forest:
        """Fit all :data:`N_TREES` trees at once (see :meth:`fit_steps` for progress)."""
        gen = cls.fit_steps(x, y, n_out, weights, seed)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    @classmethod
    def fit_steps(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_out: int,
        weights: np.ndarray | None = None,
        seed: int = 0,
        chunk: int = 8,
    ) -> Generator[int, None, Forest]:
        """Grow the forest ``chunk`` trees at a time, yielding the number grown so far
        (so a caller can show progress and stop between chunks); returns the forest."""
        from sklearn.ensemble import RandomForestClassifier

        rf = RandomForestClassifier(
            n_estimators=0,
            max_depth=MAX_DEPTH,
            min_samples_leaf=MIN_LEAF,
            n_jobs=-1,
            random_state=seed,
            warm_start=True,
        )
        for n in range(chunk, N_TREES + chunk, chunk):
            rf.set_params(n_estimators=min(n, N_TREES))
            rf.fit(x, y, sample_weight=None if weights is None else weights[y])
            yield min(n, N_TREES)
        trees = [e.tree_ for e in rf.estimators_]
        size = max(t.node_count for t in trees)
        shape = (len(trees), size)
        out = cls(
            np.full(shape, -1, np.int64),
            np.full(shape, -1, np.int64),
            np.zeros(shape, np.int64),
            np.zeros(shape, np.float64),
            np.zeros((*shape, n_out), np.float32),
            np.array([t.node_count for t in trees], np.int64),
            x.shape[1],
        )
        columns = rf.classes_.astype(int)
        for k, t in enumerate(trees):
            n = t.node_count
            out.left[k, :n], out.right[k, :n] = t.children_left, t.children_right
            out.feature[k, :n], out.threshold[k, :n] = t.feature, t.threshold
            v = t.value[:, 0, :]
            out.value[k, :n][:, columns] = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
        return out

    def state(self) -> dict[str, Any]:
        """Tensors and numbers only (``weights_only``-loadable)."""
        return {
            "left": torch.from_numpy(self.left),
            "right": torch.from_numpy(self.right),
            "feature": torch.from_numpy(self.feature),
            "threshold": torch.from_numpy(self.threshold),
            "value": torch.from_numpy(self.value),
            "n_nodes": torch.from_numpy(self.n_nodes),
            "n_features": self.n_features,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], n_out: int) -> Forest:
        """The forest of :meth:`state`, its arrays checked first (see
        :func:`.checkpoint.forest_arrays`: a malformed tree would crash or hang
        scikit-learn); ``n_out`` is the number of classes plus background."""
        from .checkpoint import forest_arrays

        a = forest_arrays(state, n_out)
        return cls(a["left"], a["right"], a["feature"], a["threshold"], a["value"],
                   a["n_nodes"], a["n_features"])  # fmt: skip

    def _sklearn_trees(self) -> list[Any]:
        """The trees rebuilt as scikit-learn ``Tree`` objects (for their fast C prediction)."""
        from sklearn.tree._tree import NODE_DTYPE, Tree

        n_out = self.value.shape[-1]
        trees = []
        for k, n in enumerate(self.n_nodes.tolist()):
            nodes = np.zeros(n, dtype=NODE_DTYPE)
            nodes["left_child"], nodes["right_child"] = self.left[k, :n], self.right[k, :n]
            nodes["feature"], nodes["threshold"] = self.feature[k, :n], self.threshold[k, :n]
            nodes["n_node_samples"] = 1
            nodes["weighted_n_node_samples"] = 1.0
            depth = np.zeros(n, np.int64)
            for i in range(n):  # children come after their parent
                for child in (nodes["left_child"][i], nodes["right_child"][i]):
                    if child >= 0:
                        depth[child] = depth[i] + 1
            tree = Tree(self.n_features, np.array([n_out], dtype=np.intp), 1)
            values = self.value[k, :n].astype(np.float64)[:, None, :]
            tree.__setstate__(
                {"max_depth": int(depth.max()), "node_count": n, "nodes": nodes, "values": values}
            )
            trees.append(tree)
        return trees

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(pixels, n_out)``: the mean of the trees' leaf fractions."""
        if x.shape[1] != self.n_features:
            raise BioAnomalyError(
                f"forest expects {self.n_features} features per pixel, got {x.shape[1]}"
            )
        if not hasattr(self, "_trees"):
            self._trees = self._sklearn_trees()
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((len(x), self.value.shape[-1]), dtype=np.float64)
        lock = threading.Lock()

        def add(tree: Any) -> None:  # scikit-learn's tree prediction releases the GIL
            p = tree.predict(x).reshape(len(x), -1)
            with lock:
                out[:] += p

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(add, self._trees))
        return (out / len(self._trees)).astype(np.float32)

    def probabilities(self, norm: np.ndarray) -> np.ndarray:
        """Per-class probabilities ``(n_out, rows, cols)`` of a normalised image."""
        feats = features(norm)
        rows, cols, n = feats.shape
        probs = self.predict_features(feats.reshape(-1, n))
        return probs.T.reshape(-1, rows, cols)


def train_forest(
    dataset: Dataset,
    config: TrainConfig,
    out: Path,
    classes: list[str],
    train_idx: list[int],
    val_idx: list[int],
    cancel: threading.Event,
) -> Generator[Any, None, Any]:
    """Sample pixels of the training images, fit the forest, validate, save the checkpoint.

    Yields the same events as neural training (one step per image read and per
    eight trees grown, one epoch at the end), stops between steps when ``cancel``
    is set, and returns a :class:`~.train.TrainResult`. The operating point
    (threshold, minimum area) is chosen on the validation images.
    """
    from . import train as tr

    rng = np.random.default_rng(config.seed)
    cache = data.ImageCache(dataset, config, size=1)
    chosen = spread(train_idx, MAX_IMAGES)
    per_image = int(np.clip(MAX_SAMPLES // (2 * max(len(chosen), 1)), 200, SAMPLES_PER_IMAGE))
    xs, ys = [], []
    n = len(chosen)
    total = n + N_TREES // 8  # progress: one step per image read, one per 8 trees grown
    for step, i in enumerate(chosen, start=1):
        if cancel.is_set():
            return TrainResult(None, tr.last_path(out), [], None, True, "cpu")
        norm = cache(i)
        cls, _ = data.rasterise(dataset.images[i], classes, norm.shape)
        x, y = sample_pixels(norm, cls, rng, per_image, per_class=config.class_balance)
        xs.append(x)
        ys.append(y)
        name = dataset.images[i].filename
        yield TrainEvent("step", 0, 1, step, total, message=f"features of {name}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    n_out = len(classes) + 1
    weights = None
    if config.class_weights == "balanced":
        weights = data.balanced_weights(np.bincount(y, minlength=n_out))
    yield TrainEvent("status", 0, 1, n, total, message=f"fitting {N_TREES} trees on "
                        f"{len(y):,} pixels of {n} images")  # fmt: skip
    growing = Forest.fit_steps(x, y, n_out, weights, config.seed)
    while True:
        if cancel.is_set():
            return TrainResult(None, tr.last_path(out), [], None, True, "cpu")
        try:
            grown = next(growing)
        except StopIteration as stop:
            forest = stop.value
            break
        yield TrainEvent("step", 0, 1, n + grown // 8, total, message=f"{grown} trees")
    point = yield from operating_point(
        config, None, classes, {"forest": forest}, dataset, val_idx, torch.device("cpu"), 0, 1,
        total,
    )  # fmt: skip
    val_f1 = point.f1
    val_score = val_iou = None
    if point.f1 is not None:
        pixel_f1 = point.pixel_f1 or 0.0
        val_score, val_iou = f1_score(point.f1, pixel_f1), pixel_f1 / (2 - pixel_f1)
    history = [{"epoch": 0, "loss": None, "val_loss": None, "val_iou": val_iou, "val_f1": val_f1,
                "val_score": val_score}]  # fmt: skip
    payload = tr.checkpoint_payload(config, classes, history, 0, val_score, weights)
    payload.update(samples=len(y), forest=forest.state(), best_label=SCORE_LABELS["forest"],
                   operating_point=point.to_dict())  # fmt: skip
    best = tr.save_checkpoint(out, payload)
    last = tr.save_checkpoint(tr.last_path(out), payload)
    yield TrainEvent("epoch", 0, 1, total, total, val_f1=val_f1, val_iou=val_iou)
    return TrainResult(best, last, history, val_score, False, "cpu", SCORE_LABELS["forest"],
                          point)
