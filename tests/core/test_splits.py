"""Validation splits: stratified for the supervised models; every annotated image validates
for the unsupervised ones when most images are normal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord, Region
from napari_bioanomaly.core.splits import ANNOTATED_VALIDATION, validation_split

SQUARE = np.array([[1, 1], [1, 5], [5, 5], [5, 1]], float)


def _dataset(n_annotated: int, n_normal: int) -> Dataset:
    images = [
        ImageRecord(f"a{i}.png", (16, 16), regions=[Region(SQUARE, "dust")])
        for i in range(n_annotated)
    ]
    images += [ImageRecord(f"n{i}.png", (16, 16), no_anomaly=True) for i in range(n_normal)]
    return Dataset(images=images)


def _annotated(ds: Dataset, indices: list[int]) -> int:
    return sum(1 for i in indices if ds.images[i].regions)


def test_stratified_split_gives_both_sides_annotated_images():
    ds = _dataset(10, 40)
    train, val = validation_split(ds, 0.2, seed=3)
    assert sorted(train + val) == list(range(50)) and not set(train) & set(val)
    assert _annotated(ds, val) == 2 and _annotated(ds, train) == 8
    assert len(val) == 10


def test_models_of_normal_images_validate_on_every_annotated_image():
    ds = _dataset(10, 40)
    train, val = validation_split(ds, 0.2, seed=3, annotated_validate=True)
    assert _annotated(ds, val) == 10 and _annotated(ds, train) == 0
    assert len(val) - 10 == 8, "a fifth of the normal images validate too"
    assert len(train) == 32 and sorted(train + val) == list(range(50))
    # the normal images chosen are the stratified split's
    _, plain_val = validation_split(ds, 0.2, seed=3)
    assert set(val) - set(range(10)) == set(plain_val) - set(range(10))


def test_large_studies_validate_on_a_bounded_number_of_annotated_images():
    n = ANNOTATED_VALIDATION
    ds = _dataset(n + 50, 2 * n + 100)
    train, val = validation_split(ds, 0.2, seed=0, annotated_validate=True)
    assert _annotated(ds, val) == n and _annotated(ds, train) == 50
    ds = _dataset(6 * n, 12 * n)  # a fifth of the annotated images is more than the cap
    _, val = validation_split(ds, 0.2, seed=0, annotated_validate=True)
    assert _annotated(ds, val) == round(6 * n * 0.2)


def test_mostly_annotated_data_keeps_the_stratified_split():
    for n_annotated, n_normal in [(30, 10), (12, 0), (5, 1)]:
        ds = _dataset(n_annotated, n_normal)
        assert validation_split(ds, 0.2, seed=1, annotated_validate=True) == validation_split(
            ds, 0.2, seed=1
        )


def test_the_unsupervised_models_split_so_and_the_supervised_do_not():
    from napari_bioanomaly.ml.config import TrainConfig
    from napari_bioanomaly.ml.data import split

    ds = _dataset(6, 30)
    _, val_memory = split(ds, TrainConfig(model="memory"))
    _, val_unet = split(ds, TrainConfig(model="unet"))
    assert _annotated(ds, val_memory) == 6
    assert 1 <= _annotated(ds, val_unet) < 6
    _, no_val = split(ds, TrainConfig(model="memory", val_fraction=0.0))
    assert no_val == []


def test_validation_values_found_in_no_image_are_listed_beside_those_present():
    ds = Dataset(images=[ImageRecord(f"{v}.png", (16, 16), file_attributes={"cell_line": v})
                         for v in ("HeLa", "A549", "U2OS")])  # fmt: skip
    assert validation_split(ds, val_attribute="cell_line", val_values=["HeLa"]) == ([1, 2], [0])
    with pytest.raises(BioAnomalyError) as caught:
        validation_split(ds, val_attribute="cell_line", val_values=["Hela"])
    assert str(caught.value) == (
        "no image has cell_line in ['Hela'] for validation (the values of cell_line: A549, "
        "HeLa, U2OS); did you mean HeLa? (values must match exactly, case included)"
    )
    with pytest.raises(BioAnomalyError, match=r"\(the values of cell_line: A549, HeLa, U2OS\)$"):
        validation_split(ds, val_attribute="cell_line", val_values=["MCF7"])
    with pytest.raises(BioAnomalyError, match=r"no image has the file attribute 'plate'$"):
        validation_split(ds, val_attribute="plate", val_values=["P1"])
