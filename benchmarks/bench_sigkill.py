"""SIGKILL during autosave: no corrupt file, no lost saved edit, no broken backup.

    .venv/bin/python benchmarks/bench_sigkill.py [--kills 100]

A child process opens a sample dataset, adds a region and saves, again and again,
printing the number of each completed save. It is killed with SIGKILL after a
random delay, while it saves or between saves; then the annotation file and its
``.bak`` must parse, the file must hold every edit the child reported saved, and
reopening the dataset must leave no temporary file behind. Repeated ``--kills`` times. The
reference, in the same process: one save of the same dataset without a kill.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_bioanomaly.core.fileio import backup_path, remove_stale_temporaries
from napari_bioanomaly.core.session import AnnotationSession
from napari_bioanomaly.core.synthetic import SampleConfig, write_sample

CHILD = """
import sys
import numpy as np
from napari_bioanomaly.core.model import Region
from napari_bioanomaly.core.session import AnnotationSession

session = AnnotationSession.open(sys.argv[1])
i = int(sys.argv[2])
while True:
    k = i % len(session.dataset.images)
    ring = np.array([[1.0, 1.0], [1.0, 6.0], [6.0, 6.0], [6.0, 1.0]]) + (i % 40)
    im = session.dataset.images[k]
    session.set_regions([*im.regions, Region(ring, f"edit-{i}")], k)
    session.save()
    print(i, flush=True)
    i += 1
"""


def labels(path: Path) -> set[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {r["region_attributes"].get("class") for v in data["_via_img_metadata"].values()
            for r in v["regions"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--images", type=int, default=200, help="images in the dataset")
    args = p.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_sample(folder, SampleConfig(n_images=args.images, size=64, seed=1))
        path = folder / "annotations.json"
        session = AnnotationSession.open(path)
        t0 = time.perf_counter()
        session.save(force=True)
        reference = time.perf_counter() - t0
        child = Path(tmp) / "child.py"
        child.write_text(CHILD)
        corrupt = lost = bad_backup = left = 0
        saved: set[str] = set()
        start = 0
        t0 = time.perf_counter()
        for _ in range(args.kills):
            proc = subprocess.Popen([sys.executable, str(child), str(path), str(start)],
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
            first = proc.stdout.readline()  # it has opened the dataset and saved once
            if first:
                saved.add(f"edit-{int(first)}")
            time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(signal.SIGKILL)
            for line in proc.stdout.read().split():
                saved.add(f"edit-{int(line)}")
            proc.wait()
            start = max([int(s.split("-")[1]) for s in saved] + [start]) + 1
            try:
                on_disk = labels(path)
            except (ValueError, OSError):
                corrupt += 1
                continue
            lost += len(saved - on_disk)
            try:
                json.loads(backup_path(path).read_text(encoding="utf-8"))
            except (ValueError, OSError):
                bad_backup += 1
            AnnotationSession.open(path)
            left = len(list(folder.glob(".annotations.json*.tmp")))
        elapsed = time.perf_counter() - t0
        remove_stale_temporaries(path, older_than=0)
        print(
            f"{args.kills} kills of a process saving {args.images} images ({len(saved)} saves "
            f"completed, {elapsed:.0f} s): corrupt files {corrupt}, lost saved edits {lost}, "
            f"unparseable backups {bad_backup}, temporary files left after the last reopen "
            f"{left}"
        )
        print(f"reference: one save of the dataset takes {reference * 1000:.0f} ms")
        sys.exit(1 if corrupt or lost or bad_backup else 0)


if __name__ == "__main__":
    main()
