"""Outlines of a probability map as regions (core.maps): every region written covers a
pixel by the rasterisation the scores use, so ``evaluate`` leaves none of them out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_bioanomaly.core.evaluate import ImageCache
from napari_bioanomaly.core.maps import regions_from_probabilities
from napari_bioanomaly.core.model import ImageRecord
from napari_bioanomaly.core.runs import Spans


def specks() -> np.ndarray:
    """An anomaly map of isolated single pixels and blobs of two to four pixels (4-apart)."""
    heat = np.zeros((24, 40), np.float32)
    for r, c in [(1, 1), (1, 33), (5, 5), (10, 38), (22, 0), (23, 39), (15, 20)]:
        heat[r, c] = 0.9  # single pixels, at the edges and corners too
    heat[1, 8:10] = heat[5, 12:15] = 0.8  # two and three in a row
    heat[8:10, 1] = heat[12:15, 30] = 0.7  # two and three in a column
    heat[18:20, 8:10] = 0.9  # a 2x2 square
    heat[18, 14:16] = heat[19, 14] = 0.9  # an L of three
    heat[4, 24] = heat[5, 25] = 0.9  # two pixels touching at a corner: two components
    return heat


def check_covered(heat: np.ndarray, min_area: float = 0) -> None:
    """Each region covers a pixel of its own component by the scoring rasterisation, and
    every component is a region."""
    labels, n = ndimage.label(heat > 0.5)
    regions = regions_from_probabilities(np.stack([1 - heat, heat]), ["a"], 0.5, min_area)
    spans = Spans.of(regions, heat.shape)
    assert (spans.areas() > 0).all()
    assert len(regions) == n
    own = [set(labels[r, s:e].tolist()) - {0} for r, s, e in zip(spans.row, spans.start,
                                                                  spans.end, strict=True)]  # fmt: skip
    found = {k: set() for k in range(len(regions))}
    for k, blobs in zip(spans.region.tolist(), own, strict=True):
        found[k] |= blobs
    assert set().union(*found.values()) == set(range(1, n + 1))
    # and evaluate, shown them as predictions, leaves none out
    cache = ImageCache(ImageRecord("x.tif", heat.shape), ImageRecord("x.tif", heat.shape,
                                                                     regions=regions))  # fmt: skip
    assert len(cache.empty_scores) == 0 and len(cache.scores) == n
    assert cache.score().empty_pred == 0 and cache.score().n_pred == n


def test_specks_at_min_area_0_each_cover_a_pixel():
    # a pixel's outline simplified was a triangle of 0.25 px beside its centre: evaluate
    # left it out as covering no pixel
    check_covered(specks())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_speckled_map_gives_one_covering_region_per_component(seed):
    rng = np.random.default_rng(seed)
    heat = (rng.random((48, 64)) > 0.9).astype(np.float32)
    heat[20:30, 20:34] = 1.0  # and a large blob among them
    check_covered(heat)


def test_a_single_pixel_keeps_its_outline_and_large_regions_stay_simplified():
    heat = np.zeros((12, 20), np.float32)
    heat[3, 4] = 0.9
    heat[2:10, 8:18] = 0.9
    regions = regions_from_probabilities(np.stack([1 - heat, heat]), ["a"], 0.5, 0)
    speck, square = sorted(regions, key=lambda r: r.area)
    # the pixel's diamond through the midpoints of its sides, its centre inside
    assert sorted(map(tuple, speck.polygon.tolist())) == [(3.0, 4.5), (3.5, 4.0), (3.5, 5.0),
                                                          (4.0, 4.5)]  # fmt: skip
    assert speck.area == 0.5 and speck.score == pytest.approx(0.9)
    # the 8x10 block is still its simplified outline (corners cut: a few vertices)
    assert len(square.polygon) <= 8 and Spans.of([square], heat.shape).areas()[0] == 80


def test_a_minimum_area_still_drops_specks():
    heat = specks()
    regions = regions_from_probabilities(np.stack([1 - heat, heat]), ["a"], 0.5, 2)
    assert regions and (Spans.of(regions, heat.shape).areas() >= 2).all()  # no single pixel


@pytest.mark.parametrize(("side", "min_area"), [(4, 16), (6, 32), (1, 1), (2, 4)])
def test_the_minimum_area_counts_pixels_as_the_operating_point_sweep_does(side, min_area):
    """The sweep that chooses the minimum area keeps a blob of at least that many pixels;
    predict also dropped one whose simplified outline was smaller (a 4x4 blob's is 12.5 px:
    dropped at 16 px, which the chosen operating point had counted)."""
    heat = np.zeros((12, 12), np.float32)
    heat[3 : 3 + side, 3 : 3 + side] = 0.9
    regions = regions_from_probabilities(np.stack([1 - heat, heat]), ["a"], 0.5, min_area)
    assert len(regions) == 1 and Spans.of(regions, heat.shape).areas()[0] >= 1
    assert regions_from_probabilities(np.stack([1 - heat, heat]), ["a"], 0.5, side**2 + 1) == []
