"""Mutation fuzzing of every format we read: 2,000 inputs from the real VIA files and our
own exports (VIA, COCO, GeoJSON, ImageJ zips); ``benchmarks/bench_fuzz.py`` runs more."""

from __future__ import annotations

from tests.support.fuzz import run


def test_mutated_files_of_every_format_load_or_fail_cleanly_and_round_trip():
    results = run(2000, seed=7)
    assert results.crashes == [], results.crashes[:10]
    assert results.hangs == [], results.hangs[:10]
    assert results.changed == [], results.changed[:10]  # load -> save -> load changes nothing
    assert results.loaded > 500 and results.refused > 500  # both paths were exercised
    assert {"coco.json", "a.geojson", "a_rois.zip", "project.json"} <= set(results.by_seed)
