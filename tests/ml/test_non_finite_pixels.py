"""Float images with NaN or infinite pixels (an ImageJ ratio image's 0/0, a registered
frame's NaN border): the rest of the image is used, the pixels take the median of the
others, and no NaN reaches a model, a score or a file (core.images.NON_FINITE)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tifffile
import torch

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError
from napari_bioanomaly.ml.checkpoint import load_checkpoint, save_checkpoint
from napari_bioanomaly.ml.config import TrainConfig
from napari_bioanomaly.ml.data import normalise
from napari_bioanomaly.ml.predict import Predictor, predict_dataset, run
from napari_bioanomaly.ml.train import train

from .test_train import drain

SQUARE = {
    "shape_attributes": {"name": "polygon", "all_points_x": [60, 100, 100, 60],
                         "all_points_y": [60, 60, 100, 100]},
    "region_attributes": {"class": "dust"},
}  # fmt: skip


def _poisoned(image: np.ndarray, value: float) -> np.ndarray:
    out = image.astype(np.float32)
    out[10:20, 10:20] = value
    out[30, 30] = -np.inf
    return out


def test_normalise_leaves_non_finite_pixels_out_and_gives_them_the_median():
    """One NaN pixel made the whole normalised image NaN."""
    rng = np.random.default_rng(0)
    clean = rng.normal(1000, 50, (80, 90)).astype(np.float32)
    for value in (np.nan, np.inf):
        norm = normalise(_poisoned(clean, value))
        assert np.isfinite(norm).all()
        plain = normalise(clean)
        assert np.allclose(norm[40:, 40:], plain[40:, 40:], atol=0.01)  # the rest as it was
        assert norm[15, 15] == pytest.approx(float(np.median(norm[40:, 40:])), abs=0.02)
    assert np.isfinite(normalise(np.full((8, 8), np.nan, np.float32))).all()
    huge = clean.astype(np.float64)
    huge[0, 0] = 1e300  # past float32's range
    assert np.isfinite(normalise(huge)).all()


def test_a_checkpoint_with_non_finite_parameters_is_not_written(tmp_path):
    out = tmp_path / "m.pt"
    payload = {"format": "x", "forest": {"first": {"threshold": np.array([0.5, np.nan])}}}
    with pytest.raises(BioAnomalyError, match=r"m\.pt: not written: forest\.first\.threshold "
                                              "holds NaN or infinite values"):  # fmt: skip
        save_checkpoint(out, payload)
    weights = {"state_dict": {"conv.weight": torch.tensor([1.0, float("inf")])}}
    with pytest.raises(BioAnomalyError, match=r"state_dict\.conv\.weight holds NaN"):
        save_checkpoint(out, weights)
    with pytest.raises(BioAnomalyError, match=r"scoring\.center holds NaN"):
        save_checkpoint(out, {"scoring": {"center": math.nan}})
    assert not out.exists()
    save_checkpoint(out, {"state_dict": {"w": torch.ones(2)}, "history": [{"loss": math.nan}]})
    assert out.exists()  # only the model's parameters are held to it


@pytest.fixture(scope="module")
def poisoned_dir(tmp_path_factory, sample_dir):
    """The sample dataset with two annotated float images holding NaN and inf pixels."""
    folder = tmp_path_factory.mktemp("poisoned") / "ds"
    shutil.copytree(sample_dir, folder)
    base = tifffile.imread(sorted(folder.glob("*.tif"))[0])
    path = folder / "annotations.json"
    project = json.loads(path.read_text())
    for name, value in (("z_nan.tif", np.nan), ("z_inf.tif", np.inf)):
        tifffile.imwrite(folder / name, _poisoned(base, value))
        entry = {"filename": name, "size": -1, "regions": [SQUARE], "file_attributes": {}}
        project["_via_img_metadata"][name + "-1"] = entry
        project["_via_image_id_list"].append(name + "-1")
    path.write_text(json.dumps(project))
    return folder


@pytest.mark.parametrize("kind", ["forest", "memory"])
def test_images_with_non_finite_pixels_train_a_model_that_predicts(poisoned_dir, tmp_path, kind):
    """Training reported success and wrote a model predict refused (forest: a NaN split
    threshold; memory: a NaN calibration centre); predict stopped at the first such
    image ('Out of range float values are not JSON compliant', naming no file)."""
    dataset, _ = annotations.load(poisoned_dir / "annotations.json")
    config = TrainConfig(model=kind, epochs=1, steps_per_epoch=2, tile=64, batch=2,
                         device="cpu", descriptors="filters", val_fraction=0.5)  # fmt: skip
    _, result = drain(train(dataset, config, tmp_path / f"{kind}.pt"))
    load_checkpoint(result.best)  # usable: validated as predict reads it
    events = []
    gen = predict_dataset(Predictor.load(result.best, "cpu"), dataset)
    out = run(_kept(gen, events))
    names = [im.filename for im in out.images]
    assert "z_nan.tif" in names and "z_inf.tif" in names
    assert not [e.message for e in events if e.message]
    notes = {e.image: e.note for e in events if e.note}
    assert "NaN or infinite pixels, predicted as the median" in notes["z_nan.tif"]
    for im in out.images:
        score = im.file_attributes.get("anomaly_score")
        assert score is None or math.isfinite(score)


def _kept(gen, events):
    """``gen``, its events kept in ``events``."""
    try:
        while True:
            events.append(next(gen))
            yield events[-1]
    except StopIteration as stop:
        return stop.value


def test_a_prediction_holding_nan_is_left_out_naming_the_image(sample_dir, poisoned_dir,
                                                                tmp_path, monkeypatch):  # fmt: skip
    """Whatever gives a NaN score, it is never written (JSON has none): the image is named
    and left out, and the others are predicted."""
    from napari_bioanomaly.ml import predict

    clean, _ = annotations.load(sample_dir / "annotations.json")
    config = TrainConfig(model="forest", epochs=1, steps_per_epoch=2, tile=64, batch=2,
                         device="cpu")  # fmt: skip
    _, result = drain(train(clean, config, tmp_path / "f.pt"))
    dataset, _ = annotations.load(poisoned_dir / "annotations.json")
    real = predict.predict_image

    def nan_score(predictor, pixels, **kw):
        probs, _ = real(predictor, pixels, **kw)
        return probs, math.nan if pixels.dtype == np.float32 else 0.5

    monkeypatch.setattr(predict, "predict_image", nan_score)
    events = []
    out = run(_kept(predict_dataset(Predictor.load(result.best, "cpu"), dataset), events))
    said = [e.message for e in events if e.message]
    assert len(said) == 2 and all("anomaly score is nan, not a finite number" in m for m in said)
    assert "z_nan.tif: not predicted" in said[-2]
    assert len(out.images) == len(dataset.images) - 2
