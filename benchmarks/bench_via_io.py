"""Import then export a VIA 2 file of 2,000 images x 10 polygons x 50 vertices.

Prints seconds for our import + export and for plain ``json.load`` + ``json.dump``
of the same file in the same process, and their ratio (target: at most 3x).

    python benchmarks/bench_via_io.py [--images 2000] [--regions 10] [--vertices 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core import annotations


def make_file(path: Path, n_images: int, n_regions: int, n_vertices: int, seed: int = 0) -> None:
    """A VIA 2 export of star-shaped (valid) polygons with VIA's 3-decimal coordinates."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    data = {}
    for i in range(n_images):
        regions = []
        for _ in range(n_regions):
            cx, cy = rng.uniform(50, 1030, 2)
            radius = rng.uniform(5, 40) * rng.uniform(0.7, 1.0, n_vertices)
            regions.append(
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": np.round(cx + radius * np.cos(t), 3).tolist(),
                        "all_points_y": np.round(cy + radius * np.sin(t), 3).tolist(),
                    },
                    "region_attributes": {"class": str(rng.choice(["dust", "scratch", "hair"]))},
                }
            )
        name = f"img_{i:05d}.tif"
        data[f"{name}-1"] = {
            "filename": name,
            "size": -1,
            "regions": regions,
            "file_attributes": {"cell_line": "HeLa"},
        }
    path.write_text(json.dumps(data))


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=10)
    parser.add_argument("--vertices", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.json"
        make_file(src, args.images, args.regions, args.vertices)
        size_mb = src.stat().st_size / 1e6

        def reference() -> None:
            with open(src, encoding="utf-8") as fh:
                data = json.load(fh)
            with open(Path(tmp) / "ref.json", "w", encoding="utf-8") as fh:
                json.dump(data, fh)

        def reference_strings() -> None:
            data = json.loads(src.read_text(encoding="utf-8"))
            (Path(tmp) / "ref.json").write_text(json.dumps(data), encoding="utf-8")

        def ours() -> None:
            dataset, report = annotations.load(src, read_images=False)
            assert report.regions_imported == args.images * args.regions, report.warnings[:3]
            annotations.save(dataset, Path(tmp) / "out.json", "via")

        ref = best_of(args.repeat, reference)
        ref_strings = best_of(args.repeat, reference_strings)
        mine = best_of(args.repeat, ours)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(
        f"file: {args.images} images x {args.regions} polygons x {args.vertices} vertices"
        f" = {size_mb:.1f} MB"
    )
    print(f"json.load + json.dump:          {ref:.3f} s")
    print(f"json.loads + json.dumps (C):    {ref_strings:.3f} s")
    print(f"napari-bioanomaly load + save:  {mine:.3f} s")
    print(f"ratio to json.load + json.dump:   {mine / ref:.2f}x (target <= 3x)")
    print(f"ratio to json.loads + json.dumps: {mine / ref_strings:.2f}x (stricter reference)")


if __name__ == "__main__":
    main()
