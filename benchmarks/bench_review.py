"""Review widget speed: opening predictions for review, and a slider move, on N images.

Run under a display (``xvfb-run -a python benchmarks/bench_review.py [--images 500]``).
Images of 1080x1080 px (blank PNGs: the review reads only their sizes) with 20
ground-truth and 25 predicted regions each (40-vertex polygons, 18 of the predictions
near a true region), as ``bench_evaluate.py``, the predictions' scores spread over
0.2-1.0. Each figure is printed beside a reference
measured in the same process:

- open: ``ReviewWidget.open`` (read both files, score every image, fill the table and the
  summary, show the first image), against the core alone reading both files and building
  the same per-image scores (:class:`~napari_bioanomaly.core.evaluate.ImageCache`);
- slider: one move of the IoU threshold slider, of the score threshold slider to a value
  not seen before, and to one seen before (every image rescored, the summary and the
  table refilled, events processed), against the core rescoring the same images at the
  same thresholds (for a new score value, on scores built afresh: their first scoring
  computes the pixel counts of every score threshold, once per image);
- tabs: what follows once the slider rests (the per-class tab: ``ReviewSession.report``
  and its table);
- open in the background (what the Open button and the end of a prediction do): the
  time until the review is shown, and the longest time napari's event loop was held
  meanwhile (a 10 ms timer's longest gap), against the same for :meth:`open`, which
  holds it the whole time (as every open did before 2026-12-07);
- corrections: one rejection (the predictions file written) and one accept (the ground
  truth autosaved), against the core encoding and writing the whole predictions file
  (what each rejection cost before 2026-12-07).

Target: a slider move under 100 ms for 500 images (it should feel immediate).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluate import SIZE, regions  # the same polygons as the evaluation bench


def make_dataset(folder: Path, n: int) -> None:
    """``n`` blank 1080 px PNGs, a ground-truth VIA project and a predictions file."""
    from skimage.io import imsave

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.model import Dataset, ImageRecord

    rng = np.random.default_rng(0)
    blank = np.zeros((SIZE, SIZE), np.uint8)
    gt = Dataset(classes=["dust"], root=folder)
    pred = Dataset(classes=["dust"], root=folder)
    for i in range(n):
        name = f"img_{i:05d}.png"
        imsave(folder / name, blank, check_contrast=False)
        truth = regions(rng, 20)
        gt.images.append(ImageRecord(name, regions=truth,
                                     file_attributes={"cell_line": "AB"[i % 2]}))  # fmt: skip
        predicted = regions(rng, 25, near=truth[:18])
        for region in predicted:  # scores spread, so that the score slider changes what is shown
            region.score = float(rng.uniform(0.2, 1.0))
        pred.images.append(ImageRecord(name, regions=predicted))
    annotations.save(gt, folder / "annotations.json", "via-project")
    annotations.save(pred, folder / "predictions.json", "via")


def settle(app, seconds: float = 0.0) -> None:
    end = time.perf_counter() + seconds
    app.processEvents()
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--moves", type=int, default=11)
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.evaluate import ImageCache
    from napari_bioanomaly.widgets.review import ReviewWidget

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, napari {napari.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_dataset(folder, args.images)
        print(f"{args.images} images of {SIZE}x{SIZE}, 20 true and 25 predicted regions each")
        app = QApplication.instance() or QApplication([])
        viewer = napari.Viewer(show=True)
        widget = ReviewWidget(viewer)
        viewer.window.add_dock_widget(widget, area="right")
        settle(app, 0.5)

        start = time.perf_counter()
        assert widget.open(folder / "annotations.json", folder / "predictions.json")
        settle(app)
        opened = time.perf_counter() - start
        assert len(widget.model.rows) == args.images, len(widget.model.rows)
        start = time.perf_counter()
        gt, _ = annotations.load(folder / "annotations.json", read_images=False)
        pred, _ = annotations.load(folder / "predictions.json", read_images=False)
        for im in gt.images:  # the widget reads each image's size from its file
            im.shape = (SIZE, SIZE)
        caches = [ImageCache(g, p, ["cell_line"]) for g, p in zip(gt.images, pred.images,
                                                                    strict=True)]  # fmt: skip
        built = time.perf_counter() - start
        print(f"open for review: {opened:.2f} s; reference (the core reading both files and "
              f"scoring every image): {built:.2f} s ({opened / built:.1f}x)")  # fmt: skip

        # the IoU slider back and forth; the score slider to a new value each move (its
        # first visit of a value counts unions, a value seen before does not)
        moves = [("IoU", widget.iou_slider, 40 if i % 2 else 60) for i in range(args.moves)]
        moves += [("score", widget.score_slider, 30 + 3 * i) for i in range(args.moves)]
        moves += [("score, a value seen before", widget.score_slider, 30 + 3 * i)
                  for i in range(args.moves)]  # fmt: skip
        timed: dict[str, tuple[list[float], list[float]]] = {}
        for what, slider, value in moves:
            start = time.perf_counter()
            slider.setValue(value)
            app.processEvents()
            moved = time.perf_counter() - start
            iou, score = widget.iou_slider.value() / 100, widget.score_slider.value() / 100
            fresh = [ImageCache(g, p, ["cell_line"]) for g, p in
                     zip(gt.images, pred.images, strict=True)] if what == "score" else caches  # fmt: skip
            start = time.perf_counter()
            for cache in fresh:
                cache.score(iou, score)
            core = time.perf_counter() - start
            if fresh is not caches:  # the reference's own scores see the value too
                for cache in caches:
                    cache.score(iou, score)
            timed.setdefault(what, ([], []))
            timed[what][0].append(moved)
            timed[what][1].append(core)
            settle(app, 0.4)  # the tabs' timer fires while things rest
        for what, (slider_s, core_s) in timed.items():
            slider_ms = statistics.median(slider_s) * 1e3
            core_ms = statistics.median(core_s) * 1e3
            print(f"{what} slider move (rescore, summary, {args.images}-row table): median "
                  f"{slider_ms:.0f} ms (max {max(slider_s) * 1e3:.0f}); reference (the core "
                  f"rescoring, {'built afresh' if what == 'score' else 'as the widget'}): "
                  f"{core_ms:.0f} ms ({slider_ms / core_ms:.1f}x; target < 100 ms for 500 "
                  "images)")  # fmt: skip
        widget.tabs.setCurrentIndex(2)  # the per-class tab, refreshed once the sliders rest
        tab_s = []
        for _ in range(5):
            start = time.perf_counter()
            widget.tabs.refresh_visible()
            app.processEvents()
            tab_s.append(time.perf_counter() - start)
        tab_ms = statistics.median(tab_s) * 1e3
        print(f"per-class tab after the slider rests: median {tab_ms:.0f} ms")

        held, shown = open_in_background(app, widget, folder)
        print(f"open in the background: shown after {shown:.2f} s, event loop held at most "
              f"{held * 1e3:.0f} ms; reference (open in one go, as above): held {opened:.2f} s "
              f"({opened / held:.0f}x shorter)")  # fmt: skip
        corrections(app, widget, folder, args.images)
        viewer.close()


def open_in_background(app, widget, folder: Path) -> tuple[float, float]:
    """``(longest event-loop gap, seconds until shown)`` of a background open."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    settle(app, 0.2)
    start = time.perf_counter()
    ticks.append(start)
    widget.open_in_background(folder / "annotations.json", folder / "predictions.json")
    while widget.opening:
        app.processEvents()
        time.sleep(0.002)
    shown = time.perf_counter() - start
    settle(app, 0.1)
    timer.stop()
    gaps = np.diff([t for t in ticks if t >= start])
    return float(gaps.max()), shown


def corrections(app, widget, folder: Path, n: int) -> None:
    """Median time of a rejection and of an accept, beside the whole file written."""
    from napari_bioanomaly.core.fileio import atomic_write
    from napari_bioanomaly.core.jsonio import dumps
    from napari_bioanomaly.core.via import to_via_export

    timed: dict[str, list[float]] = {"reject": [], "accept": [], "reference": []}
    widget.score_slider.setValue(0)  # every prediction shown: the last 7 of each image match
    app.processEvents()  # no true region (see make_dataset): accepted, they are added
    for k in range(5):
        widget.annotator.show((k * 7) % n)
        app.processEvents()
        for what in ("accept", "reject"):
            widget.pred_layer.selected_data = {20 if what == "accept" else 0}
            start = time.perf_counter()
            done = widget.reject_selected() if what == "reject" else widget.accept_selected()
            app.processEvents()
            timed[what].append(time.perf_counter() - start)
            assert done == 1, (what, done, widget.summary.text())
        start = time.perf_counter()
        raw = dumps(to_via_export(widget.review.predictions), check_finite=False)
        atomic_write(folder / "whole.json", raw)
        timed["reference"].append(time.perf_counter() - start)
    ref = statistics.median(timed["reference"])
    for what in ("reject", "accept"):
        took = statistics.median(timed[what])
        written = "predictions" if what == "reject" else "ground truth"
        print(f"{what} one prediction ({written} file written, table refilled): median "
              f"{took:.2f} s; "
              f"reference (the whole predictions file encoded and written, what a rejection "
              f"cost before): {ref:.2f} s ({took / ref:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
