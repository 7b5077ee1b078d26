"""The operating-point sweep of ``benchmarks/real/bench_operating.py`` counts regions,
matches and pixels as the metrics define them, thresholded and grown from seeds."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(real_script):
    return real_script("bench_operating")


def _crack():
    """A 3 px wide crack whose map is bright in its middle and faint at its ends, and a
    faint speck elsewhere."""
    truth = np.zeros((64, 64), np.int32)
    truth[30:33, 4:60] = 1
    heat = np.zeros((64, 64))
    heat[30:33, 4:60] = 0.15  # faint ends ...
    heat[30:33, 20:44] = 0.6  # ... bright middle
    heat[5:9, 5:9] = 0.15  # a faint speck, 16 px
    return heat, truth


def test_thresholded_points_count_regions_matches_and_pixels(bench):
    heat, truth = _crack()
    sweep = bench.Sweep([heat], [truth])
    assert sweep.n_truth == 1 and sweep.truth_px == 3 * 56
    # at 0.1 the whole crack (168 px, IoU 1) and the speck: one of two regions matches
    n, f1_5, p, r, f1_25, f2, pixel = sweep.figures(0.1, 0.1, 0)
    assert (n, p, r) == (2, 0.5, 1.0)
    assert f1_5 == pytest.approx(2 / 3) and f2 == pytest.approx(5 * 0.5 / (4 * 0.5 + 1))
    assert f1_25 == pytest.approx(2 * 0.5 / 1.5)
    assert pixel == pytest.approx(2 * 168 / (168 + 16 + 168))
    # a 32 px floor drops the speck: everything right
    assert sweep.figures(0.1, 0.1, 32) == pytest.approx((1, 1, 1, 1, 1, 1, 1))
    # at 0.5 only the bright middle: IoU 72/168 < 0.5 but >= 0.25
    n, f1_5, p, r, _, _, pixel = sweep.figures(0.5, 0.5, 0)
    assert (n, f1_5, p, r) == (1, 0.0, 1.0, 1.0)
    assert pixel == pytest.approx(2 * 72 / (72 + 168))


def test_hysteresis_grows_the_faint_ends_from_a_bright_seed_and_drops_faint_specks(bench):
    heat, truth = _crack()
    sweep = bench.Sweep([heat], [truth])
    # seeds above 0.5, grown into everything above 0.1: the whole crack, not the speck
    assert sweep.figures(0.1, 0.5, 0) == pytest.approx((1, 1, 1, 1, 1, 1, 1))
    assert (0.1, 0.5, 0.0) in bench.points(True) and (0.1, 0.5, 0.0) not in bench.points(False)


def test_without_regions_the_figures_are_zero_not_an_error(bench):
    truth = np.zeros((16, 16), np.int32)
    truth[4:8, 4:8] = 1
    sweep = bench.Sweep([np.zeros((16, 16))], [truth])
    assert sweep.figures(0.5, 0.5, 0) == (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
