"""Anomaly maps learned from normal appearance only: a feature memory bank.

It needs no annotation; annotated anomalies, where there are some, are left out of
what is learned as normal. (An autoencoder's reconstruction error was the other map
until 2026-12; the bank mapped real anomalies far better: docs/benchmarks.md.)

``memory``
    A PatchCore-style memory bank (Roth et al. 2022) of patch descriptors of
    normal pixels, reduced to a coreset; a pixel's score is the distance of its
    descriptor to the nearest bank entry. Without pretrained networks the
    descriptors are the multi-scale filter responses of the classic baseline
    (intensity, edges, texture at sigmas 0.7-16 px) or mid-level features of U-Net
    encoders (:mod:`.descriptors`): several with random weights, or one trained here
    on the normal images; standardised. By default (``descriptors="auto"``) a bank
    of filter responses and one of random encoders are built and the annotated
    validation images choose (:mod:`.train_memory`; docs/benchmarks.md).

Raw scores are calibrated on normal pixels of held-out images into a
probability-like map: ``0.5`` at the 99.5th percentile of normal pixels, so the
usual 0.5 threshold of prediction turns the map into proposed regions. The image
score is the mean of the top-k raw pixel scores (k = 0.1% of the pixels, at
least 64; for the memory bank the share among :data:`TOP_FRACTIONS` that ranks the
annotated validation images best), calibrated the same way on normal images.

*Sharpening.* A patch descriptor sees tens of pixels, so a 4 px crack or hair gives a
blob three or four times its width. A sharpened map is the geometric mean of the
calibrated map and the image's local contrast (``|x - median_31(x)|``, calibrated the
same way on normal pixels): high where the neighbourhood is unusual *and* the pixel
stands out from it, so proposals follow the thin structure. Large uniform anomalies
(a stain wider than the median's disc) have little contrast inside, so the trainer
sharpens only where the validation images say it pays (:mod:`.train_memory`); the
image score stays that of the unsharpened map.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..core.model import BioAnomalyError
from ..core.reference import contrast_map, line_map
from .config import TOP_FRACTION, TOP_FRACTIONS
from .descriptors import EncoderEnsemble, PatchEncoder, describe
from .device import free_memory, is_oom
from .features import features

#: Memory bank size (coreset) and how many candidate patches it is chosen from.
BANK_SIZE = 4096
CANDIDATES = 40_000
#: How many neighbours of other images a candidate descriptor's outlier score is taken
#: over (:func:`outliers`), and among how many candidates at most they are looked for.
OUTLIER_NEIGHBOURS, OUTLIER_REFERENCE = 5, 20_000
#: Every how many pixels (in rows and columns) the memory bank scores a descriptor; the
#: map in between is interpolated.
QUERY_STRIDE = 4
#: Gaussian smoothing (pixels) of the raw maps.
SIGMA = {"memory": 4.0}
#: Pixel percentile of normal images that calibrates to 0.5. On held-out sample images
#: (memory bank) 99.5 outlined anomalies far better than 99.9 (pixel IoU 0.50 against
#: 0.19, recall at IoU 0.25 0.73 against 0.47) for a few more false proposals.
PIXEL_PERCENTILE = 99.5
#: Without annotated validation images to choose the image score's pooling by, a bank's
#: image score is the mean of this share of its calibrated map's top pixels, the map
#: joined by the line cue where it is (``scoring["image_from"] = "map"``,
#: :func:`map_image_score`): on the real sets trained without annotations it ranked
#: BSData's pitted images 0.75 instead of 0.65 (two seeds) and KolektorSDD's as before
#: (0.90); docs/benchmarks.md, "The image score without annotations".
MAP_TOP_FRACTION = 0.01
#: The least spread (in calibrated map units: 0.5 less the map at the median normal
#: pixel, :func:`calibrate`) of :func:`map_image_score`'s slope.
MAP_SPREAD = 0.48
#: The window (px) over which the memory bank's line cue is taken relative to its
#: surroundings (:func:`~..core.reference.line_map`'s ``window``); stored in the scoring as
#: ``line_window`` (checkpoints without it used the cue as it is). See docs/benchmarks.md,
#: "A line cue relative to its surroundings".
LINE_WINDOW = 61


def smooth(kind: str, raw: np.ndarray) -> np.ndarray:
    """A raw ``(H, W)`` map smoothed by the method's Gaussian (:data:`SIGMA`)."""
    return ndimage.gaussian_filter(raw.astype(np.float32, copy=False), SIGMA[kind], mode="nearest")


def top_k(scores: np.ndarray, valid: np.ndarray | None = None,
          fraction: float = TOP_FRACTION) -> float:  # fmt: skip
    """Image score: mean of the top ``fraction`` (at least 64) scores of the ``valid``
    pixels."""
    return top_ks(scores, valid, (fraction,))[0]


def top_ks(scores: np.ndarray, valid: np.ndarray | None = None,
           fractions: tuple[float, ...] = TOP_FRACTIONS) -> list[float]:  # fmt: skip
    """:func:`top_k` at each of ``fractions``, sorting the pixels once."""
    values = scores[valid] if valid is not None else scores.ravel()
    if values.size == 0:
        return [0.0] * len(fractions)
    ks = [min(values.size, max(64, int(f * values.size))) for f in fractions]
    top = np.sort(np.partition(values, values.size - max(ks))[values.size - max(ks) :])
    return [float(top[top.size - k :].mean()) for k in ks]


def calibrate(values: np.ndarray | float, center: float, threshold: float) -> np.ndarray:
    """Raw scores to ``(0, 1)``: 0.5 at ``threshold``, about 0.02 at ``center``.

    Below the threshold a logistic curve; above it ``1 - 0.5 / (1 + z / 2)``, which
    meets the logistic smoothly but approaches 1 slowly: strong anomalies keep their
    order instead of all saturating at 1.0 (rankings, hence AUROCs, are those of the
    raw scores).
    """
    scale = max(threshold - center, 1e-6) / 4.0
    z = np.maximum((np.asarray(values, dtype=np.float32) - threshold) / scale, -30.0)
    low = 1.0 / (1.0 + np.exp(-np.minimum(z, 0.0)))
    high = 1.0 - 0.5 / (1.0 + np.maximum(z, 0.0) / 2.0)
    return np.where(z <= 0, low, high).astype(np.float32)


def image_score(raw_score: float, scoring: dict[str, Any],
                line_score: float | None = None) -> float:  # fmt: skip
    """Calibrated image score: 0.5 at the highest score of normal calibration images.

    The slope is gentle (the spread of normal image scores, at least that of normal
    pixels) so that scores far from the threshold keep their order in 6 decimals. With
    the line cue (``line_score``, :func:`line_top`), the mean of the two standardised
    scores.
    """
    return _logistic(image_z(raw_score, scoring, line_score))


def map_image_score(heat: np.ndarray, scoring: dict[str, Any]) -> float:
    """The image score of a bank whose ``scoring["image_from"]`` is ``"map"``: the mean
    of the top ``image_top`` of its calibrated map (joined by the line cue where it is),
    0.5 at the highest of the calibration images' (``image_threshold``); the slope that
    of their spread, at least :data:`MAP_SPREAD`. What a bank trained without annotated
    validation images ranks images by (:data:`MAP_TOP_FRACTION`)."""
    return _logistic(map_z(top_k(heat, fraction=scoring["image_top"]), scoring))


def map_z(score: float, scoring: dict[str, Any]) -> float:
    """The standardised score :func:`map_image_score` is the logistic of."""
    threshold = scoring["image_threshold"]
    return (score - threshold) / max(threshold - scoring["image_center"], MAP_SPREAD)


def _logistic(z: float) -> float:
    return round(1.0 / (1.0 + math.exp(-max(min(z, 700.0), -700.0))), 6)


def image_z(raw_score: float, scoring: dict[str, Any], line_score: float | None = None) -> float:
    """The standardised image score :func:`image_score` is the logistic of (its ranking,
    unrounded)."""
    z = _image_z(raw_score, scoring, "")
    if line_score is not None:
        z = (z + _image_z(line_score, scoring, "line_")) / 2
    return z


def _image_z(score: float, scoring: dict[str, Any], prefix: str) -> float:
    spread = max(
        scoring[f"{prefix}image_threshold"] - scoring[f"{prefix}image_center"],
        scoring[f"{prefix}threshold"] - scoring[f"{prefix}center"],
        1e-9,
    )
    return (score - scoring[f"{prefix}image_threshold"]) / spread


def projected(features: torch.Tensor, gen: torch.Generator, dims: int = 32) -> torch.Tensor:
    """``features`` in a random ``dims``-dimensional projection (Johnson-Lindenstrauss: the
    distances between rows are kept approximately), for fast neighbour searches."""
    dims = min(dims, features.shape[1])
    return features @ torch.randn(features.shape[1], dims, generator=gen) / math.sqrt(dims)


def coreset(features: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Greedy k-center coreset (as PatchCore): ``size`` rows that cover ``features``.

    Distances are taken in a random 32-dimensional projection (:func:`projected`), which
    keeps the selection fast for tens of thousands of candidates.
    """
    n = len(features)
    if n <= size:
        return features.clone()
    gen = torch.Generator().manual_seed(seed)
    proj = projected(features, gen)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    dist = (proj - proj[chosen[0]]).pow(2).sum(1)
    for _ in range(size - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (proj - proj[i]).pow(2).sum(1))
    return features[chosen].clone()


def outliers(
    features: torch.Tensor,
    owners: np.ndarray,
    share: float,
    seed: int = 0,
    neighbours: int = OUTLIER_NEIGHBOURS,
) -> torch.Tensor:
    """Which candidate descriptors to leave out of a memory bank: the ``share`` of them
    farthest from what other images hold (boolean ``(N,)``).

    A candidate's outlier score is its mean distance to its ``neighbours`` nearest
    candidates of *other* images (``owners``: the image of each row), among at most
    :data:`OUTLIER_REFERENCE` of them, in a random projection (:func:`projected`).
    Anomalies nobody annotated (a folder learnt from as it is) are what few other images
    look like; the coreset, which keeps the most isolated candidates, would otherwise
    keep exactly them (as SoftPatch, Jiang et al. 2022, denoises PatchCore's patches).
    """
    n = len(features)
    drop = int(share * n)
    if drop < 1 or n <= neighbours:
        return torch.zeros(n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    proj = projected(features, gen)
    owner = torch.as_tensor(np.asarray(owners), dtype=torch.int64)
    ref = torch.randperm(n, generator=gen)[: min(n, OUTLIER_REFERENCE)]
    k = min(neighbours, len(ref) - 1)
    scores = []
    with torch.no_grad():
        for rows in torch.arange(n).split(1024):
            dist = torch.cdist(proj[rows], proj[ref])
            dist[owner[rows, None] == owner[None, ref]] = math.inf  # the same image's
            scores.append(dist.topk(k, dim=1, largest=False).values.mean(dim=1))
    score = torch.cat(scores)
    # rows with too few candidates of other images to compare with stay (infinite score)
    finite = torch.isfinite(score)
    drop = min(drop, int(finite.sum()))
    out = torch.zeros(n, dtype=torch.bool)
    if drop:
        out[torch.where(finite, score, -1.0).topk(drop).indices] = True
    return out


def memory_descriptors(
    norm: np.ndarray,
    stride: int,
    encoder: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The memory bank's descriptors of every ``stride``-th pixel: the ``encoder``'s
    (random or learnt, :mod:`.descriptors`), or filter responses without one. Out of GPU
    memory, the encoder's descriptors are computed on the CPU."""
    if encoder is None:
        return features(norm)[::stride, ::stride]
    encoder = cast(PatchEncoder | EncoderEnsemble, encoder)  # a memory bank's model
    try:
        return describe(norm, encoder, stride, device)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc) or torch.device(device).type == "cpu":
            raise
    free_memory(device)
    return describe(norm, copy.deepcopy(encoder).cpu(), stride, "cpu")


def memory_raw(
    norm: np.ndarray,
    scoring: dict[str, Any],
    device: torch.device | str = "cpu",
    encoder: nn.Module | None = None,
) -> np.ndarray:
    """Raw memory-bank scores ``(H, W)``: distance of each pixel's standardised descriptor
    to the nearest bank entry (computed every :data:`QUERY_STRIDE`-th pixel, then
    interpolated). The descriptors are the ``encoder``'s (:mod:`.descriptors`), or
    filter responses when the bank was built from those (``scoring["descriptors"] ==
    "filters"``, and checkpoints made before learnt descriptors)."""
    networked = scoring.get("descriptors", "filters") != "filters"
    if networked and encoder is None:
        raise ValueError(f"a memory bank of {scoring['descriptors']} descriptors needs its "
                         "encoder")  # fmt: skip
    stride = QUERY_STRIDE
    feats = memory_descriptors(norm, stride, encoder if networked else None, device)
    h, w, d = feats.shape
    mean, std = (np.asarray(scoring[k], dtype=np.float32) for k in ("mean", "std"))
    query = torch.from_numpy((feats.reshape(-1, d) - mean) / std)

    def nearest_on(dev: torch.device | str) -> torch.Tensor:
        bank = torch.as_tensor(scoring["bank"], dtype=torch.float32, device=dev)
        with torch.no_grad():
            return torch.cat(
                [torch.cdist(q.to(dev), bank).min(dim=1).values for q in query.split(8192)]
            )

    try:
        nearest = nearest_on(device)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc) or torch.device(device).type == "cpu":
            raise
        free_memory(device)
        nearest = nearest_on("cpu")  # out of GPU memory: the same distances on the CPU
    return upsample(nearest.reshape(h, w).float(), stride, norm.shape, centred=networked)


def upsample(small: torch.Tensor, stride: int, shape: tuple[int, ...],
             centred: bool) -> np.ndarray:  # fmt: skip
    """A map of every ``stride``-th pixel ``(h, w)`` interpolated (bilinear) to ``shape``.

    ``centred``: sample ``i`` describes the block of pixels ``stride * i`` to
    ``stride * (i + 1) - 1`` (the encoders' descriptors); otherwise pixel ``stride * i``
    itself (filter responses sampled ``[::stride]``), and beyond the last sample the
    map stays as it is there.
    """
    h, w = small.shape
    if centred:
        full = F.interpolate(small[None, None], size=(stride * h, stride * w),
                             mode="bilinear", align_corners=False)[0, 0]  # fmt: skip
    else:
        exact = F.interpolate(
            small[None, None],
            size=(stride * (h - 1) + 1, stride * (w - 1) + 1),
            mode="bilinear",
            align_corners=True,
        )
        full = F.pad(exact, (0, stride - 1, 0, stride - 1), mode="replicate")[0, 0]
    return full[: shape[0], : shape[1]].cpu().numpy()


def raw_map(
    kind: str,
    norm: np.ndarray,
    model: nn.Module | None,
    scoring: dict[str, Any],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The smoothed, uncalibrated anomaly map ``(H, W)`` of a normalised image."""
    if kind != "memory":
        raise BioAnomalyError(f"no anomaly map for model {kind!r}")
    return smooth(kind, memory_raw(norm, scoring, device, model))


def image_map(
    kind: str,
    norm: np.ndarray,
    model: nn.Module | None,
    scoring: dict[str, Any],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, float]:
    """Calibrated anomaly map ``(H, W)`` of a normalised image, and its calibrated score
    (with the line cue where ``scoring["lines"]``, sharpened where ``["sharpen"]``)."""
    raw = raw_map(kind, norm, model, scoring, device)
    heat = calibrate(raw, scoring["center"], scoring["threshold"])
    lines = None
    if scoring.get("lines"):
        lines = line_map(norm, window=scoring.get("line_window"))
        heat = with_lines(heat, lines, scoring)
    if scoring.get("image_from") == "map":
        score = map_image_score(heat, scoring)
    else:
        raw_score = top_k(raw, fraction=scoring.get("image_top", TOP_FRACTION))
        score = image_score(raw_score, scoring, None if lines is None else line_top(lines))
    if scoring.get("sharpen"):
        heat = sharpen(heat, norm, scoring)
    return heat, score


def with_lines(heat: np.ndarray, lines: np.ndarray, scoring: dict[str, Any]) -> np.ndarray:
    """A calibrated map with the line cue (:func:`~..core.reference.line_map`, calibrated
    on normal pixels: ``line_center``, ``line_threshold``): their mean, or with
    ``scoring["line_join"] == "rms"`` their root mean square. Long thin anomalies
    (scratches, hairs, cracks) a patch descriptor sees faintly stand out; joined by the
    root mean square, a spot the cue does not see stays above 0.5 where the bank's map
    is above about 0.71 (the mean needs 1.0: the join for the calibrated 0.5, when no
    annotated validation image chooses the point)."""
    cue = calibrate(lines, scoring["line_center"], scoring["line_threshold"])
    if scoring.get("line_join", "mean") == "rms":
        return np.sqrt((heat * heat + cue * cue) / 2, dtype=np.float32)
    return (heat + cue) / 2


def line_top(lines: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The line cue's part of the image score: the mean of its top 0.1% (thin lines)."""
    return top_k(lines, valid, TOP_FRACTION)


def sharpen(heat: np.ndarray, norm: np.ndarray, scoring: dict[str, Any]) -> np.ndarray:
    """A calibrated map sharpened by the image's calibrated local contrast (their
    geometric mean; see the module's docstring). ``scoring`` holds the contrast's
    calibration (``contrast_center``, ``contrast_threshold``: :func:`contrast_scoring`)."""
    contrast = calibrate(contrast_map(norm), scoring["contrast_center"],
                         scoring["contrast_threshold"])  # fmt: skip
    return np.sqrt(heat * contrast, dtype=np.float32)


def contrast_scoring(normal: np.ndarray) -> dict[str, float]:
    """The calibration of local contrast (:func:`~..core.reference.contrast_map`) from
    samples of its values on normal pixels, as :func:`calibrate` takes it: 0.5 at the
    :data:`PIXEL_PERCENTILE`, about 0.02 at the median."""
    return cue_scoring("contrast_", normal)


def cue_scoring(prefix: str, normal: np.ndarray) -> dict[str, float]:
    """``{prefix}center`` (median) and ``{prefix}threshold`` (:data:`PIXEL_PERCENTILE`) of
    a cue's values on normal pixels."""
    center = float(np.median(normal))
    return {f"{prefix}center": center,
            f"{prefix}threshold": max(float(np.percentile(normal, PIXEL_PERCENTILE)),
                                      center + 1e-6)}  # fmt: skip
