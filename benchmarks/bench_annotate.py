"""Annotate widget speed: first image of a 2,000-image dataset, image switch, one edit + autosave.

Run under a display (``xvfb-run -a python benchmarks/bench_annotate.py``). Each figure is
printed with a reference measured in the same process:

- open: ``AnnotateWidget.open_path`` on 2,000 uint16 1080x1080 TIFFs until the first image is
  on screen, against reading one image with tifffile and adding it to the viewer;
- switch: ``step(+1)`` (save the current image, read the next, show it and its regions),
  against tifffile read + ``layer.data = pixels``;
- edit: add one polygon to an image that has 500 (our handler reads the regions back and
  autosaves the 2,000-image VIA project), against the same ``add_polygons`` on a plain
  Shapes layer.

Targets: open <= 2 s, switch <= 300 ms.

``--open FILE`` measures opening an annotation file only (e.g. a real 32 MB VIA project of
2,000 images): the Open buttons' read in the background (the longest time napari's event
loop was held, and the time until the dataset is shown), against ``open_path`` reading it on
the GUI thread (held the whole time), each in a new viewer of the same process.

``--save FILE`` measures, without napari, what the first save of an opened annotation file
costs on napari's thread (a copy of FILE is written, FILE never): one image edited and
saved, with the entries encoded ahead by the opening worker (``encode_ahead``) against a
session that encodes them all at that save; and a class renamed on the images that hold it,
then saved, against every image encoded again (what a rename did before).
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


def make_dataset(folder: Path, n: int, size: int) -> None:
    """``n`` distinct uncompressed uint16 TIFFs and a VIA project with a few regions each."""
    import tifffile

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.model import Dataset, ImageRecord, Region

    rng = np.random.default_rng(0)
    base = rng.integers(800, 3000, (size, size), dtype=np.uint16)
    dataset = Dataset(classes=["dust", "scratch"], root=folder)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    for i in range(n):
        name = f"img_{i:05d}.tif"
        base[0, 0] = i  # distinct files
        tifffile.imwrite(folder / name, base)
        regions = []
        for _ in range(3):
            c = rng.uniform(100, size - 100, 2)
            poly = np.column_stack([c[0] + 30 * np.sin(t), c[1] + 30 * np.cos(t)])
            regions.append(Region(poly, "dust"))
        dataset.images.append(
            ImageRecord(name, regions=regions, file_attributes={"cell_line": "HeLa"})
        )
    annotations.save(dataset, folder / "annotations.json", "via-project")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--open", type=Path, default=None, metavar="FILE",
                        help="only measure opening this annotation file")  # fmt: skip
    parser.add_argument("--save", type=Path, default=None, metavar="FILE",
                        help="only measure the first save and a rename of a copy of FILE")  # fmt: skip
    args = parser.parse_args()
    if args.open is not None:
        open_only(args.open)
        return
    if args.save is not None:
        first_save(args.save)
        return

    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_bioanomaly.widgets.annotate import AnnotateWidget

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        folder = Path(tmp) / "ds"
        folder.mkdir()
        start = time.perf_counter()
        make_dataset(folder, args.images, args.size)
        print(
            f"made {args.images} images of {args.size}x{args.size} uint16 in {time.perf_counter() - start:.0f} s"
        )
        viewer = napari.Viewer()
        app = QApplication.instance()
        # warm up: napari imports parts of itself on the first layer of each kind
        warm = [
            viewer.add_image(np.zeros((8, 8), np.uint16)),
            viewer.add_shapes([np.eye(3)[:, :2]], shape_type="polygon"),
        ]
        app.processEvents()
        for layer in warm:
            viewer.layers.remove(layer)
        app.processEvents()
        start = time.perf_counter()
        ref_layer = viewer.add_image(tifffile.imread(folder / "img_00000.tif"))
        app.processEvents()
        ref_open = time.perf_counter() - start
        viewer.layers.remove(ref_layer)

        widget = AnnotateWidget(viewer)
        viewer.window.add_dock_widget(widget)
        app.processEvents()
        start = time.perf_counter()
        widget.open_path(folder)
        app.processEvents()
        t_open = time.perf_counter() - start

        switch, ref_switch = [], []
        for _ in range(args.switches):
            start = time.perf_counter()
            widget.step(1)
            app.processEvents()
            switch.append(time.perf_counter() - start)
        layer = widget.annotator.image_layer
        for i in range(args.switches):
            start = time.perf_counter()
            layer.data = tifffile.imread(folder / f"img_{i + 100:05d}.tif")
            app.processEvents()
            ref_switch.append(time.perf_counter() - start)

        # an image with 500 polygons
        shapes = widget.annotator.shapes_layer
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        rng = np.random.default_rng(1)
        polys = [
            np.column_stack([c[0] + 10 * np.sin(t), c[1] + 10 * np.cos(t)])
            for c in rng.uniform(20, args.size - 20, (500, 2))
        ]
        shapes.add_polygons(polys)
        app.processEvents()
        edit, ref_edit = [], []
        plain = viewer.add_shapes(polys, shape_type="polygon", name="plain")
        for i in range(10):
            poly = polys[i] + 3
            start = time.perf_counter()
            shapes.add_polygons([poly])
            app.processEvents()
            edit.append(time.perf_counter() - start)
            start = time.perf_counter()
            plain.add_polygons([poly])
            app.processEvents()
            ref_edit.append(time.perf_counter() - start)
        # what an edit pays when it is the one, every 10 minutes, that keeps a version of
        # the project file (core.history): the copy, against the save it comes with
        from napari_bioanomaly.core import history

        project = widget.annotator.session.path
        keep, save = [], []
        for _ in range(5):
            start = time.perf_counter()
            history.keep_version(project, force=True)
            keep.append(time.perf_counter() - start)
            widget.annotator.session.dirty = True
            start = time.perf_counter()
            widget.annotator.session.save()
            save.append(time.perf_counter() - start)
        kept_mib = history.versions(project)[0].stat().st_size / 2**20
        viewer.close()

    med = statistics.median
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, napari {napari.__version__}"
    )
    print(
        f"open {args.images} images, first image shown: {t_open:.3f} s (target <= 2 s); "
        f"reference tifffile + add_image: {ref_open:.3f} s; ratio {t_open / ref_open:.1f}x"
    )
    print(
        f"switch image (median of {args.switches}): {med(switch) * 1000:.0f} ms (target <= 300 ms), "
        f"max {max(switch) * 1000:.0f} ms; reference read + layer.data: {med(ref_switch) * 1000:.0f} ms; "
        f"ratio {med(switch) / med(ref_switch):.1f}x"
    )
    print(
        f"add one polygon to 500 + autosave (median of 10): {med(edit) * 1000:.0f} ms; "
        f"reference plain add_polygons: {med(ref_edit) * 1000:.0f} ms; ratio {med(edit) / med(ref_edit):.1f}x"
    )
    print(
        f"keeping a version of the {kept_mib:.1f} MiB project (median of 5, "
        f"once per 10 minutes of editing): {med(keep) * 1000:.0f} ms; reference one save of it "
        f"(in the edit above at every edit): {med(save) * 1000:.0f} ms"
    )


def open_only(path: Path) -> None:
    """``--open``: the Open buttons' background read of ``path`` against ``open_path``."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_bioanomaly.widgets.annotate import AnnotateWidget

    def settle(app, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")  # no "last opened" kept
        figures = {}
        for how in ("open_path", "background", "open_path", "background"):  # each twice
            viewer = napari.Viewer()
            app = QApplication.instance()
            widget = AnnotateWidget(viewer)
            viewer.window.add_dock_widget(widget)
            settle(app, 0.3)
            ticks: list[float] = []
            timer = QTimer()
            timer.setInterval(10)
            timer.timeout.connect(lambda ticks=ticks: ticks.append(time.perf_counter()))
            timer.start()
            settle(app, 0.1)
            start = time.perf_counter()
            ticks.append(start)
            if how == "open_path":
                widget.open_path(path)
            else:
                widget.open_in_background(path)
                while widget.opening:
                    app.processEvents()
                    time.sleep(0.002)
            app.processEvents()
            shown = time.perf_counter() - start
            settle(app, 0.1)
            timer.stop()
            held = float(np.diff([t for t in ticks if t >= start]).max())
            figures[how] = held, shown  # the second run's (files cached, napari warm)
            widget.annotator.session.dirty = False  # opened, not edited: nothing to save
            viewer.close()
            settle(app, 0.2)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, napari {napari.__version__}; {path.name} "
          f"({path.stat().st_size / 2**20:.1f} MiB)")  # fmt: skip
    held, shown = figures["background"]
    ref_held, ref_shown = figures["open_path"]
    print(f"Open file... (background read): shown after {shown:.2f} s, event loop held at most "
          f"{held:.2f} s; reference open_path on the GUI thread: shown after {ref_shown:.2f} s, "
          f"held {ref_held:.2f} s ({ref_held / held:.1f}x longer)")  # fmt: skip


def first_save(path: Path) -> None:
    """``--save``: the first save after opening, and a rename, each against a reference."""
    import shutil

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.session import AnnotationSession
    from napari_bioanomaly.core.text import counted

    if (
        path.suffix.lower() != ".json"
        or annotations.json_format(path) not in annotations.VIA_FORMATS
    ):
        # an import's edits are saved beside it (<stem>.via.json): each run would open
        # the previous run's edits instead of the file
        sys.exit(f"{path}: --save measures VIA files (open an import, save it, and give "
                 "the project it saved)")  # fmt: skip
    runs = 0

    def opened(ahead: bool) -> AnnotationSession:
        nonlocal runs
        runs += 1
        copy = Path(tmp) / str(runs) / path.name  # a folder each: nothing of the last run
        copy.parent.mkdir()
        shutil.copyfile(path, copy)
        session = AnnotationSession.open(copy)
        if ahead:
            session.encode_ahead()  # in the opening worker, off napari's thread
        return session

    def timed(action) -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")  # no "last opened" kept
        figures: dict[str, list[float]] = {}
        for _ in range(3):
            for ahead in (True, False):
                session = opened(ahead)
                if not session.dataset.regions:
                    sys.exit(f"{path}: no regions to edit or rename")
                index = next(i for i, im in enumerate(session.dataset.images) if im.regions)
                regions = session.dataset.images[index].regions[1:]

                def edit(session=session, index=index, regions=regions) -> None:
                    session.set_regions(list(regions), index)
                    session.save()

                figures.setdefault(f"edit {ahead}", []).append(timed(edit))
            counts: dict[str, int] = {}
            for region in session.dataset.regions:
                counts[region.label] = counts.get(region.label, 0) + 1
            rarest = min(counts, key=counts.__getitem__)
            for every in (False, True):
                session = opened(True)

                def rename(session=session, every=every, old=rarest) -> None:
                    session.rename_class(old, old + " (renamed)")
                    if every:
                        session._entries.clear()  # what a rename did: every image again
                    session.save()

                figures.setdefault(f"rename {every}", []).append(timed(rename))
        n_images = len(session.dataset.images)
        held = sum(bool(r.label == rarest + " (renamed)") for r in session.dataset.regions)
    best = {k: min(v) for k, v in figures.items()}
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {path.name} ({path.stat().st_size / 2**20:.1f} MiB, "
          f"{n_images:,} images), best of 3")  # fmt: skip
    print(f"first edit + save: {best['edit True']:.2f} s with the entries encoded ahead; "
          f"reference (all encoded at that save): {best['edit False']:.2f} s")  # fmt: skip
    print(f"rename '{rarest}' ({counted(held, 'region')}) + save: {best['rename False']:.2f} s; reference "
          f"(every image encoded again): {best['rename True']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
