"""Mutation fuzzing of every format we read: 2,000 inputs from our own exports (VIA, COCO,
GeoJSON, ImageJ zips) and 600 from the real VIA files; ``benchmarks/bench_fuzz.py`` runs
more. The two pools are apart, so the first test fuzzes the same inputs on every machine."""

from __future__ import annotations

import pytest

from tests.support.fuzz import SHARED_VIA, run, shared_seeds


def _assert_clean(results) -> None:
    assert results.crashes == [], results.crashes[:10]
    assert results.hangs == [], results.hangs[:10]
    assert results.changed == [], results.changed[:10]  # load -> save -> load changes nothing
    assert results.loaded > results.inputs // 4 and results.refused > results.inputs // 4


def test_mutated_exports_of_every_format_load_or_fail_cleanly_and_round_trip():
    results = run(2000, seed=7)
    _assert_clean(results)
    assert {"coco.json", "a.geojson", "a_rois.zip", "project.json"} <= set(results.by_seed)


def test_mutated_real_via_files_load_or_fail_cleanly_and_round_trip():
    if not shared_seeds():
        pytest.skip(f"{SHARED_VIA} not present (../shared is not checked out beside the project)")
    results = run(600, seed=7, shared=True)
    _assert_clean(results)
    assert len(results.by_seed) == len(shared_seeds())
