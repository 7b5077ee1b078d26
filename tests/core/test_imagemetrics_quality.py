"""Image-level metrics against hand-computed values, and quality flags on constructed images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_bioanomaly.core.imagemetrics import (
    Confusion,
    average_precision,
    class_agreement,
    cohen_kappa,
    roc_auc,
    roc_curve,
)
from napari_bioanomaly.core.quality import check
from napari_bioanomaly.core.synthetic import SampleConfig, generate


def test_roc_auc_and_average_precision_by_hand():
    labels = [1, 0, 1, 0, 0, 1]
    scores = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    # pairs (positive, negative) ranked right: 0.9>0.8,0.3,0.2 (3); 0.7>0.3,0.2 (2); 0.1: 0 -> 5/9
    assert roc_auc(labels, scores) == pytest.approx(5 / 9)
    # precision at each positive: 1/1, 2/3, 3/6 -> mean = (1 + 2/3 + 1/2) / 3
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert roc_auc([1, 1], [0.1, 0.2]) != roc_auc([1, 1], [0.1, 0.2])  # NaN: one class only
    fpr, tpr, thr = roc_curve(labels, scores)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.isinf(thr[0])


def test_confusion_rates_and_kappa_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    c = Confusion.at(labels, scores, 0.5)
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 6, 1)
    assert (c.tpr, c.tnr, c.ppv, c.npv) == pytest.approx((2 / 3, 6 / 7, 2 / 3, 6 / 7))
    assert c.f1 == pytest.approx(4 / 6)
    # p_o = 8/10; p_e = (7*7 + 3*3)/100 = 0.58; kappa = 0.22/0.42
    assert c.kappa == pytest.approx(0.22 / 0.42)
    assert cohen_kappa([[5, 0], [0, 5]]) == 1.0 and cohen_kappa([[5, 5], [5, 5]]) == 0.0
    # every image anomalous and called so: agreement by chance alone, kappa undefined
    assert np.isnan(cohen_kappa([[0, 0], [0, 7]]))
    # no normal image: every precision is 1 whatever the scores, so no average precision
    assert np.isnan(average_precision([1, 1, 1], [0.9, 0.1, 0.5]))


def test_class_agreement_of_matched_regions():
    classes, m, kappa = class_agreement(
        ["dust", "dust", "hair", "hair"], ["dust", "hair", "hair", "hair"]
    )
    assert classes == ["dust", "hair"] and m.tolist() == [[1, 1], [0, 2]]
    assert kappa == pytest.approx(0.5)


def test_quality_flags_on_constructed_images():
    _, images = generate(SampleConfig(n_images=1, size=128, seed=0))
    good = (images[0] * 4095).astype(np.uint16)
    assert check(good).flags == ()
    assert check(np.full((64, 64), 1000, np.uint16)).flags == ("uniform",)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 255
    assert "binary" in check(mask).flags
    dark = np.zeros((64, 64), np.uint16)
    dark[::7, ::7] = 500
    assert "dim" in check(dark).flags
    bright = good.copy()
    bright[:, :40] = np.iinfo(np.uint16).max
    assert "saturated" in check(bright).flags
    for size in (128, 512):
        _, ims = generate(SampleConfig(n_images=1, size=size, seed=2))
        sharp = (ims[0] * 4095).astype(np.uint16)
        blurred = ndimage.gaussian_filter(sharp.astype(float), 3).astype(np.uint16)
        assert "out of focus" not in check(sharp).flags
        assert "out of focus" in check(blurred).flags


def test_qc_command_flags_bad_images(tmp_path, capsys):
    import json

    import tifffile

    from napari_bioanomaly.cli import main

    _, images = generate(SampleConfig(n_images=1, size=128, seed=0))
    tifffile.imwrite(tmp_path / "good.tif", (images[0] * 4095).astype(np.uint16))
    tifffile.imwrite(tmp_path / "blank.tif", np.full((64, 64), 7, np.uint16))
    mask = np.zeros((64, 64), np.uint8)
    mask[5:20, 5:20] = 255
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    (tmp_path / "broken.tif").write_bytes(b"nope")
    assert main(["qc", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    rows = {r["image"]: r["flags"] for r in json.loads(out)["rows"]}
    assert "4/4 " in err  # progress on stderr, the JSON alone on stdout
    assert rows == {
        "good.tif": [],
        "blank.tif": ["uniform"],
        "mask.tif": ["binary", "dim"],
        "broken.tif": ["unreadable"],
    }
    assert "no image has the file attribute" not in err  # the default, where none has it
    assert main(["qc", str(tmp_path), "--json", "--group-by", "plate"]) == 0
    assert "warning: no image has the file attribute 'plate': focus is judged among all" in (
        capsys.readouterr().err
    )


def test_evaluate_reports_image_level_scores(dataset_dir, tmp_path):
    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.evaluate import evaluate
    from napari_bioanomaly.core.model import Region

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    pred, _ = annotations.load(dataset_dir / "annotations.json")
    for im in pred.images:  # a perfect detector: score 0.9 on anomalous images only
        im.regions = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions]
    level = evaluate(gt, pred).image_level
    anomalous = sum(1 for im in gt.images if im.regions)
    assert level["anomalous"] == anomalous and level["roc_auc"] == 1.0 and level["kappa"] == 1.0
    assert (level["tp"], level["tn"], level["fp"], level["fn"]) == (anomalous, 6 - anomalous, 0, 0)


def test_out_of_focus_is_judged_among_the_images_checked_together(tmp_path, capsys):
    """Images soft by nature (all alike) are not out of focus among one another, as the
    fixed limit alone calls them; one blurred more than the others is, also in ``qc``."""
    import json

    import tifffile

    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core.quality import FOCUS_PEERS, FOCUS_SHARE, among_peers, focus_limit

    _, ims = generate(SampleConfig(n_images=FOCUS_PEERS + 2, size=128, seed=3))
    soft = [ndimage.gaussian_filter(im * 60000, 3).astype(np.uint16) for im in ims]
    reports = [check(x) for x in soft]
    assert all("out of focus" in r.flags for r in reports)  # each alone: the fixed limit
    judged, rule = among_peers(reports)
    assert not any("out of focus" in r.flags for r in judged if r is not None)
    assert f"median of the {len(soft)} images" in rule
    # the limit itself is said first, then how it was found (its median)
    limit, _ = focus_limit(reports)
    median = float(np.median([r.focus for r in reports]))
    assert rule == (f"focus below {limit:.3g} ({FOCUS_SHARE:g} x {median:.3g}, the median "
                    f"of the {len(soft)} images)")  # fmt: skip
    assert abs(limit - FOCUS_SHARE * median) < 1e-12
    blurred = ndimage.gaussian_filter(soft[0].astype(float), 8).astype(np.uint16)
    judged, _ = among_peers([*reports, check(blurred), None])  # None: an unreadable image
    assert ["out of focus" in r.flags for r in judged[:-1] if r is not None] == [False] * len(
        soft
    ) + [True]
    judged, rule = among_peers(reports[: FOCUS_PEERS - 1])  # too few to compare
    assert all("out of focus" in r.flags for r in judged if r is not None)
    assert rule == "focus below 0.01"
    for i, image in enumerate([*soft, blurred]):
        tifffile.imwrite(tmp_path / f"im_{i:02d}.tif", image)
    assert main(["qc", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    flagged = {r["image"]: r["flags"] for r in result["rows"] if r["flags"]}
    assert flagged == {f"im_{len(soft):02d}.tif": ["out of focus"]}
    assert "median" in result["out_of_focus"]


def test_out_of_focus_is_judged_within_each_cell_line(tmp_path, capsys):
    """Two cell lines of very different sharpness: a blurred image of the sharp one is
    out of focus among its own line, which one median of both would not say; ``qc``
    groups by the ``cell_line`` attribute (``--group-by`` another)."""
    import json

    import tifffile

    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core.annotations import save
    from napari_bioanomaly.core.model import Dataset, ImageRecord
    from napari_bioanomaly.core.quality import FOCUS_PEERS, among_peers, focus_groups

    _, ims = generate(SampleConfig(n_images=2 * FOCUS_PEERS, size=128, seed=4))
    sharp = [(im * 60000).astype(np.uint16) for im in ims[:FOCUS_PEERS]]
    soft = [ndimage.gaussian_filter(im * 60000, 3).astype(np.uint16) for im in ims[FOCUS_PEERS:]]
    blurred = ndimage.gaussian_filter(sharp[0].astype(float), 2).astype(np.uint16)
    images = [*sharp, *soft, blurred]
    lines = ["HeLa"] * len(sharp) + ["A549"] * len(soft) + ["HeLa"]
    reports = [check(x) for x in images]
    grouped, rule = among_peers(reports, lines)
    flagged = ["out of focus" in r.flags for r in grouped if r is not None]
    assert flagged == [False] * (len(images) - 1) + [True]
    assert "HeLa: focus below" in rule and "A549: focus below" in rule
    together, _ = among_peers(reports)
    assert "out of focus" not in together[-1].flags  # the soft line pulls the median down
    records = [
        ImageRecord(f"im_{i:02d}.tif", file_attributes={"line": line, "cell_line": line})
        for i, line in enumerate(lines)
    ]
    assert focus_groups(records) == lines and focus_groups([ImageRecord("a.tif")]) is None
    named = ImageRecord("b.tif", file_attributes={"cell_line": "HeLa"})
    assert focus_groups([named, ImageRecord("c.tif", file_attributes={"cell_line": ""})]) == [
        "HeLa",
        None,
    ]
    with pytest.raises(ValueError, match="groups for"):
        among_peers(reports, lines[:-1])
    for record, image in zip(records, images, strict=True):
        tifffile.imwrite(tmp_path / record.filename, image)
    save(Dataset(images=records, root=tmp_path), tmp_path / "annotations.json", "via-project")
    for extra in ([], ["--group-by", "line"]):
        assert main(["qc", str(tmp_path), "--json", *extra]) == 0
        result = json.loads(capsys.readouterr().out)
        assert {r["image"] for r in result["rows"] if r["flags"]} == {records[-1].filename}
    assert main(["qc", str(tmp_path), "--json", "--group-by", "plate"]) == 0  # none has one
    result = json.loads(capsys.readouterr().out)
    assert records[-1].filename not in {r["image"] for r in result["rows"] if r["flags"]}
