"""Operating points: the threshold and minimum area with the best validation F1."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bioanomaly.core.chooser import PointChooser, choose_operating_point
from napari_bioanomaly.core.model import BioAnomalyError
from napari_bioanomaly.core.operating import (
    OperatingPoint,
    criterion_for,
    point_counts,
    thin_share,
)


def two_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Two true 10x10 squares; the map is 0.65 on them, 0.45 on the bridge joining them,
    and 0.9 on a 3x3 speck that is no anomaly."""
    truth = np.zeros((40, 60), np.int32)
    truth[10:20, 10:20] = 1
    truth[10:20, 30:40] = 2
    heat = np.zeros(truth.shape, np.float32)
    heat[truth > 0] = 0.65
    heat[14:16, 20:30] = 0.45  # at 0.4 this joins the two into one region
    heat[30:33, 50:53] = 0.9  # a speck
    return heat, truth


def test_counts_at_each_point_are_exact():
    heat, truth = two_blobs()
    c = point_counts(heat, truth, thresholds=(0.4, 0.5), min_areas=(0, 16))
    # at 0.4 the bridge merges both squares into one region (IoU 100/220 with each), so
    # no TP; the speck is a FP unless min area 16 removes it
    assert c[0, 0, :3].tolist() == [0, 2, 2] and c[0, 1, :3].tolist() == [0, 1, 2]
    assert c[1, 0, :3].tolist() == [2, 1, 0] and c[1, 1, :3].tolist() == [2, 0, 0]
    assert c[1, 1, 3:].tolist() == [200, 200]  # predicted pixels inside the truth, predicted


def test_counts_without_truth_are_those_of_the_matching():
    """Images without truth skip the matching: their counts are the false positives and
    predicted pixels the matching gives (checked against an image whose only truth is a
    pixel no threshold reaches)."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    heat = np.clip(ndimage.gaussian_filter(rng.random((96, 96)), 2) * 4 - 1.5, 0, 1)
    heat[0, 0] = 0.0
    thresholds, areas = (0.1, 0.3, 0.5, 0.7), (0, 4, 16, 64)
    normal = point_counts(heat, np.zeros(heat.shape, np.int32), thresholds, areas)
    speck = np.zeros(heat.shape, np.int32)
    speck[0, 0] = 1
    matched = point_counts(heat, speck, thresholds, areas)
    assert normal[..., 1].sum() > 20  # there were components to count
    assert np.array_equal(normal[..., [1, 4]], matched[..., [1, 4]])  # FP, predicted pixels
    assert not normal[..., [0, 2, 3]].any() and (matched[..., 2] == 1).all()


def test_choose_finds_threshold_and_min_area_that_separate_and_drop_specks():
    heat, truth = two_blobs()
    point = choose_operating_point([heat], [truth])
    assert point.source == "validation" and point.f1 == 1.0
    assert 0.45 <= point.threshold < 0.65 and 9 < point.min_area <= 100
    # the default point (0.5, 16 px) happens to be right here; a shifted map is not
    shifted = np.clip(heat + 0.3, 0, 1) * (heat > 0)
    moved = choose_operating_point([shifted], [truth])
    assert moved.f1 == 1.0 and moved.threshold >= 0.75


def test_a_chooser_takes_images_one_at_a_time_and_chooses_once_per_criterion():
    heat, truth = two_blobs()
    chooser = PointChooser()
    assert chooser.choose() == OperatingPoint()  # nothing added: the default point
    chooser.add(heat, truth)
    first = chooser.choose()
    assert first == choose_operating_point([heat], [truth]) and chooser.choose() is first
    assert chooser.choose("pixel").criterion == "pixel"
    # another image changes what is chosen from: chosen again
    shifted = np.clip(heat + 0.3, 0, 1) * (heat > 0)
    chooser.add(shifted, truth)
    assert chooser.choose() is not first
    assert chooser.choose() == choose_operating_point([heat, shifted], [truth, truth])
    assert chooser.choose().regions == 4  # the annotated regions it was measured on


def test_ties_go_to_pixel_f1_then_to_half():
    truth = np.zeros((20, 20), np.int32)
    truth[5:7, 2:18] = 1  # a thin crack: instance F1 stays 0 when found in pieces
    heat = np.zeros(truth.shape, np.float32)
    heat[5:7, 2:7] = 0.6
    heat[5:7, 8:13] = 0.8
    heat[5:7, 14:18] = 0.8
    point = choose_operating_point([heat], [truth], thresholds=(0.5, 0.7), min_areas=(0,))
    # F1 is 0 at both thresholds; 0.5 keeps 28 of the 32 crack pixels, 0.7 only 18
    assert point.f1 == 0 and point.threshold == 0.5
    assert point.pixel_f1 == pytest.approx(2 * 28 / (28 + 32))


def rims_and_ghosts() -> tuple[np.ndarray, np.ndarray]:
    """Two true 12x12 squares the map sees faintly (0.3) but for a bright 4x4 core
    (0.8), and two false squares of the same size, faint throughout (0.35): no single
    threshold keeps the true squares whole and drops the false ones."""
    truth = np.zeros((40, 80), np.int32)
    heat = np.zeros(truth.shape, np.float32)
    for k, c in enumerate((2, 22), start=1):
        truth[4:16, c : c + 12] = k
        heat[4:16, c : c + 12] = 0.3
        heat[8:12, c + 4 : c + 8] = 0.8
    for c in (42, 62):
        heat[24:36, c : c + 12] = 0.35
    return heat, truth


def test_a_minimum_peak_keeps_faint_rims_and_drops_faint_ghosts():
    from napari_bioanomaly.core.maps import regions_from_probabilities

    heat, truth = rims_and_ghosts()
    point = choose_operating_point([heat], [truth])
    # plain points reach F1 2/3 at best (the ghosts kept, or the squares cut to their cores)
    assert point.f1 == 1.0 and point.pixel_f1 == 1.0
    assert point.threshold == 0.2 and 0.35 < point.min_peak < 0.8
    assert "threshold 0.2, min peak" in point.describe()
    assert point.describe().endswith("(validation instance F1 1.000, pixel F1 1.000)")
    probs = np.stack([1 - heat, heat])
    kept = regions_from_probabilities(probs, ["a"], point.threshold, point.min_area,
                                      min_peak=point.min_peak)  # fmt: skip
    assert len(kept) == 2 and len(regions_from_probabilities(probs, ["a"], 0.2, 0)) == 4
    # where the plain point is as good, no minimum peak is chosen (two_blobs: F1 1.0)
    blobs, blob_truth = two_blobs()
    assert choose_operating_point([blobs], [blob_truth]).min_peak is None


def test_a_minimum_peak_must_earn_its_place_by_a_margin(monkeypatch):
    from napari_bioanomaly.core import chooser

    heat, truth = rims_and_ghosts()
    monkeypatch.setattr(chooser, "PEAK_MARGIN", 0.4)  # the gain here is 1.0 - 2/3
    point = choose_operating_point([heat], [truth])
    assert point.min_peak is None and point.f1 == pytest.approx(2 / 3, abs=1e-3)


def test_point_round_trip_and_validation():
    p = OperatingPoint(0.35, 64.0, 0.5, 0.6, "validation")
    assert OperatingPoint.from_dict(p.to_dict()) == p
    peaked = OperatingPoint(0.2, 16.0, min_peak=0.7)
    assert OperatingPoint.from_dict(peaked.to_dict()) == peaked
    assert OperatingPoint.from_dict({"threshold": 0.5, "min_area": 0}).min_peak is None
    for bad in (0.2, 0.1, 1.0):  # at or below the threshold, or not below 1
        with pytest.raises(BioAnomalyError, match="operating min_peak must be above"):
            OperatingPoint.from_dict({"threshold": 0.2, "min_area": 0, "min_peak": bad})
    assert OperatingPoint.from_dict(None) == OperatingPoint()
    counted = OperatingPoint(0.35, 64.0, 0.5, 0.6, "validation", regions=128)
    assert OperatingPoint.from_dict(counted.to_dict()) == counted
    assert counted.score == pytest.approx(0.55) and OperatingPoint().score is None
    assert OperatingPoint.from_dict({**counted.to_dict(), "regions": 128.0}).regions == 128
    assert counted.overridden(threshold=0.4).regions is None  # a user's point has no scores
    for bad in (
        {"threshold": 1.5, "min_area": 0},
        {"threshold": 0.5, "min_area": -1},
        {"threshold": "x", "min_area": 0},
        {"min_area": 0},
        [0.5],
        {"threshold": 0.5, "min_area": 0, "regions": -1},
        {"threshold": 0.5, "min_area": 0, "regions": 2.5},
        {"threshold": 0.5, "min_area": 0, "regions": "many"},
        {"threshold": 0.5, "min_area": 0, "regions": True},
    ):
        with pytest.raises(BioAnomalyError, match="operating"):
            OperatingPoint.from_dict(bad)


def test_label_numbers_with_gaps_are_not_instances():
    from napari_bioanomaly.core.metrics import instance_counts

    gt = np.zeros((10, 10), np.int32)
    gt[1:4, 1:4] = 7  # region 7 of an image, alone in this tile
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = 5  # components 1-4 were specks, removed
    c = instance_counts(gt, pred)
    assert (c.tp, c.fp, c.fn) == (1, 0, 0)


def two_classes() -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of background, ``patch`` and ``dot``: two true 12x12 patches with
    four false 5x5 patch specks, and four true 5x5 dots (``dot`` wins their pixels)."""
    truth = np.zeros((60, 80), np.int32)
    probs = np.zeros((3, *truth.shape), np.float32)
    probs[0] = 1.0
    for k, (r, c) in enumerate([(5, 5), (5, 40)], start=1):
        truth[r : r + 12, c : c + 12] = k
        probs[:, r : r + 12, c : c + 12] = np.array([0.2, 0.7, 0.1])[:, None, None]
    for r, c in [(30, 5), (30, 20), (30, 35), (30, 50)]:  # specks of "patch": false
        probs[:, r : r + 5, c : c + 5] = np.array([0.3, 0.6, 0.1])[:, None, None]
    for k, (r, c) in enumerate([(45, 5), (45, 20), (45, 35), (45, 50)], start=3):
        truth[r : r + 5, c : c + 5] = k
        probs[:, r : r + 5, c : c + 5] = np.array([0.3, 0.1, 0.6])[:, None, None]
    return probs, truth


def test_each_class_gets_the_minimum_area_it_needs():
    from napari_bioanomaly.ml.predict import regions_from_probabilities

    probs, truth = two_classes()
    # one floor for all: 25 px keeps 4 false specks, 32 px loses the 4 true dots
    common = choose_operating_point([probs], [truth], min_areas=(16, 32, 64))
    assert common.f1 is not None and common.f1 < 0.8 and not common.class_min_area
    point = choose_operating_point([probs], [truth], min_areas=(16, 32, 64),
                                   classes=["patch", "dot"])  # fmt: skip
    assert point.f1 == 1.0
    assert point.min_area_of("patch") > 25 and point.min_area_of("dot") <= 25
    assert point.describe(scores=False) == "threshold 0.5, min area 16 px (patch 32 px)"
    regions = regions_from_probabilities(
        probs,
        ["patch", "dot"],
        point.threshold,
        point.min_area,
        class_min_area=point.class_min_area,
    )
    assert sorted(r.label for r in regions) == ["dot"] * 4 + ["patch"] * 2
    # the point's own areas survive the checkpoint's dict, bad ones are refused
    assert OperatingPoint.from_dict(point.to_dict()) == point
    for bad in ({"dot": -1}, {"dot": "x"}, {3: 16}, [16]):
        with pytest.raises(BioAnomalyError, match="operating"):
            OperatingPoint.from_dict({"threshold": 0.5, "min_area": 0, "class_min_area": bad})


def collapsed_dots() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities of background, ``patch`` and ``dot``, instance and class label images:
    four true 12x12 patches (votes 0.6 patch, 0.2 dot) and four true 6x6 dots that the
    network votes ``patch`` too (0.4 patch, 0.3 dot: the dot class has collapsed, though
    its probability still ranks the dots above the patches)."""
    truth = np.zeros((50, 90), np.int32)
    classes = np.zeros(truth.shape, np.int64)
    probs = np.zeros((3, *truth.shape), np.float32)
    probs[0] = 1.0
    for k, c in enumerate((4, 24, 44, 64), start=1):
        truth[4:16, c : c + 12], classes[4:16, c : c + 12] = k, 1
        probs[:, 4:16, c : c + 12] = np.array([0.2, 0.6, 0.2])[:, None, None]
        truth[30:36, c : c + 6], classes[30:36, c : c + 6] = k + 4, 2
        probs[:, 30:36, c : c + 6] = np.array([0.3, 0.4, 0.3])[:, None, None]
    return probs, truth, classes


def test_vote_weights_undo_a_collapsed_class_on_validation():
    from napari_bioanomaly.core.maps import regions_from_probabilities

    probs, truth, classes = collapsed_dots()
    names = ["patch", "dot"]
    # without class label images (or with one class) the votes stay equal
    assert not choose_operating_point([probs], [truth], classes=names).vote_weights
    point = choose_operating_point([probs], [truth], classes=names, truth_classes=[classes])
    # the smallest change that votes every region right: patches count 0.71 (dots
    # 0.3 > 0.28, patches 0.42 > 0.2)
    assert point.vote_weights == {"patch": pytest.approx(2**-0.5)}
    assert point.describe(scores=False).endswith(", votes patch x0.71")
    regions = regions_from_probabilities(probs, names, point.threshold, point.min_area,
                                         vote_weights=point.vote_weights)  # fmt: skip
    assert sorted(r.label for r in regions) == ["dot"] * 4 + ["patch"] * 4
    assert (
        sorted(r.label for r in regions_from_probabilities(probs, names, 0.5, 0)) == ["patch"] * 8
    )
    assert OperatingPoint.from_dict(point.to_dict()) == point
    for bad in ({"dot": -1}, {"dot": 0}, {"dot": "x"}, {3: 2}, [2]):
        with pytest.raises(BioAnomalyError, match="operating vote"):
            OperatingPoint.from_dict({"threshold": 0.5, "min_area": 0, "vote_weights": bad})


def test_a_users_values_override_the_models_point_by_the_documented_rules():
    model = OperatingPoint(0.4, 64.0, 0.7, 0.8, "validation", {"dot": 16.0}, min_peak=0.9,
                           vote_weights={"dot": 2.0})  # fmt: skip
    assert model.overridden() is model
    area = model.overridden(min_area=32)  # one floor for every class, the rest the model's
    assert (area.min_area, area.class_min_area, area.min_peak) == (32, {}, 0.9)
    assert area.source == "user" and area.f1 is None and area.vote_weights == {"dot": 2.0}
    assert model.overridden(threshold=0.3).min_peak is None  # a user's threshold is plain
    assert model.overridden(threshold=0.3, min_peak=0.8).min_peak == 0.8
    with pytest.raises(BioAnomalyError, match=r"min_peak must be above the threshold 0\.95"):
        model.overridden(threshold=0.95, min_peak=0.9)


def test_votes_stay_equal_where_classes_are_voted_right():
    probs, truth = two_classes()
    classes = np.where(truth > 2, 2, np.where(truth > 0, 1, 0))
    point = choose_operating_point(
        [probs], [truth], min_areas=(16, 32, 64), classes=["patch", "dot"], truth_classes=[classes]
    )
    assert point.f1 == 1.0 and not point.vote_weights
    assert "votes" not in point.describe()


def test_component_rows_add_up_to_the_counts_of_each_point():
    from napari_bioanomaly.core.chooser import component_table

    heat, truth = two_blobs()
    counts = point_counts(heat, truth, thresholds=(0.4, 0.5), min_areas=(0, 16))
    for i, rows in enumerate(component_table(heat, truth, thresholds=(0.4, 0.5))):
        for j, area in enumerate((0, 16)):
            kept = rows[rows[:, 1] >= area]
            tp = kept[:, 2].sum()
            assert [tp, len(kept) - tp, 2 - tp, kept[:, 3].sum(), kept[:, 1].sum()] == counts[
                i, j
            ].tolist()


def crack_and_blob() -> tuple[np.ndarray, np.ndarray]:
    """A true crack (2 x 120 px) and a true 10x10 blob; the map finds the blob whole and
    the crack in ten 20 px pieces, as networks find thin structures."""
    truth = np.zeros((30, 140), np.int32)
    truth[5:7, 10:130] = 1
    truth[15:25, 60:70] = 2
    heat = np.zeros(truth.shape, np.float32)
    heat[15:25, 60:70] = 0.8
    for start in range(10, 130, 12):
        heat[5:7, start : start + 10] = 0.8
    return heat, truth


def test_thin_structures_are_told_from_blobs():
    _, truth = crack_and_blob()
    assert thin_share([truth]) == pytest.approx(240 / 340)  # the crack is elongated
    assert criterion_for([truth]) == "pixel"
    blobs = np.zeros((40, 40), np.int32)
    blobs[5:15, 5:15], blobs[20:30, 5:35], blobs[32:34, 5:35] = 1, 2, 3  # square, bar, line
    assert thin_share([blobs]) == pytest.approx(60 / 460)
    assert criterion_for([blobs]) == "mean"
    assert thin_share([np.zeros((5, 5), np.int32)]) == 0.0


def test_thin_structures_keep_their_fragments():
    heat, truth = crack_and_blob()
    # by the mean of instance and pixel F1, dropping the pieces wins (F1 0.667 for the
    # blob alone, pixel F1 0.45: 0.561 against 0.546 keeping them)...
    mean = choose_operating_point([heat], [truth], criterion="mean")
    assert mean.min_area >= 32 and mean.criterion == "mean"
    # ...which loses most of the crack; thin structures are judged by pixel F1
    point = choose_operating_point([heat], [truth])
    assert point.criterion == "pixel" and point.min_area <= 16
    assert point.pixel_f1 == pytest.approx(600 / 640)
    assert "chosen by pixel F1: thin structures" in point.describe()
    assert OperatingPoint.from_dict(point.to_dict()) == point
    assert OperatingPoint.from_dict({"threshold": 0.5, "min_area": 16}).criterion == "mean"
    with pytest.raises(BioAnomalyError, match="criterion"):
        OperatingPoint.from_dict({**point.to_dict(), "criterion": "instance"})


def test_a_chooser_scores_any_point_of_its_grid_as_it_scored_its_own():
    """score(point) gives a chosen point's own validation F1s back, with a minimum peak,
    class floors and vote weights; a threshold off the grid has no score."""
    from dataclasses import replace

    cases = [(rims_and_ghosts(), (), False), (two_classes(), ("patch", "dot"), False),
             (collapsed_dots(), ("patch", "dot"), True)]  # fmt: skip
    for data, names, voted in cases:
        chooser = PointChooser(classes=names)
        chooser.add(*data) if voted else chooser.add(*data[:2])
        point = chooser.choose()
        score, f1, pixel_f1 = chooser.score(point)
        assert (f1, pixel_f1) == pytest.approx((point.f1, point.pixel_f1))
        assert bool(point.vote_weights) is voted
        worse = chooser.score(replace(point, min_peak=None, class_min_area={}, vote_weights={}))
        assert worse[0] <= score
    assert chooser.score(replace(point, threshold=0.33)) is None
    assert PointChooser().score(OperatingPoint()) is None


def test_a_second_point_on_other_maps_must_beat_the_first_there(monkeypatch):
    """choose_against: on maps where the first point is as good, it stays (with its F1s
    there); where another point is better by the margin, that one."""
    from napari_bioanomaly.core import chooser as chooser_module

    heat, truth = rims_and_ghosts()
    first = OperatingPoint(0.2, 0.0, source="validation")  # keeps the ghosts: F1 2/3
    chooser = PointChooser()
    for _ in range(10):  # 20 true regions: enough to choose a second point on
        chooser.add(heat, truth)
    second = chooser.choose_against(first)
    assert second.min_peak is not None and second.f1 == 1.0  # beats it by 1/3
    monkeypatch.setattr(chooser_module, "AGAINST_MARGIN", 0.5)
    kept = chooser.choose_against(first)
    assert kept.describe(scores=False) == first.describe(scores=False)
    assert kept.f1 == pytest.approx(2 / 3, abs=1e-3) and kept.source == "validation"
    assert kept.regions == second.regions == 20
    monkeypatch.setattr(chooser_module, "AGAINST_MARGIN", 0.005)
    few = PointChooser()
    for _ in range(9):  # 18 regions: too few, however large the gain
        few.add(heat, truth)
    assert few.choose_against(first).describe(scores=False) == first.describe(scores=False)
