"""Mutation fuzzing of every annotation format we read (shared by the test suite, which runs
a few thousand inputs, and ``benchmarks/bench_fuzz.py``, which runs ten thousand and more).

Seeds: our own exports of a small dataset in every format (VIA 2 export and project,
COCO, QuPath GeoJSON, ImageJ ROI zips), and the real VIA files of ``../shared/data/via``
when present. The two pools are fuzzed apart, so the inputs made from our exports are the
same on every machine whether ``../shared`` is there or not. Each input is a seed with one to three mutations: a JSON value
replaced by a hostile one (NaN, 1e308, 400-digit integers, lone surrogates, deep
nesting, wrong types), a key deleted, a list item repeated, or, for any file,
bytes flipped, inserted or cut. Every input must either load, or fail with the
project's own error; never hang (``TIMEOUT`` seconds); and what loads must come
back the same after save and load (``load -> save -> load`` changes nothing).
"""

from __future__ import annotations

import copy
import json
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_bioanomaly.core import annotations
from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord, Region

SHARED_VIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "via"
#: Seconds an input may take to load, save and load again.
TIMEOUT = 10

HOSTILE: list[Any] = [
    None, True, 0, -1, 1e308, -1e308, float("nan"), float("inf"), 10**400, 2**64, "",
    "x" * 300, "\ud800", "a\x00b", "%", "../../etc", {}, [], [[[[]]]], {"name": 5},
    "1e999", "12.5", [1, "x", None], {"all_points_x": {}}, 1.5, "polygon",
]  # fmt: skip


def hostile(rng: random.Random) -> Any:
    """One hostile JSON value (deep nesting sometimes)."""
    if rng.random() < 0.05:
        value: Any = []
        for _ in range(rng.choice([50, 200, 1000])):
            value = [value]
        return value
    return copy.deepcopy(rng.choice(HOSTILE))


def _sample_dataset() -> Dataset:
    square = np.array([[2.0, 2.0], [2.0, 12.0], [12.0, 12.0], [12.0, 2.0]])
    images = []
    for k, name in enumerate(["a.tif", "sub/b.png", "c d.tif"]):
        regions = [
            Region(square + k, "dust", {"note": f"n{k}"}),
            Region(square * 1.5 + 10, "hair", score=0.75, source="model"),
        ]
        images.append(ImageRecord(name, (64, 64), {"cell_line": "HeLa", "plate": k},
                                  regions=regions))  # fmt: skip
    images.append(ImageRecord("normal.tif", (64, 64), no_anomaly=True))
    return Dataset(images=images, classes=["dust", "hair"])


def shared_seeds() -> list[Path]:
    """The real VIA files of ``../shared/data/via`` (none when the folder is absent)."""
    return sorted(SHARED_VIA.glob("*.json")) if SHARED_VIA.is_dir() else []


def seeds(folder: Path) -> list[Path]:
    """Seed files: our exports of every format, written into ``folder``."""
    out: list[Path] = []
    ds = _sample_dataset()
    for fmt, name in (("via", "export.json"), ("via-project", "project.json"),
                      ("coco", "coco.json")):  # fmt: skip
        annotations.save(ds, folder / name, fmt)
        out.append(folder / name)
    for fmt in ("geojson", "imagej"):
        written, _ = annotations.save(ds, folder / fmt, fmt)
        out.extend(sorted(written))
    return out


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            yield from _paths(v, (*prefix, i))


def _mutate_json(doc: Any, rng: random.Random) -> Any:
    paths = list(_paths(doc))
    path = rng.choice(paths)
    if not path:
        return hostile(rng)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = rng.random()
    if action < 0.6:
        parent[key] = hostile(rng)
    elif action < 0.8:
        del parent[key]
    elif isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    else:
        parent[key + "x" if isinstance(key, str) else key] = copy.deepcopy(parent[key])
    return doc


def _mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    if not data:
        return bytes(rng.randrange(256) for _ in range(8))
    action = rng.random()
    i = rng.randrange(len(data))
    if action < 0.5:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif action < 0.75:
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        del data[i:]
    return bytes(data)


def mutant(seed: Path, rng: random.Random) -> bytes:
    """A seed's bytes with one to three mutations."""
    raw = seed.read_bytes()
    is_json = seed.suffix.lower() in (".json", ".geojson")
    for _ in range(rng.randint(1, 3)):
        if is_json and rng.random() < 0.8:
            try:
                doc = json.loads(raw)
                raw = json.dumps(_mutate_json(doc, rng)).encode("utf-8", "surrogatepass")
                continue
            except (ValueError, RecursionError):
                pass
        raw = _mutate_bytes(raw, rng)
    return raw


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


def _content(ds: Dataset) -> list[Any]:
    """What a load -> save -> load round trip must keep."""
    out = []
    for im in ds.images:
        regions = [(r.label, np.round(r.polygon, 3).tolist(), json.dumps(r.attributes, sort_keys=True, default=str),
                    r.score, r.source) for r in im.regions]  # fmt: skip
        out.append((im.filename, json.dumps(im.file_attributes, sort_keys=True, default=str),
                    im.no_anomaly, im.reviewed, regions))  # fmt: skip
    return out


@dataclass
class Results:
    inputs: int = 0
    loaded: int = 0
    refused: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    by_seed: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.changed)


def check(raw: bytes, suffix: str, folder: Path, results: Results, label: str) -> None:
    """Load ``raw`` as a file of ``suffix``; save what loaded and load it again."""
    path = folder / f"input{suffix}"
    path.write_bytes(raw)
    results.inputs += 1
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        try:
            ds, _ = annotations.load(path, read_images=False)
        except BioAnomalyError:
            results.refused += 1
            return
        results.loaded += 1
        first = _content(ds)
        annotations.save(ds, folder / "saved.json", "via-project")
        again, _ = annotations.load(folder / "saved.json", read_images=False)
        if _content(again) != first:
            results.changed.append(label)
    except Hang:
        results.hangs.append(label)
    except Exception as exc:  # anything but our own error is a crash
        results.crashes.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(n: int, seed: int = 0, shared: bool = False) -> Results:
    """Fuzz ``n`` inputs made from our exports, or with ``shared`` from the real VIA files;
    deterministic for a given ``seed``."""
    rng = random.Random(seed)
    results = Results()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "seeds").mkdir()
        pool = shared_seeds() if shared else seeds(folder / "seeds")
        if not pool:
            raise FileNotFoundError(f"no seed files (looked in {SHARED_VIA})")
        work = folder / "work"
        work.mkdir()
        for i in range(n):
            source = pool[i % len(pool)]
            results.by_seed[source.name] += 1
            suffix = ".zip" if source.suffix == ".zip" else source.suffix
            check(mutant(source, rng), suffix, work, results, f"#{i} from {source.name}")
    results.seconds = time.perf_counter() - t0
    return results
