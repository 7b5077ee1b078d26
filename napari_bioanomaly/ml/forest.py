"""The classic baseline: a random forest pixel classifier on multi-scale filter features.

As ilastik and APOC do: every pixel is described by Gaussian-smoothed
intensity, gradient magnitude (edges) and Hessian eigenvalues (texture) at
sigmas 0.7 to 16 px (:func:`skimage.feature.multiscale_basic_features`), and a
random forest (scikit-learn) learns the classes from pixels sampled inside the
annotated polygons and from the background. By default three values of wider
context join them (:func:`.features.forest_features`): the line cue along 21 and
61 px segments, which tells a long crack or hair from texture grains a 16 px
filter cannot, and the local contrast to a 31 px median. It trains in minutes on a CPU, so
users can see what deep learning adds on their data.

By default two forests are stacked (auto-context, as ilastik's two-stage workflow): the
second sees each pixel's features and the first forest's anomaly probability around it
(:func:`.features.probability_features`), so a crack found in pieces, or a speck in a
clean neighbourhood, is judged by what surrounds it. The second forest learns from
probabilities the first forest gave on images it did not learn from (each half of the
training images is predicted by a forest of the other half; the two halves' trees are the
first stage at prediction), so it trusts them no more than they deserve.

The forest is kept in the checkpoint as plain arrays (children, features,
thresholds, leaf class fractions), not as a pickle: checkpoints stay data
(``torch.load(..., weights_only=True)``) and the trees are rebuilt for
scikit-learn's fast prediction.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.model import BioAnomalyError
from ..core.threads import cpu_threads
from .features import forest_features, probability_features

#: Pixels sampled per image: up to this many anomalous and as many background pixels ...
SAMPLES_PER_IMAGE = 4000
#: ... and fewer with many images: the fit sees at most about this many pixels, read from
#: at most this many images (evenly spread), so its time is flat in the dataset's size.
MAX_SAMPLES, MAX_IMAGES = 300_000, 400
N_TREES, MAX_DEPTH, MIN_LEAF = 64, 16, 2


def sample_pixels(
    norm: np.ndarray,
    cls: np.ndarray,
    rng: np.random.Generator,
    per_image: int = SAMPLES_PER_IMAGE,
    per_class: bool = False,
    feature_set: str = "context",
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of up to ``per_image`` anomalous and as many background pixels.

    With ``per_class`` (rare-class oversampling) each anomaly class present gets up to
    ``per_image`` pixels of its own, so a small rare region is not outnumbered.
    ``feature_set`` is one of :data:`~.features.FEATURE_SETS`.
    """
    feats = forest_features(norm, feature_set)
    index = sample_index(cls, rng, per_image, per_class)
    return feats.reshape(-1, feats.shape[-1])[index], cls.ravel()[index]


def sample_index(
    cls: np.ndarray, rng: np.random.Generator, per_image: int, per_class: bool = False
) -> np.ndarray:
    """Flat indices of the pixels :func:`sample_pixels` describes (anomalous, then background)."""
    flat = cls.ravel()
    if per_class:
        groups = [np.flatnonzero(flat == c) for c in np.unique(flat[flat > 0])]
    else:
        groups = [np.flatnonzero(flat > 0)]
    picks = []
    for where in (*groups, np.flatnonzero(flat == 0)):
        if where.size:
            picks.append(rng.choice(where, min(where.size, per_image), replace=False))
    return np.concatenate(picks)


def stage_features(norm: np.ndarray, feature_set: str, first: Forest | None = None) -> np.ndarray:
    """Per-pixel features ``(rows, cols, n)`` of a normalised image for a forest of
    ``feature_set``; for the second stage of ``first``, also the first stage's
    :func:`~.features.probability_features`."""
    feats = forest_features(norm, feature_set)
    if first is None:
        return feats
    return np.concatenate([feats, probability_features(first.anomaly(feats))], axis=-1)


@dataclass
class Forest:
    """A trained forest as arrays ``(trees, nodes)``; ``value`` holds leaf class fractions;
    ``feature_set`` names the per-pixel features it was fitted on (:data:`FEATURE_SETS`);
    ``first``: the first stage of a two-stage forest (this one then also sees the first's
    :func:`~.features.probability_features`)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray  # (trees, nodes, n_out)
    n_nodes: np.ndarray
    n_features: int
    feature_set: str = "filters"
    first: Forest | None = None

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_out: int,
        weights: np.ndarray | None = None,
        seed: int = 0,
        feature_set: str = "filters",
        first: Forest | None = None,
    ) -> Forest:
        """Fit all :data:`N_TREES` trees at once (see :meth:`fit_steps` for progress)."""
        gen = cls.fit_steps(x, y, n_out, weights, seed, feature_set=feature_set, first=first)
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
        feature_set: str = "filters",
        n_trees: int = N_TREES,
        first: Forest | None = None,
    ) -> Generator[int, None, Forest]:
        """Grow ``n_trees`` trees ``chunk`` at a time, yielding the number grown so far
        (so a caller can show progress and stop between chunks); returns the forest
        (the second stage of ``first`` when given)."""
        from sklearn.ensemble import RandomForestClassifier

        rf = RandomForestClassifier(
            n_estimators=0,
            max_depth=MAX_DEPTH,
            min_samples_leaf=MIN_LEAF,
            n_jobs=cpu_threads(),
            random_state=seed,
            warm_start=True,
        )
        for n in range(chunk, n_trees + chunk, chunk):
            rf.set_params(n_estimators=min(n, n_trees))
            rf.fit(x, y, sample_weight=None if weights is None else weights[y])
            yield min(n, n_trees)
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
            feature_set,
            first,
        )
        columns = rf.classes_.astype(int)
        for k, t in enumerate(trees):
            n = t.node_count
            out.left[k, :n], out.right[k, :n] = t.children_left, t.children_right
            out.feature[k, :n], out.threshold[k, :n] = t.feature, t.threshold
            v = t.value[:, 0, :]
            out.value[k, :n][:, columns] = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
        return out

    @classmethod
    def join(cls, parts: list[Forest]) -> Forest:
        """One forest of all the trees of ``parts`` (fitted on the same features)."""
        width = max(p.left.shape[1] for p in parts)

        def stack(name: str, fill: float) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            return np.concatenate([
                np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                       constant_values=fill)
                for a in arrays
            ])  # fmt: skip

        head = parts[0]
        return cls(stack("left", -1), stack("right", -1), stack("feature", 0),
                   stack("threshold", 0), stack("value", 0),
                   np.concatenate([p.n_nodes for p in parts]), head.n_features,
                   head.feature_set)  # fmt: skip

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
            "feature_set": self.feature_set,
            **({"first": self.first.state()} if self.first is not None else {}),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], n_out: int) -> Forest:
        """The forest of :meth:`state`, its arrays checked first (see
        :func:`.checkpoint.forest_arrays`: a malformed tree would crash or hang
        scikit-learn); ``n_out`` is the number of classes plus background."""
        from .checkpoint import forest_arrays

        return cls._from_arrays(forest_arrays(state, n_out))

    @classmethod
    def _from_arrays(cls, a: dict[str, Any]) -> Forest:
        first = cls._from_arrays(a["first"]) if a.get("first") else None
        return cls(a["left"], a["right"], a["feature"], a["threshold"], a["value"],
                   a["n_nodes"], a["n_features"], a["feature_set"], first)  # fmt: skip

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

        with ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
            list(pool.map(add, self._trees))
        return (out / len(self._trees)).astype(np.float32)

    def pixel_features(self, norm: np.ndarray) -> np.ndarray:
        """What this forest describes each pixel of a normalised image by
        (:func:`stage_features`)."""
        return stage_features(norm, self.feature_set, self.first)

    def anomaly(self, feats: np.ndarray) -> np.ndarray:
        """The probability ``(rows, cols)`` that each pixel is anomalous (any class) from
        this forest's features ``(rows, cols, n)``."""
        rows, cols, n = feats.shape
        return 1.0 - self.predict_features(feats.reshape(-1, n))[:, 0].reshape(rows, cols)

    def probabilities(self, norm: np.ndarray) -> np.ndarray:
        """Per-class probabilities ``(n_out, rows, cols)`` of a normalised image."""
        feats = self.pixel_features(norm)
        rows, cols, n = feats.shape
        probs = self.predict_features(feats.reshape(-1, n))
        return probs.T.reshape(-1, rows, cols)
