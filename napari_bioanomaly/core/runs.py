"""Regions as row runs, and exact pixel counts between them: intersections, IoU
matrices, areas of unions (overlapping instances included, which a label image cannot
hold), and merging of overlapping predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import rasterise_spans
from .model import Region


@dataclass(frozen=True)
class Spans:
    """The pixels of ``n`` regions as row runs: ``region[i]`` covers columns
    ``start[i]:end[i]`` of row ``row[i]`` (runs of one region never overlap)."""

    region: np.ndarray
    row: np.ndarray
    start: np.ndarray
    end: np.ndarray
    n: int

    @classmethod
    def of(cls, regions: Sequence[Region], shape: Sequence[int] | None = None) -> Spans:
        """Rasterise regions (pixel centres inside, clipped to ``shape`` if given)."""
        return cls(*rasterise_spans([r.polygon for r in regions], shape), len(regions))

    def areas(self) -> np.ndarray:
        """Pixel count of every region."""
        return np.bincount(self.region, weights=self.end - self.start, minlength=self.n)

    def subset(self, keep: np.ndarray) -> Spans:
        """The runs of the regions where ``keep`` (a boolean per region) is true."""
        sel = keep[self.region]
        return Spans(self.region[sel], self.row[sel], self.start[sel], self.end[sel], self.n)

    def relabel(self, labels: np.ndarray, n: int) -> Spans:
        """The same runs, region ``i`` renamed ``labels[i]`` (to merge regions)."""
        return Spans(labels[self.region], self.row, self.start, self.end, n)

    def normalised(self) -> Spans:
        """The same pixels with the overlapping runs of each region merged (disjoint runs).

        How it works: runs are laid on one line keyed by (region, row), sorted; a
        running maximum of their ends marks where a new disjoint run begins.
        """
        if not len(self.row):
            return self
        r0 = int(self.row.min())
        height = int(self.row.max()) - r0 + 1
        c0 = min(int(self.start.min()), 0)
        width = int(self.end.max()) - c0 + 1
        key = self.region * height + (self.row - r0)
        s = key * width + (self.start - c0)
        e = key * width + (self.end - c0)
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        reach = np.maximum.accumulate(e)
        new = np.ones(len(s), dtype=bool)
        new[1:] = s[1:] > reach[:-1]
        first = np.flatnonzero(new)
        last = np.concatenate([first[1:] - 1, [len(s) - 1]])
        seg_s, seg_e = s[first], reach[last]
        key = seg_s // width
        return Spans(
            key // height, key % height + r0, seg_s % width + c0, seg_e - key * width + c0, self.n
        )

    def dense(self, index: int, shape: Sequence[int]) -> np.ndarray:
        """Boolean image of one region (for tests and debugging)."""
        out = np.zeros(tuple(shape), dtype=bool)
        sel = self.region == index
        for r, s, e in zip(self.row[sel], self.start[sel], self.end[sel], strict=True):
            out[r, s:e] = True
        return out


def _ranges(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every index of the ranges ``first[i]:first[i] + counts[i]``, with the ``i`` of each,
    in order, without a Python loop."""
    owner = np.repeat(np.arange(len(first)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return first[owner] + offsets, owner


def intersections(a: Spans, b: Spans) -> np.ndarray:
    """Pixel counts of every pairwise intersection, ``(a.n, b.n)``.

    How it works: runs are joined on their row (``b`` sorted by row, each run of ``a``
    paired with the runs of ``b`` in the same row by two binary searches), and the
    overlaps of the pairs are summed per region pair. No image is ever allocated.
    """
    if not len(a.row) or not len(b.row):
        return np.zeros((a.n, b.n), dtype=np.int64)
    order = np.argsort(b.row, kind="stable")
    b_row, b_start, b_end, b_region = b.row[order], b.start[order], b.end[order], b.region[order]
    lo = np.searchsorted(b_row, a.row, "left")
    bi, ai = _ranges(lo, np.searchsorted(b_row, a.row, "right") - lo)
    overlap = np.minimum(a.end[ai], b_end[bi]) - np.maximum(a.start[ai], b_start[bi])
    hit = overlap > 0
    flat = a.region[ai[hit]] * b.n + b_region[bi[hit]]
    sums = np.bincount(flat, weights=overlap[hit], minlength=a.n * b.n)
    return sums.astype(np.int64).reshape(a.n, b.n)


def iou_matrix(gt: Spans, pred: Spans) -> np.ndarray:
    """Exact pixel IoU of every ground-truth region (rows) with every prediction (columns)."""
    inter = intersections(gt, pred).astype(np.float64)
    union = gt.areas()[:, None] + pred.areas()[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def union_area(*parts: Spans) -> int:
    """Pixels covered by any run of any of the given span sets.

    How it works: runs are laid on one line (row * width + column), sorted by start;
    a running maximum of the ends says how much of each run is new.
    """
    rows = np.concatenate([p.row for p in parts])
    if not len(rows):
        return 0
    starts = np.concatenate([p.start for p in parts])
    ends = np.concatenate([p.end for p in parts])
    width = int(ends.max()) - min(int(starts.min()), 0) + 2
    s = rows * width + starts
    e = rows * width + ends
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    before = np.concatenate([[np.iinfo(np.int64).min], reach[:-1]])
    return int(np.clip(e - np.maximum(s, before), 0, None).sum())


def _covered_segments(bounds: np.ndarray, starts: np.ndarray, ends: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The elementary segments ``bounds[m]:bounds[m + 1]`` each run ``starts[i]:ends[i]``
    covers (runs start and end on bounds): ``(segment, run)`` index pairs."""
    first = np.searchsorted(bounds, starts)
    return _ranges(first, np.searchsorted(bounds, ends) - first)


def prefix_union_counts(pred: Spans, rank: np.ndarray, gt: Spans) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts of the union of the predictions of rank below ``k``, and of its
    intersection with the union of ``gt``, for every ``k`` from 0 to ``rank.max() + 1``.

    ``rank[j]`` is prediction ``j``'s place in the order they are shown in (by score,
    highest first; equal scores share a rank), so entry ``k`` gives the counts of every
    score threshold that keeps ranks ``0..k-1``: all thresholds in one pass, instead of
    one union per threshold.

    How it works: every run of either set is laid on one line (row * width + column);
    the runs' ends cut the line into elementary segments, each inside or outside every
    run. A segment is first covered at the lowest rank of the predictions covering it, so
    the pixels first covered at each rank, summed, give the union of every prefix.
    """
    n_ranks = int(rank.max()) + 1 if len(rank) else 0
    zeros = np.zeros(n_ranks + 1, dtype=np.int64)
    if not len(pred.row):
        return zeros, zeros.copy()
    starts = np.concatenate([pred.start, gt.start])
    ends = np.concatenate([pred.end, gt.end])
    c0 = min(int(starts.min()), 0)
    width = int(ends.max()) - c0 + 2
    p_s = pred.row * width + (pred.start - c0)
    p_e = pred.row * width + (pred.end - c0)
    g_s = gt.row * width + (gt.start - c0)
    g_e = gt.row * width + (gt.end - c0)
    bounds = np.sort(np.concatenate([p_s, p_e, g_s, g_e]))  # np.unique hashes: slower here
    bounds = bounds[np.concatenate([[True], bounds[1:] != bounds[:-1]])]
    length = np.diff(bounds)
    first_rank = np.full(len(length), n_ranks, dtype=np.int64)  # n_ranks: no prediction
    segment, run = _covered_segments(bounds, p_s, p_e)
    np.minimum.at(first_rank, segment, rank[pred.region[run]])
    in_gt = np.zeros(len(length), dtype=bool)
    in_gt[_covered_segments(bounds, g_s, g_e)[0]] = True
    area = np.bincount(first_rank, weights=length, minlength=n_ranks + 1)[:n_ranks]
    inter = np.bincount(first_rank[in_gt], weights=length[in_gt], minlength=n_ranks + 1)[:n_ranks]
    return (np.concatenate([[0], np.cumsum(area)]).astype(np.int64),
            np.concatenate([[0], np.cumsum(inter)]).astype(np.int64))  # fmt: skip


def merge_labels(pred: Spans) -> tuple[np.ndarray, int]:
    """Group of every prediction when overlapping predictions are merged (transitively)."""
    parent = np.arange(pred.n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    inter = intersections(pred, pred)
    for i, j in zip(*np.nonzero(np.triu(inter, 1)), strict=True):
        parent[find(int(i))] = find(int(j))
    roots = np.array([find(i) for i in range(pred.n)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64), int(labels.max()) + 1 if pred.n else 0


def _merged_ious(gt: Spans, pred: Spans) -> np.ndarray:
    """IoU of each ground-truth region with each group of merged predictions."""
    labels, n = merge_labels(pred)
    if not n:
        return np.zeros((gt.n, 0))
    merged = pred.relabel(labels, n).normalised()
    return iou_matrix(gt, merged)
