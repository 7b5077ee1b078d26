"""The line cue (:func:`napari_bioanomaly.core.reference.line_map`): long thin structures
stand out of a grainy texture whatever their orientation and polarity; specks and grain
of the same contrast do not."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bioanomaly.core.reference import LINE_ANGLES, LINE_LENGTH, line_kernels, line_map


def _texture(seed=0, shape=(160, 160)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grain = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    return (0.5 + 0.08 * grain / grain.std()).astype(np.float32)


def _segment(shape, r0, c0, r1, c1):
    from skimage.draw import line

    mask = np.zeros(shape, bool)
    mask[line(r0, c0, r1, c1)] = True
    return mask


def test_kernels_average_along_one_segment_per_orientation():
    kernels = line_kernels()
    assert kernels.shape == (LINE_ANGLES, LINE_LENGTH, LINE_LENGTH)
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    c = LINE_LENGTH // 2
    assert np.count_nonzero(kernels[0]) == LINE_LENGTH and kernels[0][c].all()  # horizontal
    assert all(k[c, c] > 0 for k in kernels)  # every segment through the centre


@pytest.mark.parametrize("polarity", [-0.2, 0.2])
@pytest.mark.parametrize("ends", [(80, 20, 80, 140), (20, 30, 140, 120), (25, 75, 135, 85)])
def test_a_faint_line_stands_out_of_grain_and_specks_do_not(polarity, ends):
    image = _texture()
    line = _segment(image.shape, *ends)
    line |= np.roll(line, 1, axis=0) | np.roll(line, 1, axis=1)  # 2 px wide, 2.5 grain sd deep
    image[line] += polarity
    specks = np.zeros(image.shape, bool)
    for r, c in ((30, 130), (140, 20), (100, 150)):
        specks[r - 1 : r + 2, c - 1 : c + 2] = True
    image[specks] += polarity
    cue = line_map(image)
    assert cue.shape == image.shape and cue.dtype == np.float32 and (cue >= 0).all()
    from scipy import ndimage

    near = ndimage.binary_dilation(line, iterations=3)
    background = cue[~ndimage.binary_dilation(line | specks, iterations=12)]
    on_line = np.median(cue[line])
    # measured: 1.4-1.8 times the 99th percentile of the grain's cue
    assert on_line > 1.4 * np.percentile(background, 99), (on_line, np.percentile(background, 99))
    # specks of the same contrast are grain to it, not lines
    assert cue[specks].max() < min(0.75 * on_line, background.max()), cue[specks].max()
    assert cue[near].max() == cue.max()  # the strongest evidence is on the line


def test_plain_texture_gives_a_low_even_cue_up_to_the_borders():
    cue = line_map(_texture(1))
    inner, edge = cue[30:-30, 30:-30], np.concatenate([cue[:5].ravel(), cue[-5:].ravel()])
    assert edge.max() < 2 * inner.max()  # mirrored borders: no frame of false lines


def test_relative_to_its_surroundings_a_faint_line_in_a_smooth_area_counts_as_a_strong_one():
    """``window``: the difference of Gaussians divided by its local RMS. The same line,
    drawn faint across a smooth half and strong across a coarse half, gives about the same
    cue in both halves; as it is, the strong half dominates."""
    from scipy import ndimage

    from napari_bioanomaly.core.reference import local_normalised

    rng = np.random.default_rng(3)
    grain = ndimage.gaussian_filter(rng.standard_normal((160, 320)), 1.0)
    grain /= grain.std()
    image = (0.5 + np.where(np.arange(320) < 160, 0.01, 0.08) * grain).astype(np.float32)
    line = _segment(image.shape, 80, 10, 80, 310)
    line |= np.roll(line, 1, axis=0)
    image[line] -= np.where(np.arange(320) < 160, 0.03, 0.24)[np.nonzero(line)[1]]
    smooth_half, coarse_half = line[:, 40:120], line[:, 200:280]
    for window in (None, 61):
        cue = line_map(image, window=window)
        faint, strong = (
            np.median(cue[:, 40:120][smooth_half]),
            np.median(cue[:, 200:280][coarse_half]),
        )
        if window is None:
            assert faint < 0.25 * strong, (faint, strong)
        else:
            assert 0.7 < faint / strong < 1.4, (faint, strong)
            background = cue[~ndimage.binary_dilation(line, iterations=12)]
            assert faint > 1.4 * np.percentile(background, 99)
    # the floor keeps a flat area at zero, not noise
    flat = local_normalised(np.zeros((32, 32), np.float32), 61)
    assert not flat.any()
