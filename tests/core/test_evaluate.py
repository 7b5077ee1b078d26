"""Evaluation metrics: hand-built cases with known answers, and IoUs equal to pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.evaluate import (
    ImageCache,
    Spans,
    empty_note,
    empty_truth_note,
    evaluate,
    iou_matrix,
    paired,
    pairing_notes,
    score_image,
    union_area,
    unread_notes,
)
from napari_bioanomaly.core.model import Dataset, ImageRecord, Region


def sq(r, c, s, label="dust", score=None):
    poly = np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], float)
    return Region(poly, label, score=score, source="human" if score is None else "model")


def image(regions, name="a.png", shape=(100, 100), **attrs):
    return ImageRecord(name, shape=shape, regions=regions, file_attributes=attrs)


def test_runs_of_a_square_are_exact_and_unions_count_overlaps_once():
    spans = Spans.of([sq(2, 3, 4), sq(4, 5, 4)])
    assert spans.areas().tolist() == [16, 16]
    assert spans.dense(0, (10, 10))[2:6, 3:7].all() and spans.dense(0, (10, 10)).sum() == 16
    assert union_area(spans) == 16 + 16 - 4
    merged = spans.relabel(np.array([0, 0]), 1).normalised()
    assert merged.areas().tolist() == [28] and union_area(merged) == 28


def test_perfect_prediction():
    s = score_image(
        image([sq(10, 10, 10), sq(50, 50, 5)]),
        image([sq(10, 10, 10, score=0.9), sq(50, 50, 5, score=0.8)]),
    )
    assert (s.tp, s.fp, s.fn, s.f1, s.mean_iou, s.pixel_iou) == (2, 0, 0, 1.0, 1.0, 1.0)
    assert s.score == 0.9


def test_shifted_prediction_iou():
    s = score_image(image([sq(10, 10, 10)]), image([sq(10, 15, 10, score=1)]))
    assert s.tp == 0 and s.fp == 1 and s.fn == 1  # IoU 50/150 = 1/3 < 0.5
    assert s.pixel_iou == pytest.approx(50 / 150)
    s = score_image(image([sq(10, 10, 10)]), image([sq(10, 12, 10, score=1)]), iou_threshold=0.3)
    assert s.tp == 1 and s.mean_iou == pytest.approx(80 / 120)
    assert s.study_tp == 1 and s.study_fn == 0


def test_split_and_merged_predictions_and_the_study_scoring():
    gt = image([sq(10, 10, 20)])  # 400 px
    halves = image([sq(10, 10, 10, score=1), sq(20, 10, 10, score=1)])  # not overlapping
    s = score_image(gt, halves)
    assert (s.tp, s.fp, s.fn) == (0, 2, 1)  # each half has IoU 0.25
    assert (s.study_pred, s.study_tp, s.study_below, s.study_no_overlap, s.study_fn) == (
        2,
        0,
        2,
        0,
        1,
    )
    overlapping = image([sq(10, 10, 12, score=1), sq(18, 10, 12, score=1)])
    s = score_image(gt, overlapping)
    assert (s.tp, s.fp, s.fn) == (0, 2, 1)
    assert (s.study_pred, s.study_tp, s.study_fn) == (1, 1, 0)  # merged first: one TP
    merged = image([sq(10, 10, 20, score=1)])
    two_gt = image([sq(10, 10, 10), sq(20, 10, 10), sq(80, 80, 5)])
    s = score_image(two_gt, merged)
    assert (s.tp, s.fp, s.fn) == (0, 1, 3)
    assert s.study_no_overlap == 0 and s.study_below == 1


def test_empty_image_and_empty_prediction():
    s = score_image(image([]), image([]))
    assert (s.tp, s.fp, s.fn, s.f1, s.pixel_iou) == (0, 0, 0, 1.0, 1.0)
    s = score_image(image([sq(1, 1, 5)]), None)
    assert (s.tp, s.fp, s.fn, s.recall, s.f1) == (0, 0, 1, 0.0, 0.0)
    s = score_image(image([]), image([sq(1, 1, 5, score=0.3)]))
    assert (s.fp, s.precision, s.study_no_overlap) == (1, 0.0, 1)
    s = score_image(image([]), image([sq(1, 1, 5, score=0.3)]), score_threshold=0.5)
    assert s.n_pred == 0 and s.f1 == 1.0


def test_ious_equal_pycocotools_on_the_same_masks():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 30, endpoint=False)

    def blob(n):
        out = []
        for _ in range(n):
            c = rng.uniform(15, 85, 2)
            rad = rng.uniform(4, 14) * rng.uniform(0.7, 1.0, 30)
            out.append(
                Region(np.column_stack([c[0] + rad * np.sin(t), c[1] + rad * np.cos(t)]), "dust")
            )
        return out

    gt, pred = blob(12), blob(15)
    gm, pm = Spans.of(gt, (100, 100)), Spans.of(pred, (100, 100))

    def rle(spans, i):
        return mask_utils.encode(np.asfortranarray(spans.dense(i, (100, 100)).astype(np.uint8)))

    ref = mask_utils.iou(
        [rle(pm, i) for i in range(pm.n)], [rle(gm, i) for i in range(gm.n)], [0] * gm.n
    ).T
    ours = iou_matrix(gm, pm)
    assert ref.max() > 0.3  # the case has real overlaps
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_groups_and_exclusion():
    gt = Dataset(
        images=[
            image([sq(10, 10, 10)], "a.png", cell_line="HeLa"),
            image([sq(10, 10, 10)], "b.png", cell_line="A549"),
        ]
    )
    pred = Dataset(images=[image([sq(10, 10, 10, score=1)], "a.png"), image([], "b.png")])
    result = evaluate(gt, pred, group_by="cell_line")
    assert (result.summary["tp"], result.summary["fn"]) == (1, 1)
    assert result.groups["HeLa"]["f1"] == 1.0 and result.groups["A549"]["recall"] == 0.0
    result = evaluate(gt, pred, group_by="cell_line", exclude=["A549"])
    assert (result.summary["tp"], result.summary["fn"], result.f1) == (1, 0, 1.0)
    assert list(result.groups) == ["HeLa"] and result.excluded == ["A549"]


def _evaluate(gt, pred) -> list[str]:
    """The command line of ``evaluate --gt GT --pred PRED``."""
    return ["evaluate", "--gt", str(gt), "--pred", str(pred)]


def test_evaluate_cli_json_and_csv(tmp_path, capsys, dataset_dir):
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images:  # predictions: the ground truth with one region dropped per image
        im.regions = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions[1:]]
    annotations.save(gt, tmp_path / "pred.json", "via")
    argv = _evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")
    code = main([*argv, "--group-by", "cell_line", "--json", "--csv", str(tmp_path / "table.csv")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("tp", "fp", "fn", "precision", "recall", "f1", "pixel_iou", "images", "groups"):
        assert key in out
    n_gt = sum(row["n_gt"] for row in out["images"])
    assert (
        out["fp"] == 0
        and out["tp"] == n_gt - out["fn"]
        and out["fn"] == sum(1 for r in out["images"] if r["n_gt"])
    )
    assert set(out["groups"]) == {"HeLa", "U2OS", "A549"}
    lines = (tmp_path / "table.csv").read_text().splitlines()
    assert lines[0].startswith("image,cell_line,n_gt,n_pred,tp,fp,fn") and len(lines) == 1 + len(
        out["images"]
    )
    code = main(argv)
    assert code == 0 and "study: accuracy" in capsys.readouterr().out


def test_evaluate_writes_its_table_and_plot_over_no_input_nor_other_file(
    tmp_path, capsys, dataset_dir
):
    """--csv the ground truth replaced it with a table, --plot the predictions with a PNG,
    --csv an image of the dataset with a table (its one copy the .bak)."""
    gt = dataset_dir / "annotations.json"
    pred = tmp_path / "pred.json"
    pred.write_bytes(gt.read_bytes())
    image = next(dataset_dir.glob("*.tif"))
    before = {p: p.read_bytes() for p in (gt, pred, image)}
    argv = _evaluate(gt, pred)
    for option, out, said in [
        ("--csv", gt, "is the ground-truth file this command reads"),
        ("--plot", pred, "is the predictions file this command reads"),
        ("--csv", image, "exists and is no .csv or .tsv or .txt file"),
        ("--plot", gt, "is the ground-truth file"),
        ("--csv", tmp_path, "is a folder"),
    ]:
        assert main([*argv, option, str(out)]) == 2
        assert said in capsys.readouterr().err
    # a PNG of the dataset, and one file for both (named two ways)
    png = dataset_dir / "shot.png"
    png.write_bytes(b"\x89PNG a dataset image")
    project = json.loads(gt.read_text())
    entry = next(iter(project["_via_img_metadata"].values()))
    entry["filename"] = "shot.png"
    gt_png = tmp_path / "gt_png.json"
    project["_via_img_metadata"] = {"shot.png-1": entry}
    gt_png.write_text(json.dumps(project))
    argv_png = _evaluate(gt_png, pred)
    assert main([*argv_png, "--images", str(dataset_dir), "--plot", str(png)]) == 2
    assert "is the image this command reads" in capsys.readouterr().err
    assert png.read_bytes() == b"\x89PNG a dataset image"
    twice = ["--csv", str(tmp_path / "o.csv"), "--plot", str(tmp_path / "x" / ".." / "o.csv")]
    assert main([*argv, *twice]) == 2
    assert "one file for both" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (gt, pred, image)} == before
    assert not list(dataset_dir.glob("*.bak")) and not list(tmp_path.glob("*.bak"))
    assert main([*argv, "--csv", str(tmp_path / "t.csv")]) == 0
    assert f"per-image table: {tmp_path / 't.csv'}" in capsys.readouterr().err


def test_convert_over_an_existing_annotation_file_keeps_it_as_an_earlier_version(
    tmp_path, capsys, dataset_dir
):
    """A person's annotations given as convert's output by mistake: its one copy was the
    .bak, gone at the next write."""
    from napari_bioanomaly.core import history

    drawn = tmp_path / "drawn.json"
    drawn.write_text((dataset_dir / "annotations.json").read_text().replace("dust", "fiber"))
    mine = drawn.read_bytes()
    assert main(["convert", str(dataset_dir), "--to", "via", str(drawn)]) == 0
    assert "drawn.json replaced; what it held is kept as an earlier version" in (
        capsys.readouterr().err
    )
    assert main(["convert", str(dataset_dir), "--to", "coco", str(drawn)]) == 0
    assert mine in [v.read_bytes() for v in history.versions(drawn)]


def test_evaluate_csv_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, dataset_dir):
    """A WriteError (an OSError naming the file) was printed as "PATH: Not a directory",
    without the words atomic_write gives it; now as it is worded."""
    (tmp_path / "notes").write_text("a file where a folder should be")
    target = tmp_path / "notes" / "t.csv"
    argv = _evaluate(dataset_dir / "annotations.json", dataset_dir / "annotations.json")
    assert main([*argv, "--csv", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"napari-bioanomaly evaluate: error: {target}: cannot be written (")
    assert "\n" not in err and err.count(str(target)) == 1


def test_excluded_groups_are_in_no_output_of_evaluate(tmp_path, capsys, dataset_dir, monkeypatch):
    from napari_bioanomaly import plots
    from napari_bioanomaly.core.evaluate import ANOMALY_SCORE
    from napari_bioanomaly.core.imagemetrics import roc_auc

    gt, _ = annotations.load(dataset_dir / "annotations.json")
    for im in gt.images[::2]:  # normal images beside the anomalous ones
        im.regions = []
    annotations.save(gt, tmp_path / "gt.json", "via")
    for i, im in enumerate(gt.images):  # image scores that rank the images imperfectly
        im.regions = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions]
        im.file_attributes[ANOMALY_SCORE] = str((i * 7 % 10) / 10)
    annotations.save(gt, tmp_path / "pred.json", "via")
    plotted = {}
    monkeypatch.setattr(plots, "save_curves",
                        lambda path, labels, scores, *a: plotted.update(labels=labels, scores=scores))  # fmt: skip
    argv = [*_evaluate(tmp_path / "gt.json", tmp_path / "pred.json"), "--images",
            str(dataset_dir), "--group-by", "cell_line", "--exclude", "A549", "--csv", str(tmp_path / "t.csv"), "--plot",
            str(tmp_path / "c.png")]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    a549 = [im.filename for im in gt.images if im.file_attributes["cell_line"] == "A549"]
    kept = len(gt.images) - len(a549)
    assert a549 and out["n_images"] == out["image_level"]["images"] == kept
    # the per-image table and the plot hold the images scored, not the excluded ones
    assert len(out["images"]) == kept and out["excluded_images"] == a549
    assert {r["group"]["cell_line"] for r in out["images"]} == {"HeLa", "U2OS"}
    rows = (tmp_path / "t.csv").read_text().splitlines()[1:]
    assert len(rows) == kept and not [r for r in rows if ",A549," in r]
    assert len(plotted["labels"]) == kept and 0 < sum(plotted["labels"]) < kept
    assert roc_auc(plotted["labels"], plotted["scores"]) == pytest.approx(
        out["image_level"]["roc_auc"]
    )
    assert main(argv) == 0
    assert f"all (excluding cell_line A549: {len(a549)} images): {kept} images" in (
        capsys.readouterr().out
    )


def test_predictions_of_the_image_folder_pair_with_ground_truth_named_with_its_folder():
    """A model run on ``images/`` names its predictions ``003.png``; the annotation file
    beside that folder says ``images/003.png``: paired where the name without its folder
    is one image's on both sides, the same name first."""
    gt = Dataset(images=[image([sq(10, 10, 10)], name) for name in
                         ("images/a.png", "images\\b.png", "x/c.png", "y/c.png", "d.png")])  # fmt: skip
    pred = Dataset(images=[image([sq(10, 10, 10, score=0.9)], name) for name in
                           ("a.png", "b.png", "c.png", "d.png", "other/d.png", "e.png")])  # fmt: skip
    pairs = paired(gt, pred)
    assert {k: v.filename for k, v in pairs.items()} == {
        "images/a.png": "a.png", "images\\b.png": "b.png", "d.png": "d.png",
    }  # fmt: skip
    result = evaluate(gt, pred)
    assert (result.summary["tp"], result.summary["fn"]) == (3, 2)  # the two c.png: ambiguous
    assert result.unmatched_predictions == ["c.png", "e.png", "other/d.png"]


def test_evaluate_cli_refuses_predictions_of_other_images(tmp_path, capsys, dataset_dir):
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    other = Dataset(images=[image([sq(10, 10, 10, score=0.9)], f"other_{i}.png") for i in range(3)])
    annotations.save(other, tmp_path / "pred.json", "via")
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")) == 2
    err = capsys.readouterr().err
    assert "none of its 3 images is one of the" in err and "'other_0.png'" in err
    some = Dataset(images=[image([], im.filename, im.shape) for im in gt.images[:2]])
    annotations.save(some, tmp_path / "some.json", "via")
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "some.json")) == 0
    n = len(gt.images)
    assert f"{n - 2} of {n} ground-truth images are not in" in capsys.readouterr().err
    argv = _evaluate(dataset_dir / "annotations.json", tmp_path / "some.json")
    assert main([*argv, "--group-by", "plate", "--exclude", "P1"]) == 0
    err = capsys.readouterr().err
    assert "no ground-truth image has the file attribute 'plate': one group" in err
    assert "--exclude P1: no such plate (groups: (empty))" in err
    assert main([*argv, "--group-by", "cell_line", "--exclude", "HeLa,HeLA"]) == 0
    err = capsys.readouterr().err
    assert "--exclude HeLA: no such cell_line (groups: A549, HeLa, U2OS)" in err
    with pytest.raises(SystemExit):  # argparse's own error, exit status 2
        main([*_evaluate(dataset_dir / "annotations.json", tmp_path / "some.json"),
              "--iou", "1.5"])  # fmt: skip
    assert "an IoU is above 0 and at most 1" in capsys.readouterr().err
    for bad in ("5", "-0.1", "nan"):  # an image score is a probability
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--image-threshold", bad])
        assert stopped.value.code == 2
        assert f"--image-threshold: {bad}: an image score is from 0 to 1" in (
            capsys.readouterr().err
        )
    for bad in ("1.5", "-1"):
        with pytest.raises(SystemExit):
            main([*argv, "--score", bad])
        assert f"--score: {bad}: a region's score is from 0 to 1" in capsys.readouterr().err
    assert main([*argv, "--image-threshold", "1"]) == 0
    assert "at score 1: TPR" in capsys.readouterr().out


def test_cached_rescoring_equals_full_scoring_at_every_threshold():
    from napari_bioanomaly.core.evaluate import ImageCache

    rng = np.random.default_rng(3)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)

    def blobs(n, scored):
        out = []
        for _ in range(n):
            c, rad = rng.uniform(10, 90, 2), rng.uniform(3, 12)
            poly = np.column_stack([c[0] + rad * np.sin(t), c[1] + rad * np.cos(t)])
            out.append(
                Region(
                    poly,
                    "dust",
                    score=float(rng.uniform()) if scored else None,
                    source="model" if scored else "human",
                )
            )
        return out

    for _ in range(5):
        gt, pred = image(blobs(8, False)), image(blobs(12, True))
        cache = ImageCache(gt, pred)
        for iou_t in (0.1, 0.3, 0.5):
            for score_t in (0.0, 0.25, 0.5, 0.9):
                full, fast = score_image(gt, pred, iou_t, score_t), cache.score(iou_t, score_t)
                for name in ("n_gt", "n_pred", "tp", "fp", "fn", "inter_px", "union_px"):
                    assert getattr(full, name) == getattr(fast, name), (name, iou_t, score_t)
                assert fast.iou_sum == pytest.approx(full.iou_sum) and fast.score == full.score
                fn, fp = cache.unmatched(iou_t, score_t)
                assert (len(fn), len(fp)) == (full.fn, full.fp)


def test_pixel_counts_of_every_score_threshold_match_dense_masks():
    """One pass gives the union and intersection pixel counts of every score threshold
    (ranks shared by equal scores; polygons overlapping, touching the border, or missing
    the image), equal to those of boolean images and of one union per threshold."""
    from napari_bioanomaly.core.evaluate import ImageCache
    from napari_bioanomaly.core.geometry import rasterise_spans
    from napari_bioanomaly.core.runs import prefix_union_counts

    rng = np.random.default_rng(7)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 11))

    def polygons(n):
        out = []
        for _ in range(n):
            centre, radius = rng.uniform(-10, 90, 2), rng.uniform(2, 25)
            r = radius * rng.uniform(0.5, 1.2, len(angles))
            out.append(np.column_stack([centre[0] + r * np.sin(angles),
                                        centre[1] + r * np.cos(angles)]))  # fmt: skip
        return out

    shape = (80, 80)
    for trial in range(60):
        truth, predicted = polygons(int(rng.integers(0, 6))), polygons(int(rng.integers(0, 9)))
        scores = rng.choice([0.2, 0.5, 0.5, 0.8, 1.0], len(predicted))
        gt = Spans(*rasterise_spans(truth, shape), len(truth))
        pred = Spans(*rasterise_spans(predicted, shape), len(predicted))
        dense_gt = np.zeros(shape, bool)
        for i in range(gt.n):
            dense_gt |= gt.dense(i, shape)
        uniq = np.unique(scores)[::-1]
        rank = np.searchsorted(-uniq, -scores)
        area, inter = prefix_union_counts(pred, rank, gt)
        assert len(area) == len(inter) == len(uniq) + 1
        cache = ImageCache(image([Region(p, "dust") for p in truth], shape=shape),
                           image([Region(p, "dust", score=float(s), source="model")
                                  for p, s in zip(predicted, scores, strict=True)],
                                 shape=shape))  # fmt: skip
        for k, threshold in enumerate([1.1, *uniq]):  # k ranks kept, threshold keeping them
            kept = np.zeros(shape, bool)
            for i in np.flatnonzero(scores >= threshold):
                kept |= pred.dense(i, shape)
            expected = (int(kept.sum()), int((kept & dense_gt).sum()))
            assert (area[k], inter[k]) == expected, (trial, k)
            row = cache.score(0.5, threshold)
            assert (row.inter_px, row.union_px) == (expected[1], int((kept | dense_gt).sum()))
        if len(np.unique(cache.scores)) >= 2:  # the lowest scored alone: not a set a
            odd = cache._rank == cache._rank.max()  # score threshold keeps (of the drawn)
            shown = pred.subset(np.isin(np.arange(pred.n), cache.pred_index[odd]))
            assert cache._pixel_counts(odd) == (
                union_area(shown),
                union_area(gt) + union_area(shown) - union_area(gt, shown),
            )


def test_evaluate_cli_counts_what_class_agnostic_predictions_found_per_class(
    tmp_path, capsys, dataset_dir
):
    """Predictions of one class the ground truth does not have (the unsupervised models'
    "anomaly") get no class-wise lines of zeros: each ground-truth class says how many of
    its regions they found."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    truth = {label: n for label, n in gt.class_counts().items()}
    first = next(im for im in gt.images if im.regions)
    kept = first.regions[0]  # the only region predicted: the rest is missed
    for im in gt.images:
        im.regions = (
            [Region(kept.polygon, "anomaly", score=0.9, source="model")] if im is first else []
        )
    annotations.save(gt, tmp_path / "pred.json", "via")
    argv = _evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "the predictions name none of the ground truth's (a class-agnostic model)" in out
    assert "class anomaly" not in out and "precision 0.000 recall 0.000" not in out
    for label, n in truth.items():
        found = int(label == kept.label)
        assert f"class {label}: GT {n}, found {found} ({found / n:.3f})" in out
    # predictions with the ground truth's classes: the class-wise lines
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    annotations.save(gt, tmp_path / "same.json", "via")
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "same.json")) == 0
    out = capsys.readouterr().out
    assert "class-agnostic" not in out
    assert f"class {kept.label}: GT {truth[kept.label]}, predicted {truth[kept.label]}: " in out


def test_a_predicted_region_of_no_pixel_is_left_out_not_a_false_positive(
    tmp_path, capsys, dataset_dir
):
    """A sliver between pixel centres, or an outline outside the image, covers no pixel: it
    can match nothing, and counted as a false positive it lowered the precision of a
    model that found everything. Left out of the scores, and said, naming the image."""
    sliver = np.array([[10.1, 10.1], [10.1, 10.4], [10.4, 10.4], [10.4, 10.1]])
    outside = sq(200, 200, 10, score=0.2)  # the image is 100 x 100
    truth = image([sq(20, 20, 10)])
    pred = image([sq(20, 20, 10, score=0.9), Region(sliver, "dust", score=0.8, source="model"),
                  outside])  # fmt: skip
    row = score_image(truth, pred)
    assert (row.tp, row.fp, row.fn, row.n_pred, row.empty_pred) == (1, 0, 0, 1, 2)
    assert row.precision == 1.0 and row.study_pred == 1 and row.study_no_overlap == 0
    assert score_image(truth, pred, score_threshold=0.5).empty_pred == 1  # as the others
    result = evaluate(Dataset(images=[truth]), Dataset(images=[pred]))
    assert result.summary["empty_predictions"] == 2 and result.precision == 1.0
    assert empty_note(result.rows) == ("2 predicted regions cover no pixel (a sliver, or "
                                       "outside the image), left out of the scores: a.png (2)")  # fmt: skip
    cache = ImageCache(truth, pred)
    assert cache.unmatched() == ([], [])  # no false positive listed for the sliver either
    # the CLI says it, naming the predictions file and the image
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    name = gt.images[0].filename
    for im in gt.images:
        im.regions = [Region(r.polygon, r.label, score=0.9, source="model") for r in im.regions]
    gt.images[0].regions.append(Region(sliver, "dust", score=0.5, source="model"))
    annotations.save(gt, tmp_path / "pred.json", "via")
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")) == 0
    out, err = capsys.readouterr()
    assert f"warning: {tmp_path / 'pred.json'}: 1 predicted region covers no pixel" in err
    assert f"left out of the scores: {name} (1)" in err and "FP 0 " in out


def test_a_ground_truth_region_of_no_pixel_is_left_out_not_a_miss(tmp_path, capsys, dataset_dir):
    """A region cut to a 1x1 image (its outline between the pixel's centre and corner)
    covers no pixel: the image was both perfect (union 0 px, pixel IoU 1.0) and missing a
    region (FN 1). Left out of matching, as a prediction of no pixel is, and said."""
    corner = np.array([[0.7, 1.0], [1.0, 1.0], [1.0, 0.7], [0.7, 0.7]])
    one_px = image([Region(corner, "dust")], name="one_px.tif", shape=(1, 1))
    row = score_image(one_px, None)
    assert (row.n_gt, row.tp, row.fn, row.union_px, row.empty_gt) == (0, 0, 0, 0, 1)
    assert row.pixel_iou == 1.0 and row.recall == 1.0 and row.study_fn == 0
    # beside a region that covers pixels: that one is matched, listed, found as before
    sliver = Region(np.array([[10.1, 10.1], [10.1, 10.4], [10.4, 10.4], [10.4, 10.1]]), "dust")
    truth = image([sliver, sq(20, 20, 10), sq(60, 60, 10)])
    pred = image([sq(20, 20, 10, score=0.9)])
    row = score_image(truth, pred)
    assert (row.n_gt, row.tp, row.fn, row.empty_gt, row.pixel_iou) == (2, 1, 1, 1, 0.5)
    cache = ImageCache(truth, pred)
    assert cache.unmatched() == ([2], [])  # positions in the image's ground truth
    assert cache.matched()[0].tolist() == [1]
    result = evaluate(Dataset(images=[one_px, truth]), Dataset(images=[pred]))
    assert result.summary["empty_truth"] == 2 and result.summary["fn"] == 1
    assert empty_truth_note(result.rows) == (
        "2 ground-truth regions cover no pixel (cut to a tiny image, a sliver, or outside the "
        "image), left out of the scores (neither found nor missed): one_px.tif (1), a.png (1)"
    )
    # the CLI says it, naming the ground-truth file and the image
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    name = gt.images[0].filename
    annotations.save(gt, tmp_path / "pred.json", "via")
    gt.images[0].regions.append(sliver)
    annotations.save(gt, dataset_dir / "annotations.json", "via")
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")) == 0
    out, err = capsys.readouterr()
    assert f"warning: {dataset_dir / 'annotations.json'}: 1 ground-truth region covers" in err
    assert f"(neither found nor missed): {name} (1)" in err and " FN 0 " in out


def test_evaluate_says_images_not_found_apart_from_those_it_cannot_read(
    tmp_path, capsys, dataset_dir
):
    """An image that is there but cannot be read (a PNG named .tif) was counted among the
    images "not found", and no warning named any image."""
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    names = [im.filename for im in gt.images]
    annotations.save(gt, tmp_path / "pred.json", "via")
    (dataset_dir / names[0]).unlink()
    (dataset_dir / names[1]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not its format
    assert main(_evaluate(dataset_dir / "annotations.json", tmp_path / "pred.json")) == 0
    err = capsys.readouterr().err
    where = f"warning: {dataset_dir / 'annotations.json'}: "
    assert f"{where}1 image not found (its regions scored as they are, not clipped to the " \
           f"image): {names[0]}\n" in err  # fmt: skip
    unread = next(line for line in err.splitlines() if "cannot be read" in line)
    assert unread.startswith(f"{where}1 image cannot be read (its regions scored as they are")
    assert f": {names[1]} (cannot read image" in unread and names[0] not in unread
    for k in (2, 3, 4, 5):
        (dataset_dir / names[k]).unlink()
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    assert unread_notes(gt, limit=3)[0] == (
        "5 images not found (their regions scored as they are, not clipped to the image): "
        f"{names[0]}, {names[2]}, {names[3]} and 2 more"
    )


def test_evaluate_pairs_the_files_once(tmp_path, capsys, dataset_dir, monkeypatch):
    """The CLI paired ground truth and predictions to check them, then evaluate paired
    them again: once now, the same pairs."""
    from napari_bioanomaly.core import evaluate as evaluation

    calls = []
    pair = evaluation.paired
    monkeypatch.setattr(evaluation, "paired", lambda gt, pred: calls.append(1) or pair(gt, pred))
    argv = _evaluate(dataset_dir / "annotations.json", dataset_dir / "annotations.json")
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(calls) == 1 and out["fp"] == out["fn"] == 0 and out["tp"] == out["gt"] > 0
    gt, _ = annotations.load(dataset_dir / "annotations.json")
    assert evaluation.evaluate(gt, gt).f1 == 1.0 and len(calls) == 2  # alone: pairs itself


def test_pairing_notes_say_what_evaluate_left_unpaired_and_why():
    """The images of the pairing test above: the ground-truth images without predictions,
    the predictions of images not in the ground truth, and those paired with none because
    their name without its folder is several images' (the two ``c.png``), each said; what
    ``evaluate`` warns of and the Review widget says."""
    gt = Dataset(images=[image([sq(10, 10, 10)], name) for name in
                         ("images/a.png", "images\\b.png", "x/c.png", "y/c.png", "d.png")])  # fmt: skip
    pred = Dataset(images=[image([sq(10, 10, 10, score=0.9)], name) for name in
                           ("a.png", "b.png", "c.png", "d.png", "other/d.png", "e.png")])  # fmt: skip
    notes = pairing_notes(gt, pred, paired(gt, pred), "gt.json", "pred.json")
    assert notes == [
        "2 of 5 ground-truth images are not in pred.json: scored as predicting nothing there",
        "2 of 6 images of pred.json are not in gt.json: left out of the scores (e.png, "
        "other/d.png)",
        "1 image of pred.json paired with none of gt.json: several images have the name "
        "without its folder (x/c.png, y/c.png ~ c.png); left out of the scores",
    ]
    some = ["images/a.png", "d.png"]  # those under review: both paired
    assert pairing_notes(gt, pred, paired(gt, pred), "gt.json", "pred.json", some) == notes[1:]
    assert pairing_notes(gt, gt, paired(gt, gt), "gt.json", "gt.json") == []
    other = Dataset(images=[image([], "z.png")])
    assert pairing_notes(gt, other, paired(gt, other), "gt.json", "p.json") == [
        "p.json: none of its 1 image is one of the 5 of gt.json (e.g. 'z.png' and "
        "'images/a.png'): predictions of other images?"
    ]
    assert pairing_notes(gt, Dataset(), {}, "gt.json", "p.json") == ["p.json: holds no images"]
