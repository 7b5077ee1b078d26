"""The command line as a user runs it: a subprocess for the entry point, main() for speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_bioanomaly.cli import main
from tests.conftest import shared_file


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("name", "fmt", "images", "regions", "imported"),
    [
        ("via1_all_shapes.json", "via1-export", 3, 12, 7),
        ("via2_demo_export.json", "via2-export", 2, 4, 4),
    ],
)
def test_inspect_json_counts_for_shared_files(capsys, name, fmt, images, regions, imported):
    code, out, _ = run(capsys, "inspect", shared_file(name), "--json")
    assert code == 0
    info = json.loads(out)
    for key in ("format", "images", "regions", "imported", "shapes", "classes", "warnings"):
        assert key in info
    assert (info["format"], info["images"], info["regions"], info["imported"]) == (
        fmt,
        images,
        regions,
        imported,
    )
    assert sum(info["shapes"].values()) == regions


def test_inspect_text_lists_warnings(capsys):
    code, out, _ = run(capsys, "inspect", shared_file("via1_all_shapes.json"), "--no-images")
    assert code == 0
    assert "format:   via1-export" in out
    assert "regions:  12 in the file, 7 imported" in out
    assert "point skipped" in out


def test_inspect_points_as_discs(capsys):
    path = shared_file("via1_all_shapes.json")
    _, out, _ = run(capsys, "inspect", path, "--json", "--no-images", "--points-as-discs", "3")
    assert json.loads(out)["imported"] == 12


def test_errors_are_one_line_and_exit_2(capsys, tmp_path):
    not_json = tmp_path / "x.json"
    not_json.write_text("this is not json")
    (tmp_path / "annotations.json").write_text("{}")  # a dataset the sample must not overwrite
    other = tmp_path / "other.json"
    other.write_text('{"type": "Topology", "objects": {}}')
    cases = [
        (["inspect", tmp_path / "missing.json"], "missing.json: file not found"),
        (["inspect", not_json], "x.json: malformed JSON at line 1"),
        (["inspect", other], "other.json: neither VIA"),
        (["convert", other, "--to", "coco", tmp_path / "o.json"], "neither VIA"),
        (["inspect", not_json, "--polyline-width", "0"], "polyline width must be > 0"),
        (["sample", tmp_path / "s", "--size", "10"], "at least 64 px"),
        (
            ["sample", tmp_path, "--images", "1", "--size", "64"],
            f"{tmp_path}: already holds annotations.json: the sample goes into a new or empty",
        ),
    ]
    for argv, message in cases:
        code, _out, err = run(capsys, *argv)
        assert code == 2, argv
        assert message in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_convert_every_format_and_read_back(capsys, sample_dir, tmp_path):
    for fmt, out in [
        ("via", tmp_path / "v.json"),
        ("via-project", tmp_path / "p.json"),
        ("coco", tmp_path / "c.json"),
    ]:
        code, stdout, _ = run(capsys, "convert", sample_dir / "annotations.json", "--to", fmt, out)
        assert code == 0 and "6 images" in stdout
        code, stdout, _ = run(capsys, "inspect", out, "--json", "--images", sample_dir)
        info = json.loads(stdout)
        assert info["images"] == 6 and info["warnings"] == []
    code, stdout, _ = run(capsys, "convert", sample_dir, "--to", "masks", tmp_path / "masks")
    assert code == 0
    assert len(list((tmp_path / "masks").glob("*_labels.tif"))) == 6
    assert (tmp_path / "masks" / "labels.csv").is_file()


def test_convert_overwrite_keeps_backup(capsys, sample_dir, tmp_path):
    out = tmp_path / "v.json"
    out.write_text('{"precious": true}')
    code, _, _ = run(capsys, "convert", sample_dir / "annotations.json", "--to", "via", out)
    assert code == 0
    assert json.loads((tmp_path / "v.json.bak").read_text()) == {"precious": True}


def test_convert_never_replaces_the_file_it_reads(capsys, dataset_dir):
    ann = dataset_dir / "annotations.json"
    before = ann.read_bytes()
    for source, to in ((ann, "coco"), (dataset_dir, "coco"), (ann, "via")):
        code, _, err = run(capsys, "convert", source, "--to", to, ann)
        assert code == 2
        assert f"output {ann}: is the annotation file this command reads" in err
    assert ann.read_bytes() == before
    # an imported COCO file edited in napari: neither it nor its edits are written over
    coco = dataset_dir / "c.json"
    assert run(capsys, "convert", ann, "--to", "coco", coco)[0] == 0
    ann.unlink()
    edits = dataset_dir / "c.via.json"
    assert run(capsys, "convert", coco, "--to", "via-project", edits)[0] == 0
    for out in (coco, edits):
        assert run(capsys, "convert", dataset_dir, "--to", "via", out)[0] == 2


def test_console_script_entry_point_sample_and_inspect(tmp_path):
    exe = [sys.executable, "-m", "napari_bioanomaly.cli"]
    done = subprocess.run(
        [*exe, "sample", tmp_path / "s", "--images", "5", "--size", "64", "--seed", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 5 images" in done.stdout
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "annotations.json",
        *[f"img_{i:03d}.tif" for i in range(5)],
    ]
    done = subprocess.run(
        [*exe, "inspect", tmp_path / "s" / "annotations.json", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(done.stdout)
    assert info["format"] == "via2-project" and info["images"] == 5
    assert info["checked_no_anomaly"] == 1


def test_a_mistyped_annotation_file_in_an_image_folder_is_an_error(capsys, dataset_dir, tmp_path):
    """Not the folder's own annotations.json opened in its place, silently."""
    code, out, err = run(capsys, "inspect", dataset_dir / "anotations.json")
    assert code != 0
    assert "anotations.json: no such file (the folder's annotation file is annotations.json)" in err
    # a folder of images never annotated: its default annotation file stands for it
    bare = tmp_path / "bare"
    bare.mkdir()
    for image in sorted(dataset_dir.glob("*.tif"))[:2]:
        (bare / image.name).write_bytes(image.read_bytes())
    code, out, _ = run(capsys, "inspect", bare / "annotations.json")
    assert code == 0 and "images:   2 " in out and "format:   folder" in out
    code, _, err = run(capsys, "inspect", bare / "annotation.json")  # not a default name
    assert code != 0 and "annotation.json: no such file" in err


def test_links_that_lead_out_of_an_image_folder_are_not_followed(capsys, dataset_dir, tmp_path):
    import os

    from napari_bioanomaly.core.annotations import open_dataset

    folder, elsewhere = tmp_path / "folder", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    images = sorted(dataset_dir.glob("*.tif"))
    (folder / "own.tif").write_bytes(images[0].read_bytes())
    (elsewhere / "secret.tif").write_bytes(images[1].read_bytes())
    os.symlink(elsewhere / "secret.tif", folder / "link.tif")
    os.symlink(folder / "own.tif", folder / "alias.tif")  # stays inside: kept
    ds, report = open_dataset(folder)
    assert sorted(im.filename for im in ds.images) == ["alias.tif", "own.tif"]
    assert any(f"link.tif: a link to {elsewhere / 'secret.tif'}, outside the dataset folder; "
               "left out (only images inside the folder chosen are read" in w
               for w in report.warnings)  # fmt: skip
    assert report.outside_links == ["link.tif"]
    code, out, _ = run(capsys, "inspect", folder)
    assert code == 0 and "images:   2 " in out


def test_links_that_lead_out_of_a_folder_are_said_wherever_it_is_listed(
    capsys, dataset_dir, tmp_path
):
    """An image linked in from a raw-data store outside the folder was left out without a
    word by qc, predict and Annotate: each says it now, naming the link, where it leads
    and why (reading it would be harmless; the rule is that a dataset keeps to its
    folder, as an annotation file's names that lead out of it are refused)."""
    import os

    from napari_bioanomaly.core.session import AnnotationSession

    folder, store = tmp_path / "folder", tmp_path / "raw store"
    folder.mkdir()
    store.mkdir()
    images = sorted(dataset_dir.glob("*.tif"))
    (folder / "own.tif").write_bytes(images[0].read_bytes())
    (store / "raw.tif").write_bytes(images[1].read_bytes())
    os.symlink(store / "raw.tif", folder / "linked.tif")
    said = (f"1 link leads outside {folder} and is left out: linked.tif (-> "
            f"{store / 'raw.tif'}); only images inside the folder chosen are read")  # fmt: skip
    code, out, err = run(capsys, "qc", folder)
    assert code == 0 and f"warning: {said}" in err and "of 1 image flagged" in out
    # Annotate: a new dataset's report (the status line counts it, its tooltip says it)
    session = AnnotationSession.open(folder)
    assert [im.filename for im in session.dataset.images] == ["own.tif"]
    assert session.report.outside_links == ["linked.tif"]
    assert any("linked.tif: a link to" in w for w in session.report.warnings)
    session.dataset.images[0].no_anomaly = True
    session.touch()
    session.save()
    reopened = AnnotationSession.open(folder)  # its annotation file, and the folder
    assert reopened.report.outside_links == ["linked.tif"]
    # predict: said before the model is read where the link is the folder's only image
    (folder / "own.tif").unlink()
    (folder / "annotations.json").unlink()
    code, _, err = run(capsys, "predict", "--model", str(tmp_path / "no.pt"), "--images",
                       str(folder), "--out", str(tmp_path / "pred.json"))  # fmt: skip
    assert code != 0 and f"no images (TIFF, PNG, JPEG) in this folder; {said}" in err
    with pytest.raises(Exception, match="1 link leads outside"):
        AnnotationSession.open(folder)


def test_import_issues_are_grouped_by_kind_with_the_serious_first(write_json, capsys):
    closed = {"shape_attributes": {"name": "polygon", "all_points_x": [1, 10, 10, 1],
                                   "all_points_y": [1, 1, 10, 1]},
              "region_attributes": {"class": "dust"}}  # fmt: skip
    bow = {"shape_attributes": {"name": "polygon", "all_points_x": [0, 10, 10, 0],
                                "all_points_y": [0, 10, 0, 10]},
           "region_attributes": {"class": "dust"}}  # fmt: skip
    regions = {str(i): closed for i in range(40)} | {"40": bow}
    path = write_json({"a.png1": {"filename": "a.png", "size": 1, "regions": regions}})
    assert main(["inspect", str(path), "--no-images"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    heads = [line.strip() for line in lines if line.strip().startswith("[")]
    assert heads[0].startswith("[repaired]") and heads[-1] == (
        "[closed] 40 x closing vertex (repeat of the first) removed"
    )
    assert "... and 35 more (--verbose lists all)" in out
    assert sum("closing vertex removed" in line for line in lines) == 5
    assert main(["inspect", str(path), "--no-images", "--verbose"]) == 0
    assert capsys.readouterr().out.count("closing vertex removed") == 40
    # convert (and qc --save, train, predict) say them as warnings: a heading each, its
    # issues under it (each issue read "warning:     ..." as a warning of its own)
    out_file = path.with_name("out.json")
    assert main(["convert", str(path), "--to", "via", str(out_file)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "warning: [closed] 40 x closing vertex (repeat of the first) removed" in err
    items = [line for line in err if "closing vertex removed" in line]
    assert len(items) == 5 and all(line.startswith("    ") for line in items)
    assert not [line for line in err if line.startswith("warning:  ")]


def test_an_import_issue_of_several_lines_stays_under_its_heading(capsys):
    import argparse

    from napari_bioanomaly._cli_data import _warn_import
    from napari_bioanomaly.core.report import ImportReport

    report = ImportReport(file="x.json")
    report.add("skipped", "a region skipped:\nits second line", "a.png", 0)
    _warn_import(report, argparse.Namespace(verbose=False))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: [skipped] 1 x ")
    assert err[1].startswith("    ") and err[1].endswith("a region skipped:")
    assert err[2] == "        its second line"


def test_every_option_with_a_default_says_it_in_its_help():
    import argparse

    from napari_bioanomaly.cli import build_parser

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices  # fmt: skip
    silent = []
    for name, parser in commands.items():
        for action in parser._actions:
            if (not action.option_strings or action.required or action.nargs == 0
                    or action.default in (None, argparse.SUPPRESS)):  # fmt: skip
                continue
            text = action.help or ""
            if f"({action.default})" not in text and "default" not in text:
                silent.append(f"{name} {action.option_strings[0]} ({action.default})")
    assert not silent
    # e.g. sample's bit depth: 16 (a TIFF) unless asked
    sample = commands["sample"].format_help()
    assert "16: 16-bit TIFF, 8: 8-bit PNG (16)" in " ".join(sample.split())


def test_convert_away_from_the_images_says_how_to_read_it_back(dataset_dir, tmp_path, capsys):
    """Written into another folder, the output names its images as their folder does:
    read back from there, no image was found, and nothing had said why."""
    out = tmp_path / "elsewhere" / "x.json"
    assert main(["convert", str(dataset_dir), "--to", "coco", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"the images are in {dataset_dir}, not in {out.parent}" in err
    assert f"read it with --images {dataset_dir}" in err
    assert main(["convert", str(dataset_dir), "--to", "coco", str(dataset_dir / "c.json")]) == 0
    assert "the images are in" not in capsys.readouterr().err
    folder = tmp_path / "gj"
    assert main(["convert", str(dataset_dir), "--to", "geojson", str(folder)]) == 0
    assert f"not in {folder}" in capsys.readouterr().err
    assert main(["inspect", str(folder), "--no-images"]) == 0
    out_text = capsys.readouterr().out
    assert "of the ROI sets or GeoJSON files not found in" in out_text
    assert "give the images' folder (--images FOLDER on the command line)" in out_text
    assert main(["inspect", str(folder), "--images", str(dataset_dir)]) == 0
    assert "not found in" not in capsys.readouterr().out


def test_merge_names_a_file_given_twice(dataset_dir, tmp_path, capsys):
    """It said the file's first image was "in both p.json and p.json"."""
    pred = dataset_dir / "annotations.json"
    assert main(["merge", str(pred), str(pred), "--out", str(tmp_path / "m.json")]) == 2
    assert f"{pred}: given twice; merge each shard's file once" in capsys.readouterr().err


def test_masks_of_images_none_of_whose_size_is_known_are_refused(dataset_dir, tmp_path, capsys):
    """It wrote "0 mask files and labels.csv" and exited 0."""
    elsewhere = tmp_path / "ann"
    elsewhere.mkdir()
    (elsewhere / "annotations.json").write_bytes((dataset_dir / "annotations.json").read_bytes())
    out = tmp_path / "masks"
    assert main(["convert", str(elsewhere / "annotations.json"), "--to", "masks", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no mask written: the size of none of the" in err and "--images FOLDER" in err
    assert not out.exists()
    argv = ["convert", str(elsewhere / "annotations.json"), "--to", "masks", str(out)]
    assert main([*argv, "--images", str(dataset_dir)]) == 0
    assert (out / "labels.csv").is_file()


def test_progress_shows_a_name_with_a_line_break_on_one_line(capsys):
    from napari_bioanomaly._cli_data import _file_progress

    progress = _file_progress(every=1)
    progress(1, 2, "a\nb.tif")
    progress(2, 2, "c\rd é.tif")
    assert capsys.readouterr().err.splitlines() == ["1/2 a\\nb.tif", "2/2 c\\rd é.tif"]


def test_masks_not_written_for_another_cause_say_that_cause(tmp_path):
    """Every image of known size, none written (a mask's name too long): it said the size
    of none was known, and to give the images' folder."""
    from napari_bioanomaly.core.masks import write_label_masks
    from napari_bioanomaly.core.model import BioAnomalyError, Dataset, ImageRecord

    dataset = Dataset(images=[ImageRecord("a" * 250 + ".png", (8, 8))], root=tmp_path)
    with pytest.raises(BioAnomalyError) as caught:
        write_label_masks(dataset, tmp_path / "m")
    assert "no mask written: " in str(caught.value) and "size of none" not in str(caught.value)
