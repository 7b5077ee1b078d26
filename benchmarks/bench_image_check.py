"""What training's up-front image check costs, beside decoding the images.

Before a run, training names every image that cannot be read (with the ``--exclude-qc``
hint) instead of failing mid-run. :func:`~napari_bioanomaly.core.images.checked_shape`
reads each file's header and its end (a TIFF's strips lie within the file, a PNG ends
with IEND, a JPEG with its end marker), which finds a file cut short without decoding
it. Measured here on N images of 1080x1080 16-bit (uncompressed TIFF, zlib TIFF, PNG)
and 8-bit PNG, per image, beside, in the same process:

- the reference: :func:`~napari_bioanomaly.core.images.read_image`, decoding them;
- :func:`~napari_bioanomaly.core.images.image_shape`, the header alone (what the check
  was before 2026-12-07; a PNG's header decoded the whole image for a few hours that
  day, while its EXIF orientation was asked of Pillow).

Files are read twice first (the cache warm, as for a dataset opened before).

Run: ``.venv/bin/python benchmarks/bench_image_check.py [--images 20]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code

from napari_bioanomaly.core.images import checked_shape, image_shape, read_image

SIZE = 1080


def write(folder: Path, kind: str, n: int) -> list[Path]:
    """``n`` images of a noisy 12-bit ramp as ``kind`` (tif, zlib, png16, png8)."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(SIZE), np.arange(SIZE)) % 4096
    paths = []
    for i in range(n):
        data = (ramp + rng.integers(0, 64, ramp.shape)).astype(np.uint16)
        path = folder / f"{kind}_{i:03d}.{'png' if kind.startswith('png') else 'tif'}"
        if kind == "tif":
            tifffile.imwrite(path, data)
        elif kind == "zlib":
            tifffile.imwrite(path, data, compression="zlib")
        elif kind == "png16":
            Image.fromarray(data).save(path)
        else:
            Image.fromarray((data >> 4).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def per_image_ms(paths: list[Path], read: Callable[[Path], object]) -> float:
    """Milliseconds per image of ``read`` over ``paths``, the best of three passes."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for path in paths:
            read(path)
        best = min(best, (time.perf_counter() - start) / len(paths) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{args.images} images of {SIZE}x{SIZE} each, ms per image (best of 3 passes)")  # fmt: skip
    print(f"{'file':<22}{'decode (reference)':>20}{'header':>10}{'header + end':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, name in [("tif", "TIFF 16-bit"), ("zlib", "TIFF 16-bit, zlib"),
                           ("png16", "PNG 16-bit"), ("png8", "PNG 8-bit")]:  # fmt: skip
            paths = write(Path(tmp), kind, args.images)
            for path in paths:  # warm
                read_image(path)
            decode = per_image_ms(paths, read_image)
            header = per_image_ms(paths, image_shape)
            checked = per_image_ms(paths, checked_shape)
            print(f"{name:<22}{decode:>20.2f}{header:>10.2f}{checked:>15.2f}")


if __name__ == "__main__":
    main()
