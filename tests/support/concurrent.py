"""Two processes editing and saving one annotation file, every completed save logged:
used by the test of lost edits and by ``benchmarks/bench_concurrent_saves.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def run(folder: Path, seconds: float, pace: float = 0.02, force: bool = False) -> dict[str, int]:
    """Two writers on ``folder/annotations.json`` for ``seconds``: completed saves,
    conflicts (reloaded and redone) and completed saves missing from the file at the end.
    ``force``: save over whatever is on disk (the reference without compare-and-swap)."""
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
