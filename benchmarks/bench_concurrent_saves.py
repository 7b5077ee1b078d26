"""Two processes editing and saving one annotation file: no completed save is ever lost.

    .venv/bin/python benchmarks/bench_concurrent_saves.py [--seconds 30] [--pace 0.02]

Two writer processes open the same annotation file of a sample dataset and, for
``--seconds``, add a region to an image and save, again and again (a random pause of up
to ``--pace`` s between saves: faster than any person). A save refused because the other
process saved in between (:class:`DiskChanged`) is handled as the widgets let a user do:
reload, make the edit again, save. Every completed save is logged with its region's
label; at the end each logged label must be in the file.

The reference, in the same process: the same two writers saving with ``force=True``
(overwrite whatever is on disk, what saving did before compare-and-swap), whose lost
edits show what the check prevents.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_bioanomaly.core.synthetic import SampleConfig, write_sample
from tests.support.concurrent import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pace", type=float, default=0.02)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}; two writers, "
          f"{args.seconds:g} s, pauses up to {args.pace:g} s")  # fmt: skip
    for name, force in (("reference (overwrite)", True), ("compare-and-swap", False)):
        with tempfile.TemporaryDirectory() as tmp:
            write_sample(Path(tmp), SampleConfig(n_images=10, size=128, seed=0))
            r = run(Path(tmp), args.seconds, args.pace, force)
        print(f"{name:22s} completed saves {r['completed']:5d}  conflicts {r['conflicts']:5d}  "
              f"lost {r['lost']:5d}")  # fmt: skip


if __name__ == "__main__":
    main()
