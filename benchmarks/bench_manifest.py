"""The cost of `predict`'s manifest, kept up to date after every image of a long run.

``predict`` records every finished image in ``OUT.manifest.json`` so that a killed run
resumes where it stopped. Measured here without a model: N images of 25 predicted
regions of 40 vertices (``bench_evaluate.py``'s polygons), each recorded as the CLI
records it (:meth:`Manifest.append`), beside, in the same process:

- the reference: saving the finished predictions file once (what the run writes anyway);
- the whole manifest rewritten after every image (:meth:`Manifest.save`, what ``predict``
  did before 2026-12-05: each write also copied the previous file to ``.bak``), on the
  first ``--rewrite`` images only (it grows with the square of the images).

Run: ``.venv/bin/python benchmarks/bench_manifest.py [--images 2000]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_evaluate import SIZE, regions

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.manifest import Manifest
from napari_bioanomaly.core.model import Dataset, ImageRecord


def records(n: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    return [ImageRecord(f"img_{i:05d}.tif", (SIZE, SIZE), regions=regions(rng, 25))
            for i in range(n)]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument(
        "--rewrite",
        type=int,
        default=300,
        help="images recorded by rewriting the whole manifest (quadratic)",
    )
    args = p.parse_args()
    recs = records(args.images)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; "
          f"{args.images} images x 25 regions x 40 vertices")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        annotations.save(Dataset(images=recs), folder / "pred.json", "via")
        reference = time.perf_counter() - start

        manifest = Manifest(folder / "a.json", "bench run")
        times = []
        for rec in recs:
            start = time.perf_counter()
            manifest.append(rec)
            times.append(time.perf_counter() - start)
        appended = sum(times)
        last = np.median(times[-100:]) * 1e3
        again = Manifest(folder / "a.json", "bench run")
        start = time.perf_counter()
        assert len(again.read()) == args.images
        read = time.perf_counter() - start

        manifest = Manifest(folder / "b.json", "bench run")
        rewrites = []
        for rec in recs[: args.rewrite]:
            start = time.perf_counter()
            manifest.add(rec)
            manifest.save()
            rewrites.append(time.perf_counter() - start)
        late = np.median(rewrites[-20:]) * 1e3
    print(f"reference, the predictions file saved once: {reference:.2f} s")
    print(f"manifest appended after every image: {appended:.2f} s in all "
          f"({appended / reference:.1f}x the reference), {last:.2f} ms an image at the end; "
          f"read back for a resume: {read:.2f} s")  # fmt: skip
    n = min(args.rewrite, args.images)
    print(f"manifest rewritten after every image (before): {sum(rewrites):.2f} s for the first "
          f"{n} images, {late:.1f} ms an image at image {n}; at image {args.images} about "
          f"{late * args.images / n:.0f} ms an image and {sum(rewrites) * (args.images / n) ** 2:.0f} s "
          f"in all (it grows with the square of the images)")  # fmt: skip


if __name__ == "__main__":
    main()
