"""Fuzzing every annotation format: 10,000+ mutated inputs, zero crashes, hangs or changes.

    .venv/bin/python benchmarks/bench_fuzz.py [--inputs 12000] [--seed 0]

Inputs are our own exports of every format and (a quarter more) the real VIA files of
``../shared/data/via``, each with one to three mutations (see ``tests/support/fuzz.py``). Counted:
exceptions other than the project's own error, inputs that took more than 10 s,
and inputs that loaded but changed on ``load -> save -> load``. The reference, in
the same process: the same load -> save -> load of the unmutated seeds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fuzz import Results, check, run, seeds, shared_seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=12000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "seeds").mkdir()
        pool = seeds(folder / "seeds") + shared_seeds()
        reference = Results()
        t0 = time.perf_counter()
        for source in pool:
            check(source.read_bytes(), source.suffix, folder, reference, source.name)
        ref_s = (time.perf_counter() - t0) / len(pool)
    results = run(args.inputs, args.seed)
    if shared_seeds():  # a quarter more from the real VIA files, fuzzed apart
        real = run(args.inputs // 4, args.seed, shared=True)
        for name in ("inputs", "loaded", "refused", "seconds"):
            setattr(results, name, getattr(results, name) + getattr(real, name))
        for name in ("crashes", "hangs", "changed"):
            getattr(results, name).extend(getattr(real, name))
        results.by_seed.update(real.by_seed)
    per_input = results.seconds / max(results.inputs, 1)
    print(f"seeds: {len(pool)} files ({', '.join(sorted(results.by_seed))})")
    print(
        f"fuzz: {results.inputs} inputs in {results.seconds:.0f} s: {results.loaded} loaded, "
        f"{results.refused} refused with the project's own error; crashes "
        f"{len(results.crashes)}, hangs {len(results.hangs)}, changed on load-save-load "
        f"{len(results.changed)}"
    )
    print(
        f"per input {per_input * 1000:.1f} ms; reference (unmutated seeds) {ref_s * 1000:.1f} "
        f"ms ({per_input / ref_s:.2f}x); reference clean: {reference.ok()}"
    )
    for line in (results.crashes + results.hangs + results.changed)[:20]:
        print("  " + line)
    sys.exit(0 if results.ok() and reference.ok() else 1)


if __name__ == "__main__":
    main()
