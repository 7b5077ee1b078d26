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


def test_a_messages_file_is_named_first_and_its_folder_last():
    """napari's notifications show the first line of a message: a long path alone."""
    from napari_bioanomaly.core.text import name_first

    assert name_first("/data/study 3/plate 12/cells.json: no such file") == (
        "cells.json: no such file (in /data/study 3/plate 12)"
    )
    assert name_first("/cells.json: no such file") == "cells.json: no such file (in /)"
    assert name_first(r"C:\data\cells.json: a: b") == r"cells.json: a: b (in C:\data)"
    assert name_first("/data/run: 3/cells.json: no such file") == (
        "cells.json: no such file (in /data/run: 3)"  # a folder's name may hold ": "
    )
    assert name_first("/data/x.json: cannot read a/b: c") == "x.json: cannot read a/b: c (in /data)"
    assert name_first("/data/a.json: bad\nline two") == "a.json: bad (in /data)\nline two"
    for unchanged in ("no dataset open", "cells.json: no such file", "copy not saved: x",
                      "/data/x.json:no space", "/data/x.json: "):  # fmt: skip
        assert name_first(unchanged) == unchanged


def test_a_name_is_printed_on_one_line():
    from napari_bioanomaly.core.text import printable

    assert printable("a\nb\r\tc é.tif") == "a\\nb\\r\\tc é.tif"
