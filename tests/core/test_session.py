"""The annotation session: lazy open, statuses, autosave, disk conflicts, undo, resume."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import tifffile

from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.core.session import AnnotationSession, DiskChanged, summary
from napari_bioanomaly.core.via import ImportOptions


def square(r=10.0, c=10.0, s=20.0):
    return np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]])


def saved(folder):
    data = json.loads((folder / "annotations.json").read_text())
    return {v["filename"]: v for v in data["_via_img_metadata"].values()}


def test_open_is_lazy_and_reports_missing_images(dataset_dir):
    (dataset_dir / "img_002.tif").unlink()
    session = AnnotationSession.open(dataset_dir)
    assert all(im.shape is None for im in session.dataset.images)
    assert session.problems == {"img_002.tif": "image file not found"}
    assert session.status(2) == "missing"
    pixels = session.read_pixels(0)
    assert pixels.shape == (128, 128) and session.image.shape == (128, 128)
    with pytest.raises(BioAnomalyError, match=r"img_002\.tif: image file not found"):
        session.read_pixels(2)


def test_statuses_and_summary(dataset_dir):
    session = AnnotationSession.open(dataset_dir / "annotations.json")
    counts = summary(session)
    n_normal = sum(im.no_anomaly for im in session.dataset.images)
    assert counts["checked: no anomaly"] == n_normal
    assert counts["annotated"] == len(session.dataset.images) - n_normal
    session.set_flag("reviewed", True, 0)
    assert session.status(0) == "reviewed"


def test_edits_save_atomically_with_backup(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    before = (dataset_dir / "annotations.json").read_text()
    assert session.save() is None  # nothing changed, nothing written
    session.go_to(1)
    changed = session.set_regions([*session.image.regions, Region(square(), "hair")])
    assert changed and session.dirty
    session.save()
    assert not session.dirty
    assert (dataset_dir / "annotations.json.bak").read_text() == before
    regions = saved(dataset_dir)["img_001.tif"]["regions"]
    assert regions[-1]["region_attributes"]["class"] == "hair"
    assert session.set_regions(list(session.image.regions)) is False


def test_a_copy_holds_the_unsaved_changes_and_never_replaces_the_own_file(dataset_dir, tmp_path):
    session = AnnotationSession.open(dataset_dir)
    own = (dataset_dir / "annotations.json").read_text()
    session.set_regions([*session.image.regions, Region(square(), "hair")])
    with pytest.raises(BioAnomalyError, match="the dataset's own file"):
        session.save_copy(dataset_dir / "." / "annotations.json")
    os.link(dataset_dir / "annotations.json", dataset_dir / "other-name.json")  # same file
    with pytest.raises(BioAnomalyError, match="the dataset's own file"):
        session.save_copy(dataset_dir / "other-name.json")
    with pytest.raises(BioAnomalyError, match="the dataset's own file"):
        session.save_copy(dataset_dir / "annotations.json.bak")
    with pytest.raises(BioAnomalyError, match="folder of earlier versions"):
        session.save_copy(dataset_dir / ".annotations.json.history" / "mine.json")
    copy = session.save_copy(tmp_path / "copy.json")
    entry = next(v for v in json.loads(copy.read_text())["_via_img_metadata"].values()
                 if v["filename"] == session.image.filename)  # fmt: skip
    assert entry["regions"][-1]["region_attributes"]["class"] == "hair"
    assert (dataset_dir / "annotations.json").read_text() == own and session.dirty


def test_drawing_on_a_no_anomaly_image_clears_the_flag(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    normal = next(i for i, im in enumerate(session.dataset.images) if im.no_anomaly)
    session.set_regions([Region(square(), "dust")], normal)
    assert session.dataset.images[normal].no_anomaly is False


def test_file_changed_on_disk_is_never_overwritten_silently(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    time.sleep(0.01)
    other = json.loads((dataset_dir / "annotations.json").read_text())
    other["_via_settings"]["project"]["name"] = "edited elsewhere"
    (dataset_dir / "annotations.json").write_text(json.dumps(other))
    session.set_regions([Region(square(), "dust")], 0)
    with pytest.raises(DiskChanged, match="changed on disk by another program"):
        session.save()
    assert json.loads((dataset_dir / "annotations.json").read_text()) == other
    session.save(force=True)
    assert json.loads((dataset_dir / "annotations.json.bak").read_text()) == other
    assert saved(dataset_dir)["img_000.tif"]["regions"][0]["region_attributes"]["class"] == "dust"


def test_their_version_saved_over_outlasts_the_next_save(dataset_dir):
    """Keep mine: the other program's version was only the .bak, which the next ordinary
    save replaced (a colleague's qc flags of every image, gone). It is kept among the
    earlier versions too, however recent the last one."""
    from napari_bioanomaly.core import fileio, history

    path = dataset_dir / "annotations.json"
    session = AnnotationSession.open(dataset_dir)
    session.set_regions([Region(square(), "dust")], 0)
    session.save()  # the first save keeps a version: the next one is not due for minutes
    theirs = json.loads(path.read_text())
    theirs["_via_settings"]["project"]["name"] = "theirs"
    path.write_text(json.dumps(theirs))
    session.set_regions([Region(square(30), "hair")], 1)
    with pytest.raises(DiskChanged):
        session.save()
    session.save(force=True)  # keep mine
    session.set_regions([Region(square(50), "dust")], 2)
    assert session.save()  # the .bak is now this save's
    assert json.loads(fileio.backup_path(path).read_text()) != theirs
    kept = [json.loads(v.read_text()) for v in history.versions(path)]
    assert theirs in kept


def test_a_file_moved_away_is_said_so_not_said_changed(dataset_dir):
    """The annotation file was moved or deleted while open: the save refuses as for a
    change, saying so (it said 'changed on disk', theirs kept as .bak: there is none)."""
    path = dataset_dir / "annotations.json"
    session = AnnotationSession.open(dataset_dir)
    path.rename(dataset_dir / "moved.json")
    session.set_regions([Region(square(), "dust")], 0)
    with pytest.raises(DiskChanged, match="no longer there: moved or deleted") as caught:
        session.save()
    assert caught.value.gone and not path.exists()
    session.save(force=True)  # save it there again
    assert saved(dataset_dir)["img_000.tif"]["regions"][0]["region_attributes"]["class"] == "dust"


def test_reload_discards_changes(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    n = len(session.dataset.images[0].regions)
    session.set_regions([], 0)
    session.reload()
    assert len(session.dataset.images[0].regions) == n and not session.dirty


def test_undo_stack_and_classes(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    session.push_deleted([Region(square(), "dust")], 0)
    deleted = session.pop_deleted()
    assert deleted.image == "img_000.tif" and deleted.regions[0].label == "dust"
    assert session.pop_deleted() is None
    used = next(iter(session.dataset.class_counts()))
    with pytest.raises(BioAnomalyError, match="still in use"):
        session.set_classes([c for c in session.dataset.classes if c != used])
    session.rename_class(used, "renamed")
    assert "renamed" in session.dataset.classes
    assert all(r.label != used for r in session.dataset.regions)
    with pytest.raises(BioAnomalyError, match="exists already"):
        session.rename_class("renamed", session.dataset.classes[-1])


def test_reopening_returns_to_the_last_image(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    session.go_to(4)
    again = AnnotationSession.open(dataset_dir / "annotations.json")
    assert again.current == 4
    assert AnnotationSession.last_opened() == (dataset_dir / "annotations.json").resolve()


def test_new_dataset_from_a_folder_of_images(tmp_path):
    folder = tmp_path / "raw"
    (folder / "plate1").mkdir(parents=True)
    tifffile.imwrite(folder / "plate1" / "a.tif", np.zeros((40, 50), np.uint16))
    tifffile.imwrite(folder / "b.tif", np.zeros((40, 50), np.uint8))
    session = AnnotationSession.open(folder)
    assert [im.filename for im in session.dataset.images] == ["b.tif", "plate1/a.tif"]
    assert session.dataset.classes[:2] == ["dark spot", "scratch"]
    assert not (folder / "annotations.json").exists()
    session.set_regions([Region(square(1, 1, 5), "scratch")], 1)
    session.save()
    data = json.loads((folder / "annotations.json").read_text())
    assert data["_via_image_id_list"] == ["b.tif-1", "plate1/a.tif-1"]
    with pytest.raises(BioAnomalyError, match="no images"):
        AnnotationSession.new(tmp_path / "config")


def test_regions_beyond_a_smaller_image_are_clipped_when_it_is_read(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    session.set_regions([Region(square(100, 100, 50), "dust")], 0)
    session.save()
    session.read_pixels(0)
    (region,) = session.dataset.images[0].regions
    assert region.bbox == (100, 100, 128, 128)
    assert any("clipped" in w for w in session.report.warnings)
    assert os.path.exists(dataset_dir / "annotations.json")


def test_regions_of_an_image_recorded_turned_are_kept_not_clipped(tmp_path):
    """A COCO file records a JPEG unturned while it reads turned by its EXIF orientation
    (or its width and height swapped): the size is the file's turned by a quarter, so
    the regions are kept as recorded, said, and nothing is saved (clipping them to the
    turned size and saving lost what lay beyond)."""
    from PIL import Image

    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "a.png")
    outline = [5.0, 5.0, 35.0, 5.0, 35.0, 55.0, 5.0, 55.0]  # x, y: down to row 55 of 60
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 60}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [outline],
                         "area": 1500.0, "bbox": [5, 5, 30, 50], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "dust"}],
    }  # fmt: skip
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(coco))
    session = AnnotationSession.open(path)
    (before,) = session.dataset.images[0].regions
    session.read_pixels(0)
    (after,) = session.dataset.images[0].regions
    assert after.bbox == before.bbox and after.bbox[2] > 40
    assert not session.dirty
    assert any("turned by a quarter" in w and "not clipped" in w for w in session.report.warnings)


def test_incremental_autosave_writes_exactly_a_full_export(dataset_dir):
    from napari_bioanomaly.core import via

    session = AnnotationSession.open(dataset_dir)
    session.set_regions([Region(square(), "dust")], 0)
    session.save()
    session.set_flag("reviewed", True, 3)
    session.set_file_attributes({"cell_line": "MCF7", "plate": "2"}, 2)
    session.rename_class("dust", "fine dust")
    session.set_regions([*session.dataset.images[1].regions, Region(square(40), "hair")], 1)
    session.save()
    on_disk = json.loads((dataset_dir / "annotations.json").read_text())
    assert on_disk == json.loads(json.dumps(via.to_via_project(session.dataset)))


def test_integers_beyond_64_bits_in_the_file_are_saved_back_as_they_were(dataset_dir):
    """A VIA file whose attributes hold an integer beyond 64 bits (an instrument's ids)
    opened, but no change of it could be saved: the autosave raised orjson's TypeError."""
    path = dataset_dir / "annotations.json"
    data = json.loads(path.read_text())
    big = 123456789012345678901234567890
    entry = next(iter(data["_via_img_metadata"].values()))
    entry["file_attributes"]["barcode"] = big
    entry["regions"][0]["region_attributes"]["colony"] = big
    path.write_text(json.dumps(data))
    session = AnnotationSession.open(path)
    session.set_regions([*session.dataset.images[0].regions, Region(square(), "dust")], 0)
    assert session.save() == path
    entry = next(iter(json.loads(path.read_text())["_via_img_metadata"].values()))
    assert entry["file_attributes"]["barcode"] == big
    assert entry["regions"][0]["region_attributes"]["colony"] == big
    assert len(entry["regions"]) == len(session.dataset.images[0].regions)


def test_a_change_of_the_same_size_and_time_is_still_seen(dataset_dir):
    """The fingerprint is the file's content: mtime and size alone miss this change."""
    path = dataset_dir / "annotations.json"
    session = AnnotationSession.open(path)
    st = path.stat()
    text = path.read_text()
    other = text.replace('"dust"', '"DUST"', 1)
    assert other != text and len(other) == len(text)
    path.write_text(other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    session.set_regions([Region(square(), "hair")], 0)
    with pytest.raises(DiskChanged):
        session.save()
    assert path.read_text() == other  # theirs kept


def test_two_processes_saving_one_file_for_30_s_lose_no_edit(dataset_dir):
    from tests.support.concurrent import run

    result = run(dataset_dir, seconds=30)  # each completed save logged, then looked for
    assert result["completed"] >= 6, result
    assert result["lost"] == 0, f"{result['lost']} of {result['completed']} completed saves lost"


def test_qc_save_refuses_to_overwrite_a_file_saved_while_it_ran(dataset_dir, monkeypatch, capsys):
    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core import quality

    path = dataset_dir / "annotations.json"
    check = quality.check
    calls = []

    def check_while_someone_saves(image):
        if not calls:  # the annotator saves while qc looks at the first image
            session = AnnotationSession.open(path)
            session.set_regions([Region(square(), "saved meanwhile")], 0)
            session.save()
        calls.append(1)
        return check(image)

    monkeypatch.setattr(quality, "check", check_while_someone_saves)
    assert main(["qc", str(dataset_dir), "--save"]) == 2
    assert "changed on disk while qc ran" in capsys.readouterr().err
    assert "saved meanwhile" in path.read_text()
    monkeypatch.setattr(quality, "check", check)
    assert main(["qc", str(dataset_dir), "--save"]) == 0  # nothing in between: written
    assert "saved meanwhile" in path.read_text()


def test_opening_removes_temporaries_left_by_a_killed_save(dataset_dir):
    from napari_bioanomaly.core.fileio import file_lock, remove_stale_temporaries

    path = dataset_dir / "annotations.json"
    stale = [
        dataset_dir / ".annotations.json.ab12.tmp",
        dataset_dir / ".annotations.json.bak.cd34.tmp",
    ]
    young = dataset_dir / ".annotations.json.ef56.tmp"
    other = dataset_dir / ".other.json.aa11.tmp"
    for tmp in [*stale, young, other]:
        tmp.write_text("{")
    old = time.time() - 3600
    for tmp in [*stale, other]:
        os.utime(tmp, (old, old))
    with file_lock(path):  # a save in progress: only the old ones can be left-overs
        assert remove_stale_temporaries(path) == 2
    assert young.exists() and not any(t.exists() for t in stale)
    AnnotationSession.open(path)  # nobody saves now: every left-over of ours goes
    assert not young.exists() and other.exists()  # not ours


def test_the_backup_is_replaced_whole(dataset_dir, monkeypatch):
    """The previous version is copied to a temporary file and renamed over the .bak, so a
    kill during the copy leaves the old backup whole (it used to be copied in place)."""
    from napari_bioanomaly.core import fileio

    path = dataset_dir / "annotations.json"
    session = AnnotationSession.open(path)
    session.set_regions([Region(square(), "hair")], 0)
    session.save()
    backup = fileio.backup_path(path)
    first_backup = backup.read_bytes()
    json.loads(first_backup)
    calls = []
    real = fileio.shutil.copyfileobj

    def killed_midway(src, dst, length=0):
        dst.write(src.read(10))  # half a copy, then the process dies
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.shutil, "copyfileobj", killed_midway)
    session.set_regions([Region(square(5, 5, 5), "dust")], 1)
    with pytest.raises(KeyboardInterrupt):
        session.save()
    monkeypatch.setattr(fileio.shutil, "copyfileobj", real)
    assert calls and backup.read_bytes() == first_backup  # still whole
    assert not list(dataset_dir.glob(".annotations.json*.tmp"))


def _as_coco(dataset_dir, name="annotations.json"):
    """The sample's annotations replaced by a COCO file of the same regions."""
    from napari_bioanomaly.core import annotations

    dataset, _ = annotations.load(dataset_dir / "annotations.json")
    (dataset_dir / "annotations.json").unlink()
    annotations.save(dataset, dataset_dir / name, "coco")
    return dataset_dir / name


@pytest.mark.parametrize("name", ["annotations.json", "mycoco.json", "cells.via.json"])
def test_edits_of_an_imported_coco_file_are_what_opens_next_time(dataset_dir, name):
    coco = _as_coco(dataset_dir, name)
    from napari_bioanomaly.core import annotations

    # before the first save the edits file stands for the import (Train is given its name)
    edits = dataset_dir / (coco.stem + ".via.json")
    unsaved, _ = annotations.open_dataset(edits, read_images=False)
    assert len(unsaved.regions) == len(annotations.load(coco, read_images=False)[0].regions)
    s = AnnotationSession.open(dataset_dir)
    first = s.dataset.images[0].filename
    assert s.dataset.images[0].regions
    s.go_to(0)
    s.set_regions([])
    s.save()
    assert s.path == dataset_dir / (coco.stem + ".via.json")
    for source in (dataset_dir, coco):  # the folder, or the imported file itself
        again = AnnotationSession.open(source)
        assert again.path == s.path
        assert again.dataset.image(first).regions == []  # the deletion holds
        assert any("edits of " + coco.name in str(i) for i in again.report.issues)
    # the next save keeps it, and the CLI reads the edits too
    again.go_to(1)
    again.set_regions([*again.image.regions, Region(square(), "hair")])
    again.save()
    from napari_bioanomaly.core import annotations

    for source in (dataset_dir, coco):
        dataset, report = annotations.open_dataset(source, read_images=False)
        assert dataset.image(first).regions == []
        assert any(f"the edits of {coco.name} saved here" in str(i) for i in report.issues)
        assert annotations.find_annotation_file(dataset_dir) == coco


def test_a_class_renamed_in_the_edits_of_a_coco_import_keeps_its_id_when_reopened(dataset_dir):
    """The ids were taken from the COCO file again at each open, by class name: a class
    renamed there and saved got a new id at the next COCO export once the file had been
    reopened (a pipeline reading category 1 as dust lost it). The edits keep them."""
    import json

    from napari_bioanomaly.core import annotations

    coco = _as_coco(dataset_dir)
    data = json.loads(coco.read_text())
    for cat in data["categories"]:  # ids and supercategories of another tool
        cat["id"] += 40
        cat["supercategory"] = "debris"
    coco.write_text(json.dumps(data))
    ids = {c["name"]: c["id"] for c in data["categories"]}
    session = AnnotationSession.open(coco)
    session.rename_class("dust", "fine dust")
    session.save()
    again = AnnotationSession.open(dataset_dir)
    assert again.path == session.path and "fine dust" in again.dataset.classes
    annotations.save(again.dataset, dataset_dir / "out.json", "coco")
    written = {c["name"]: c for c in json.loads((dataset_dir / "out.json").read_text())[
        "categories"]}  # fmt: skip
    assert written["fine dust"]["id"] == ids["dust"]
    assert {n: c["id"] for n, c in written.items()} == {
        **{n: i for n, i in ids.items() if n != "dust"},
        "fine dust": ids["dust"],
    }
    assert {c["supercategory"] for c in written.values()} == {"debris"}
    # "other" (no region) removed, and another class renamed to its name: its regions
    # took the id of the class removed
    kept = next(name for name in again.dataset.class_names() if name not in ("fine dust",
                                                                               "other"))  # fmt: skip
    again.set_classes([c for c in again.dataset.classes if c != "other"])
    again.rename_class(kept, "other")
    annotations.save(again.dataset, dataset_dir / "out2.json", "coco")
    written = {c["name"]: c["id"] for c in json.loads((dataset_dir / "out2.json").read_text())[
        "categories"]}  # fmt: skip
    assert written["other"] == ids[kept] and ids["other"] not in written.values()


def test_two_imports_of_one_stem_do_not_share_their_edits(dataset_dir):
    """cells.json (COCO) and cells.zip (Fiji ROI set) both saved their edits to
    cells.via.json: opening cells.zip after cells.json was edited opened cells.json's
    edits, and saving wrote cells.zip's work over them. The edits name their import; the
    other import is refused, naming both files and what to do."""
    import json

    from napari_bioanomaly.core import annotations

    coco = _as_coco(dataset_dir, "cells.json")
    dataset, _ = annotations.load(coco)
    annotations.save(dataset, dataset_dir / "rois", "imagej")
    rois = dataset_dir / "cells.zip"
    first = next(iter(sorted((dataset_dir / "rois").glob("*.zip"))))
    rois.write_bytes(first.read_bytes())
    session = AnnotationSession.open(coco)
    session.go_to(0)
    session.set_regions([])
    session.save()
    edits = dataset_dir / "cells.via.json"
    assert (
        json.loads(edits.read_text())["_via_settings"]["project"]["imported_from"] == "cells.json"
    )
    before = edits.read_bytes()
    # edited (napari, qc --save): refused, with a name that keeps it to its image
    with pytest.raises(BioAnomalyError, match=r"cells\.zip: its edits would be saved to "
                       r"cells\.via\.json, which holds the edits of cells\.json .* rename "
                       r"cells\.zip to cells_rois\.zip and open it"):  # fmt: skip
        AnnotationSession.open(rois)
    # read (inspect, convert, train): the ROI set itself, not the other import's edits
    read, report = annotations.load(rois, read_images=False)
    assert len(read.regions) == len(annotations.load(first, read_images=False)[0].regions)
    assert not any("edits of" in str(i) for i in report.issues)
    assert edits.read_bytes() == before
    from napari_bioanomaly.cli import main

    assert main(["qc", str(rois), "--save"]) == 2  # its flags would go to the other's edits
    assert edits.read_bytes() == before
    (dataset_dir / "cells.zip").rename(dataset_dir / "cells_rois.zip")
    renamed = AnnotationSession.open(dataset_dir / "cells_rois.zip")  # its own, now
    assert renamed.path == dataset_dir / "cells_rois.via.json"
    assert renamed.dataset.images[0].filename == "cells.tif"  # the image cells.zip named
    # a case-insensitive file system: CELLS.json is cells.json, its edits its own
    data = json.loads(edits.read_text())
    data["_via_settings"]["project"]["imported_from"] = "CELLS.json"
    edits.write_text(json.dumps(data))
    assert AnnotationSession.open(coco).path == edits
    again = AnnotationSession.open(coco)  # its own edits, as before
    assert again.path == edits and again.dataset.images[0].regions == []
    # edits saved before they named their import: taken as the import's, and named at
    # the next save
    data = json.loads(before)
    del data["_via_settings"]["project"]["imported_from"]
    edits.write_text(json.dumps(data))
    older = AnnotationSession.open(coco)
    assert older.path == edits and older.dataset.images[0].regions == []
    older.go_to(1)
    older.set_regions([])
    older.save()
    assert (
        json.loads(edits.read_text())["_via_settings"]["project"]["imported_from"] == "cells.json"
    )


def test_unreadable_edits_of_an_import_stop_the_open_instead_of_being_overwritten(dataset_dir):
    coco = _as_coco(dataset_dir)
    edits = dataset_dir / "annotations.via.json"
    edits.write_text("{not json")
    with pytest.raises(BioAnomalyError, match=r"annotations\.via\.json: should hold the edits"):
        AnnotationSession.open(dataset_dir)
    assert edits.read_text() == "{not json"
    assert coco.is_file()


def test_qc_save_on_an_imported_coco_file_keeps_its_edits_and_its_folder_annotated(
    dataset_dir, capsys
):
    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core import annotations

    coco = _as_coco(dataset_dir, "mycoco.json")
    n = len(annotations.open_dataset(dataset_dir, read_images=False)[0].regions)
    assert main(["qc", str(dataset_dir), "--save"]) == 0
    assert (dataset_dir / "mycoco.via.json").is_file()
    dataset, _ = annotations.open_dataset(dataset_dir, read_images=False)
    assert len(dataset.regions) == n  # not an empty folder after qc wrote the project
    assert all("qc" in im.file_attributes for im in dataset.images)
    s = AnnotationSession.open(dataset_dir)
    first = s.dataset.images[0].filename
    s.go_to(0)
    s.set_regions([])
    s.save()
    assert main(["qc", str(coco), "--save"]) == 0  # the COCO file named: its edits kept
    dataset, _ = annotations.open_dataset(dataset_dir, read_images=False)
    assert dataset.image(first).regions == []
    assert json.loads(coco.read_text())["annotations"]  # the import itself untouched


def test_regions_the_import_skips_are_saved_back_as_they_were(dataset_dir):
    path = dataset_dir / "annotations.json"
    project = json.loads(path.read_text())
    entries = list(project["_via_img_metadata"].values())
    point = {"shape_attributes": {"name": "point", "cx": 5, "cy": 6},
             "region_attributes": {"type": "dust"}}  # fmt: skip
    entries[0]["regions"].append(point)
    path.write_text(json.dumps(project))
    s = AnnotationSession.open(dataset_dir)
    assert any("point skipped" in str(i) for i in s.report.issues)
    n = len(s.dataset.images[0].regions)
    s.go_to(0)
    s.set_regions(s.image.regions[:1])  # edit the image with the point
    s.save()
    regions = saved(dataset_dir)[entries[0]["filename"]]["regions"]
    assert len(regions) == 2 and n > 1
    assert regions[-1] == point  # not shown, not lost


def _as_per_image(dataset_dir, fmt):
    """The sample's annotations replaced by per-image files (Fiji ROI sets or GeoJSON)."""
    from napari_bioanomaly.core import annotations

    dataset, _ = annotations.load(dataset_dir / "annotations.json")
    (dataset_dir / "annotations.json").unlink()
    annotations.save(dataset, dataset_dir, fmt)
    return dataset


@pytest.mark.parametrize("fmt", ["geojson", "imagej"])
def test_a_folder_of_per_image_files_opens_as_the_cli_reads_it_and_its_edits_next_time(
    dataset_dir, fmt
):
    from napari_bioanomaly.core import annotations

    original = _as_per_image(dataset_dir, fmt)
    cli, _, _ = annotations.open_folder(dataset_dir)
    s = AnnotationSession.open(dataset_dir)
    assert s.report.format != "new"
    assert len(s.dataset.regions) == len(cli.regions) == len(original.regions) > 0
    assert any("imported from" in str(i) and "annotations.json" in str(i)
               for i in s.report.issues)  # fmt: skip
    assert s.path == dataset_dir / "annotations.json" and not s.path.exists()
    # the not-yet-saved edits file stands for the folder too
    assert len(AnnotationSession.open(s.path).dataset.regions) == len(original.regions)
    first = next(i for i, im in enumerate(s.dataset.images) if im.regions)
    name = s.dataset.images[first].filename
    s.set_regions([], first)
    s.save()
    # reopening opens the edits (the deletion holds), saying the per-image files are not read
    for again in (AnnotationSession.open(dataset_dir), AnnotationSession.open(s.path)):
        assert again.path == s.path
        assert again.dataset.image(name).regions == []
        assert len(again.dataset.regions) == len(original.regions) - len(
            original.image(name).regions
        )
        assert any("not read" in str(i) for i in again.report.issues)
    dataset, report, ann = annotations.open_folder(dataset_dir)
    assert ann == s.path and dataset.image(name).regions == []
    assert any("not read" in str(i) for i in report.issues)


def test_adding_a_class_is_never_stopped_by_labels_outside_the_class_list(dataset_dir):
    """A region with no class (shown as the fallback label) and a combination of checkbox
    options are in use but not in the list: adding a class works, and an option in use
    only inside a combination cannot be removed."""
    from napari_bioanomaly.core.model import FALLBACK_CLASS
    from napari_bioanomaly.core.via_parse import join_options

    s = AnnotationSession.open(dataset_dir)
    ds = s.dataset
    ds.attribute_definitions = {
        "region": {ds.class_attribute: {"type": "checkbox", "options": {"GFP+": "", "dead": ""}}}
    }
    ds.classes = ["GFP+", "dead"]
    for im in ds.images:
        im.regions = []
    ds.images[0].regions = [Region(square(), join_options(["GFP+", "dead"]))]
    ds.images[1].regions = [Region(square(), FALLBACK_CLASS)]
    s.set_classes([*ds.classes, "fiber"])
    assert ds.classes == ["GFP+", "dead", "fiber"]
    with pytest.raises(BioAnomalyError, match="in use: dead"):
        s.set_classes(["GFP+", "fiber"])
    s.set_classes(["GFP+", "dead"])  # an unused class can go


def test_the_label_of_regions_with_no_class_never_becomes_a_class_option(dataset_dir):
    from napari_bioanomaly.core.model import FALLBACK_CLASS

    s = AnnotationSession.open(dataset_dir)
    # as read from a file (VIA, with an empty class) and drawn beside in napari
    unclassified = Region(square(), FALLBACK_CLASS, unlabelled='""')
    s.set_regions([unclassified], 0)
    s.set_regions([unclassified, Region(square(40, 40, 10), "scratch")], 0)
    assert FALLBACK_CLASS not in s.dataset.classes
    s.save()
    data = json.loads(s.path.read_text())
    options = data["_via_attributes"]["region"][s.dataset.class_attribute]["options"]
    assert FALLBACK_CLASS not in options and "scratch" in options
    assert FALLBACK_CLASS not in AnnotationSession.open(dataset_dir).dataset.classes


@pytest.mark.parametrize("fmt", ["geojson", "coco"])
def test_an_import_keeps_its_own_classes_not_the_defaults(dataset_dir, fmt):
    from napari_bioanomaly.core import annotations

    if fmt == "coco":
        _as_coco(dataset_dir)
    else:
        _as_per_image(dataset_dir, fmt)
    imported, _, _ = annotations.open_folder(dataset_dir)
    own = set(imported.class_names()) - {"anomaly"}
    s = AnnotationSession.open(dataset_dir)
    assert set(s.dataset.classes) == own
    if fmt == "geojson":  # the sample uses 3 classes, not the 6 defaults
        assert len(own) < 6
    s.set_regions([], 0)
    s.save()
    saved, _ = annotations.load(s.path, read_images=False)
    assert set(saved.classes) == own


def test_renaming_a_checkbox_option_renames_it_in_combinations_and_the_definition(dataset_dir):
    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.via_parse import join_options

    s = AnnotationSession.open(dataset_dir)
    ds = s.dataset
    options = {"GFP+": "GFP+", "dead": "dead"}
    ds.attribute_definitions = {
        "region": {ds.class_attribute: {"type": "checkbox", "options": options}}
    }
    ds.classes = ["GFP+", "dead"]
    s.set_regions([Region(square(), join_options(["GFP+", "dead"])),
                   Region(square(40, 40, 10), "dead")], 0)  # fmt: skip
    s.rename_class("dead", "necrotic")
    assert [r.label for r in ds.images[0].regions] == [join_options(["GFP+", "necrotic"]),
                                                        "necrotic"]  # fmt: skip
    assert ds.classes == ["GFP+", "necrotic"]
    s.save()
    saved, _ = annotations.load(s.path, read_images=False)
    defined = json.loads(s.path.read_text())["_via_attributes"]["region"][ds.class_attribute]
    assert list(defined["options"])[:2] == ["GFP+", "necrotic"]
    assert "dead" not in defined["options"]
    assert sorted(r.label for r in saved.images[0].regions) == sorted(
        [join_options(["GFP+", "necrotic"]), "necrotic"]
    )


def test_a_folder_opened_after_one_of_its_files_was_edited_alone_reads_those_edits(dataset_dir):
    """``a.geojson`` edited alone (its edits in ``a.via.json``), then the folder opened: the
    folder read ``a.geojson`` as it was (the deletions back, the edits never read again
    once the folder's edits were saved), or took ``a.via.json`` for the folder's file."""
    from napari_bioanomaly.core import annotations

    original = _as_per_image(dataset_dir, "geojson")
    name = next(im.filename for im in original.images if im.regions)
    single = dataset_dir / (name.rsplit(".", 1)[0] + ".geojson")
    alone = AnnotationSession.open(single)
    alone.set_regions([], 0)
    alone.save()
    assert alone.path.name.endswith(".via.json")
    assert annotations.find_annotation_file(dataset_dir) is None  # not the folder's file
    s = AnnotationSession.open(dataset_dir)
    assert s.dataset.image(name).regions == []
    assert len(s.dataset.regions) == len(original.regions) - len(original.image(name).regions)


def test_a_class_named_anomaly_by_its_file_is_a_class(tmp_path):
    """The fallback label stands for no class only where the file gave none: a GeoJSON
    classified ``anomaly`` (as the unsupervised models' predictions are) keeps it."""
    square = [[[2.0, 2.0], [12.0, 2.0], [12.0, 12.0], [2.0, 12.0], [2.0, 2.0]]]
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"objectType": "annotation", "classification": {"name": c}}}
        for c in ("anomaly", "dust")
    ]  # fmt: skip
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((20, 20), np.uint16))
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    s = AnnotationSession.open(path)
    assert sorted(s.dataset.classes) == ["anomaly", "dust"]


def test_renaming_a_class_leaves_other_attributes_and_takes_its_coco_category(dataset_dir):
    """An option named like the class in another attribute (a cause 'dust') is no class:
    renaming the class renamed it too, its regions' values left matching no option; a COCO
    file's id and supercategory of the class go with the new name."""
    s = AnnotationSession.open(dataset_dir)
    ds = s.dataset
    cls = ds.class_attribute
    ds.attribute_definitions = {"region": {
        cls: {"type": "dropdown", "options": {"dust": "", "hair": ""}},
        "cause": {"type": "dropdown", "options": {"dust": "", "air": ""}},
    }}  # fmt: skip
    ds.categories = {"dust": {"id": 7, "supercategory": "debris"}}
    s.rename_class("dust", "debris")
    region = ds.attribute_definitions["region"]
    assert set(region[cls]["options"]) == {"debris", "hair"}
    assert set(region["cause"]["options"]) == {"dust", "air"}
    assert ds.categories == {"debris": {"id": 7, "supercategory": "debris"}}


def test_edits_of_a_coco_import_keep_its_category_ids(tmp_path):
    """Edits of a COCO file are saved as a VIA project, which has no place for COCO
    categories: reopened (in napari, by the CLI, after a reload), the dataset takes them
    from the import, and a COCO export writes its ids and supercategories back (it wrote
    ids 1, 2, ..., breaking a training configuration that names them)."""
    from PIL import Image

    from napari_bioanomaly.core import annotations

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "a.png")
    box = [5.0, 5.0, 25.0, 5.0, 25.0, 25.0, 5.0, 25.0]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [box], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3,
             "segmentation": [[v + 30 for v in box]], "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "dust", "supercategory": "debris"},
                       {"id": 3, "name": "hair", "supercategory": "fibre"}],
    }  # fmt: skip
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(coco))
    session = AnnotationSession.open(path)
    session.set_regions(session.dataset.images[0].regions[:1], 0)  # the hair deleted
    assert session.save() == tmp_path / "cells.via.json"

    def exported(ds) -> list[tuple]:
        annotations.save(ds, tmp_path / "out.json", "coco")
        out = json.loads((tmp_path / "out.json").read_text())
        cats = {c["id"]: (c["name"], c["supercategory"]) for c in out["categories"]}
        return [cats[a["category_id"]] + (a["category_id"],) for a in out["annotations"]]

    again = AnnotationSession.open(path)
    assert exported(again.dataset) == [("dust", "debris", 7)]
    again.reload()
    assert exported(again.dataset) == [("dust", "debris", 7)]
    read, _ = annotations.load(path)  # as the CLI reads it
    assert exported(read) == [("dust", "debris", 7)]


def _defect_project(tmp_path):
    """A VIA project whose classes are under ``defect``, beside a ``severity``."""
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "a.png")
    regions = [
        {"shape_attributes": {"name": "rect", "x": 5 + 30 * i, "y": 5, "width": 20, "height": 20},
         "region_attributes": {"defect": cls, "severity": sev}}
        for i, (cls, sev) in enumerate([("scratch", "high"), ("dust", "low")])
    ]  # fmt: skip
    project = {
        "_via_settings": {"ui": {"image": {"region_label": "__via_region_id__"}},
                          "core": {}, "project": {"name": "lab"}},
        "_via_img_metadata": {"a.png-1": {"filename": "a.png", "size": -1, "regions": regions,
                                          "file_attributes": {}}},
        "_via_attributes": {"region": {
            "defect": {"type": "dropdown", "options": {"scratch": "", "dust": "", "hair": ""}},
            "severity": {"type": "text"}}, "file": {}},
    }  # fmt: skip
    path = tmp_path / "project.json"
    path.write_text(json.dumps(project))
    return path


def test_the_class_attribute_chosen_in_annotate_is_read_again_everywhere(tmp_path):
    """A VIA file with its classes under ``defect`` (and a ``severity`` beside): every
    region was 'anomaly', said as having no class attribute. Chosen, the classes are read
    from it, the choice is saved in the project's settings (VIA then labels regions by it
    too), and the file is read the same way by a new session and by the CLI."""
    from napari_bioanomaly.core import annotations

    path = _defect_project(tmp_path)
    session = AnnotationSession.open(path)
    assert [r.label for r in session.dataset.regions] == ["anomaly", "anomaly"]
    (said,) = [w for w in session.report.warnings if "no class attribute" in w]
    assert "'defect', 'severity'" in said and "--class-attribute" in said
    assert set(session.class_attributes()) >= {"defect", "severity"}
    session.dataset.regions[0].attributes["score"] = "0.9"  # read before the class: never one
    assert "score" not in session.class_attributes()
    session.dataset.regions[0].attributes.pop("score")

    report = session.set_class_attribute("defect")
    assert not [w for w in report.warnings if "no class attribute" in w]
    assert not [w for w in session.report.warnings if "no class attribute" in w]
    ds = session.dataset
    assert [r.label for r in ds.regions] == ["scratch", "dust"]
    assert [r.attributes for r in ds.regions] == [{"severity": "high"}, {"severity": "low"}]
    assert ds.classes == ["scratch", "dust", "hair"]  # the options the file defines
    assert session.dirty and session.save() == path
    settings = json.loads(path.read_text())["_via_settings"]
    assert settings["project"] == {"name": "lab", "class_attribute": "defect"}
    assert settings["ui"]["image"]["region_label"] == "defect"

    again = AnnotationSession.open(path)
    assert [r.label for r in again.dataset.regions] == ["scratch", "dust"]
    read, _ = annotations.load(path)
    assert [r.label for r in read.regions] == ["scratch", "dust"]
    # --class-attribute over the recorded choice: what is written records the one used
    other, _ = annotations.load(path, options=ImportOptions(class_attribute="severity"))
    assert [r.label for r in other.regions] == ["high", "low"]
    annotations.save(other, tmp_path / "converted.json", "via-project")
    back, _ = annotations.load(tmp_path / "converted.json")
    assert [r.label for r in back.regions] == ["high", "low"]

    # and back: the classes from defect go back under it, severity becomes the class
    again.set_class_attribute("severity")
    assert [r.label for r in again.dataset.regions] == ["high", "low"]
    assert [r.attributes for r in again.dataset.regions] == [{"defect": "scratch"},
                                                              {"defect": "dust"}]  # fmt: skip


def test_encoded_ahead_the_first_save_encodes_only_what_changed(dataset_dir, monkeypatch):
    """The first save of a session encoded every image (0.75 s for 2,000 on napari's
    thread, at the first edit or accept); a worker that opens it encodes them ahead."""
    from napari_bioanomaly.core import via_write

    session = AnnotationSession.open(dataset_dir)
    session.encode_ahead()
    assert set(session._entries) == {im.filename for im in session.dataset.images}
    encoded = []
    real = via_write.image_entry
    monkeypatch.setattr(
        via_write, "image_entry", lambda im, *a: encoded.append(im.filename) or real(im, *a)
    )
    session.go_to(2)
    session.set_regions([Region(square(), "hair")])
    session.save()
    assert encoded == [session.dataset.images[2].filename]
    again = AnnotationSession.open(dataset_dir)
    assert again.dataset.images[2].regions[0].label == "hair"


def test_a_rename_encodes_again_only_the_images_it_changes(dataset_dir, monkeypatch):
    """A rename dropped every image's encoded entry (2,000 encoded again at the next save,
    0.75 s on napari's thread); only those with a region of the class are, where no class
    is a checkbox option (which options a label ticks depends on them all: every image is
    encoded again then). The file saved is what an encoding from nothing writes."""
    from napari_bioanomaly.core import via, via_write
    from napari_bioanomaly.core.jsonio import dumps
    from napari_bioanomaly.core.via_parse import join_options

    encoded = []
    real = via_write.image_entry
    monkeypatch.setattr(via_write, "image_entry",
                        lambda im, *a: encoded.append(im.filename) or real(im, *a))  # fmt: skip
    s = AnnotationSession.open(dataset_dir)
    ds = s.dataset
    s.encode_ahead()
    plain = next(r.label for im in ds.images for r in im.regions)
    encoded.clear()
    s.rename_class(plain, plain + " renamed")
    having = {im.filename for im in ds.images if any(r.label == plain + " renamed"
                                                     for r in im.regions)}  # fmt: skip
    raw = s._serialise()
    assert set(encoded) == having and len(having) < len(ds.images)
    assert json.loads(raw) == json.loads(dumps(via.to_via_project(ds)))
    # checkbox options: "a+b" is one option beside "b" and "z"; z renamed a makes "a+b"
    # read as a and b ticked unless every entry is encoded again
    ds.attribute_definitions = {"region": {ds.class_attribute: {
        "type": "checkbox", "options": {"a+b": "", "b": "", "z": ""}}}}  # fmt: skip
    ds.classes = [*ds.classes, "a+b", "b", "z"]
    s.set_regions([Region(square(), join_options(["a+b"]))], 0)
    s.set_regions([Region(square(40, 40, 10), "z")], 1)
    s._serialise()
    encoded.clear()
    s.rename_class("z", "c")
    raw = s._serialise()
    assert set(encoded) == {im.filename for im in ds.images}
    assert json.loads(raw) == json.loads(dumps(via.to_via_project(ds)))


def test_a_models_predictions_beside_a_dataset_are_never_its_annotation_file(dataset_dir, tmp_path):
    """Predict & review keeps its predictions beside the ground truth
    (``annotations.predictions.json`` in a folder of images alone): the folder opened again
    took them for its annotations (edits written into the predictions), and beside a COCO
    file they made two candidates, so the folder opened with no annotations at all."""
    import shutil

    from napari_bioanomaly.core import annotations
    from napari_bioanomaly.core.review import predictions_path

    ann = dataset_dir / "annotations.json"
    images = tmp_path / "images"
    images.mkdir()
    for p in dataset_dir.glob("*.tif"):
        shutil.copy(p, images)
    shutil.copy(ann, predictions_path(images))
    assert annotations.find_annotation_file(images) is None
    s = AnnotationSession.open(images)
    assert s.dataset.regions == [] and len(s.dataset.images) == len(list(images.glob("*.tif")))
    assert any("annotations.predictions.json: a model's predictions, not this folder's "
               "annotations: the Review widget opens them" in str(i) for i in s.report.issues)  # fmt: skip
    drawn = AnnotationSession.open(ann).dataset.image(s.dataset.images[0].filename).regions
    s.set_regions(list(drawn), 0)
    s.save()  # a new dataset: saved as the folder's own file, the predictions untouched
    assert annotations.find_annotation_file(images) == images / "annotations.json"
    assert predictions_path(images).read_bytes() == ann.read_bytes()

    coco = dataset_dir / "cells-coco.json"
    ann.rename(coco)
    shutil.copy(coco, predictions_path(coco))
    (dataset_dir / "cells-coco.predictions.via.json").write_text("{}")  # edits of it
    assert annotations.find_annotation_file(dataset_dir) == coco
    assert len(AnnotationSession.open(dataset_dir).dataset.regions) > 0


def test_a_name_not_on_disk_opens_the_import_it_stands_for_or_is_refused(dataset_dir):
    """The session of an import edited but not saved goes by the name of its edits
    (``cells.via.json``, in the widgets' fields): opened by that name (the Review widget,
    once the Annotate widget was closed) it was an empty new dataset, whose first save
    hid every annotation of ``cells.json``. A mistyped name opened an empty dataset too."""
    from napari_bioanomaly.core import annotations

    ds, _ = annotations.load(dataset_dir / "annotations.json", read_images=False)
    with pytest.raises(
        BioAnomalyError, match=r"annotation\.json: no such file .*annotations\.json"
    ):
        AnnotationSession.open(dataset_dir / "annotation.json")
    (dataset_dir / "annotations.json").unlink()
    annotations.save(ds, dataset_dir / "cells.json", "coco")
    s = AnnotationSession.open(dataset_dir)
    assert s.path == dataset_dir / "cells.via.json" and not s.path.exists()
    again = AnnotationSession.open(s.path)
    assert again.path == s.path and len(again.dataset.regions) == len(ds.regions) > 0
    assert len(annotations.open_dataset(s.path)[0].regions) == len(ds.regions)
    for name in ("annotations.json", "typo.json"):
        with pytest.raises(BioAnomalyError, match=r"the folder.s annotation file is cells\.json"):
            AnnotationSession.open(dataset_dir / name)
    (dataset_dir / "cells.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    for opening in (AnnotationSession.open, annotations.open_dataset):
        with pytest.raises(BioAnomalyError, match=r"edits of one of cells\.geojson, cells\.json"):
            opening(s.path)  # two imports of one stem: which is not guessed
    (dataset_dir / "cells.geojson").unlink()
    coco = (dataset_dir / "cells.json").read_bytes()
    (dataset_dir / "cells.json").write_bytes(coco[: len(coco) // 2])  # cut short
    for opening in (AnnotationSession.open, annotations.open_dataset):
        with pytest.raises(BioAnomalyError, match=r"cells\.json: malformed JSON"):
            opening(s.path)  # what is wrong with the import, not "no such file"
    (dataset_dir / "cells.json").write_bytes(coco)


def test_the_cli_given_an_imports_unsaved_edits_name_reads_and_keeps_the_import(
    dataset_dir, capsys
):
    """``qc --save cells.via.json`` (the name the widgets' fields show before a save) wrote
    ``cells.via.via.json``, which left the folder with two candidates and opened it empty;
    ``convert cells.via.json --to via cells.json`` replaced the import it reads."""
    from napari_bioanomaly.cli import main
    from napari_bioanomaly.core import annotations

    coco = _as_coco(dataset_dir, "cells.json")
    n = len(annotations.open_dataset(coco, read_images=False)[0].regions)
    edits = dataset_dir / "cells.via.json"
    before = coco.read_bytes()
    assert main(["convert", str(edits), "--to", "via", str(coco)]) != 0
    assert "is the annotation file this command reads" in capsys.readouterr().err
    assert coco.read_bytes() == before
    assert main(["qc", str(edits), "--save"]) == 0
    assert edits.is_file() and not (dataset_dir / "cells.via.via.json").exists()
    assert annotations.find_annotation_file(dataset_dir) == coco
    dataset, _ = annotations.open_dataset(dataset_dir, read_images=False)
    assert len(dataset.regions) == n and all("qc" in im.file_attributes for im in dataset.images)


def test_an_image_opened_as_annotations_says_to_open_its_folder(dataset_dir, capsys):
    """It said "img_000.tif: not UTF-8 text (byte 78); not a JSON file"."""
    from napari_bioanomaly.cli import main

    image = next(dataset_dir.glob("*.tif"))
    with pytest.raises(BioAnomalyError, match=r"an image, not an annotation file: open its "):
        AnnotationSession.open(image)
    assert main(["inspect", str(image)]) == 2
    assert f"{image}: an image, not an annotation file" in capsys.readouterr().err


def test_a_folder_of_per_image_files_lists_its_images_in_name_order(dataset_dir, tmp_path):
    """The images with a GeoJSON file came first, the others after (img_001 ... img_005,
    img_000, img_006)."""
    from napari_bioanomaly.core import annotations

    ds, _ = annotations.load(dataset_dir / "annotations.json")
    ds.images[0].regions = []  # img_000 gets no file
    annotations.save(ds, dataset_dir, "geojson")
    (dataset_dir / "annotations.json").unlink()
    names = sorted(im.filename for im in ds.images)
    assert [im.filename for im in AnnotationSession.open(dataset_dir).dataset.images] == names
    opened, _ = annotations.open_dataset(dataset_dir)
    assert [im.filename for im in opened.images] == names
