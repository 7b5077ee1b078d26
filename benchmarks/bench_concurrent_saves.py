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
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_bioanomaly.core.synthetic import SampleConfig, write_sample

WRITER = """
import json, random, sys, time
import numpy as np
from napari_bioanomaly.core.model import Region
from napari_bioanomaly.core.session import AnnotationSession, DiskChanged

path, tag, seconds, pace, force, log = sys.argv[1:7]
seconds, pace, force = float(seconds), float(pace), force == "1"
session = AnnotationSession.open(path)
done, conflicts, i = [], 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    k = i % len(session.dataset.images)
    im = session.dataset.images[k]
    ring = np.array([[1.0, 1.0], [1.0, 4.0], [4.0, 4.0], [4.0, 1.0]]) + (i % 30)
    session.set_regions([*im.regions, Region(ring, f"{tag}-{i}")], k)
    try:
        session.save(force=force)
    except DiskChanged:
        conflicts += 1
        session.reload()
        continue
    done.append(f"{tag}-{i}")
    i += 1
    time.sleep(random.uniform(0, pace))
json.dump({"done": done, "conflicts": conflicts}, open(log, "w"))
"""


def run(folder: Path, seconds: float, pace: float, force: bool) -> dict[str, int]:
    path = folder / "annotations.json"
    script = folder / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(path), tag, str(seconds), str(pace),
                          "1" if force else "0", str(folder / f"{tag}.log")])
        for tag in ("a", "b")
    ]  # fmt: skip
    if [p.wait(timeout=seconds + 300) for p in procs] != [0, 0]:
        raise SystemExit("a writer failed")
    logs = [json.loads((folder / f"{tag}.log").read_text()) for tag in ("a", "b")]
    data = json.loads(path.read_text())
    final = {r["region_attributes"]["class"] for v in data["_via_img_metadata"].values()
             for r in v["regions"]}  # fmt: skip
    completed = [label for log in logs for label in log["done"]]
    return {
        "completed": len(completed),
        "conflicts": sum(log["conflicts"] for log in logs),
        "lost": sum(label not in final for label in completed),
    }


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
