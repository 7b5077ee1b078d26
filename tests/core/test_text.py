"""Counts in messages take the number they name."""

from __future__ import annotations

from napari_bioanomaly.cli import main
from napari_bioanomaly.core.text import counted


def test_count_is_singular_for_one_and_plural_otherwise():
    assert counted(1, "image") == "1 image"
    assert counted(0, "image") == "0 images"
    assert counted(12000, "validation image") == "12,000 validation images"
    assert counted(1, "class", "classes") == "1 class"
    assert counted(2, "class", "classes") == "2 classes"


def test_the_cli_says_one_image_and_one_region(tmp_path, capsys, sample_dir):
    assert main(["sample", str(tmp_path / "s"), "--images", "1", "--size", "64"]) == 0
    assert capsys.readouterr().out.startswith("wrote 1 image and ")
    assert (
        main(["merge", str(sample_dir / "annotations.json"), "--out", str(tmp_path / "m.json")])
        == 0
    )
    assert " from 1 file -> " in capsys.readouterr().out
