"""Earlier versions of an annotation file: kept every INTERVAL while it is edited, the
newest KEEP of them, and going back to one (itself undoable); from the session and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bioanomaly.cli import main
from napari_bioanomaly.core import annotations, history
from napari_bioanomaly.core.model import BioAnomalyError, Region
from napari_bioanomaly.core.session import AnnotationSession


def square():
    return np.array([[2, 2], [2, 12], [12, 12], [12, 2]], float)


def test_a_version_is_kept_every_interval_and_the_oldest_go(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "KEEP", 3)
    path = tmp_path / "annotations.json"
    assert history.keep_version(path) is None  # no file yet: nothing to keep
    t = 1_800_000_000.0
    kept = []
    for step in range(5):
        path.write_text(f'{{"step": {step}}}')
        kept.append(history.keep_version(path, now=t + step * history.INTERVAL))
        assert history.keep_version(path, now=t + step * history.INTERVAL + 1) is None  # soon
    assert all(p is not None for p in kept)
    newest = history.versions(path)
    assert newest == kept[:1:-1]  # the three newest, newest first
    assert [json.loads(p.read_text())["step"] for p in newest] == [4, 3, 2]
    assert newest[0].parent == tmp_path / ".annotations.json.history"


def test_a_copy_left_half_done_by_a_killed_process_is_cleared(tmp_path):
    import os

    path = tmp_path / "a.json"
    path.write_text("x")
    folder = history.history_dir(path)
    folder.mkdir()
    stale, fresh = folder / ".a.2026-01-01T00-00-00Z.json.abc.tmp", folder / ".a.x.json.def.tmp"
    stale.write_text("half")
    fresh.write_text("being written")
    os.utime(stale, (1, 1))
    assert history.keep_version(path) is not None
    assert not stale.exists() and fresh.exists()  # another process may be writing that one


def test_versions_kept_in_the_same_second_are_all_kept_in_order(tmp_path):
    path = tmp_path / "a.json"
    t = 1_800_000_000.0
    for step in range(3):
        path.write_text(str(step))
        assert history.keep_version(path, force=True, now=t) is not None
    assert [p.read_text() for p in history.versions(path)] == ["2", "1", "0"]


def test_restoring_the_oldest_of_a_full_history_keeps_it_and_the_current_one(tmp_path,
                                                                            monkeypatch):  # fmt: skip
    """Restoring kept the current file first, which pruned the oldest version: the very
    one being restored (it was lost, and nothing restored)."""
    monkeypatch.setattr(history, "KEEP", 3)
    path = tmp_path / "a.json"
    t = 1_800_000_000.0
    for step in range(3):
        path.write_text(f"v{step}")
        history.keep_version(path, now=t + step * history.INTERVAL)
    path.write_text("current")
    oldest = history.versions(path)[-1]
    before = history.restore(path, oldest)
    assert path.read_text() == "v0" and before.read_text() == "current"
    assert before in history.versions(path) and oldest.exists()


def test_versions_are_named_in_utc_so_a_clock_change_keeps_their_order(tmp_path, monkeypatch):
    """Names in local time sorted the version just kept as the oldest after a change of
    time zone or daylight saving time, and it was pruned at once."""
    import time

    path = tmp_path / "a.json"
    path.write_text("x")
    kept = history.keep_version(path, force=True, now=0.0)
    assert kept.name == "a.1970-01-01T00-00-00Z.json"
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        path.write_text("y")
        later = history.keep_version(path, force=True, now=3600.0)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert history.versions(path) == [later, kept]


def test_a_history_folder_that_links_elsewhere_is_not_written(tmp_path):
    import os

    path, elsewhere = tmp_path / "data" / "a.json", tmp_path / "elsewhere"
    path.parent.mkdir()
    elsewhere.mkdir()
    path.write_text("x")
    os.symlink(elsewhere, history.history_dir(path))
    assert history.keep_version(path) is None and not list(elsewhere.iterdir())


def test_restore_puts_a_version_back_and_keeps_the_one_it_replaces(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    old = history.keep_version(path)
    path.write_text("new")
    before = history.restore(path, old)
    assert path.read_text() == "old" and before.read_text() == "new"
    assert history.restore(path, before) and path.read_text() == "new"  # undone
    elsewhere = tmp_path / "other.json"
    elsewhere.write_text("x")
    with pytest.raises(BioAnomalyError, match=r"not a kept version of a\.json"):
        history.restore(path, elsewhere)
    assert path.read_text() == "new"


def test_a_history_that_cannot_be_written_never_stops_a_save(dataset_dir, monkeypatch):
    def refuse(*args):
        raise PermissionError("[Errno 13] Permission denied")

    monkeypatch.setattr(history, "_atomic_copy", refuse)
    session = AnnotationSession.open(dataset_dir)
    session.set_regions([*session.image.regions, Region(square(), "hair")])
    assert session.save() == dataset_dir / "annotations.json"
    assert history.versions(session.path) == []


def test_the_session_keeps_the_version_a_save_replaces_and_goes_back_to_it(dataset_dir):
    session = AnnotationSession.open(dataset_dir)
    original = session.path.read_text()
    n = len(session.image.regions)
    session.set_regions([*session.image.regions, Region(square(), "hair")])
    session.save()
    (first,) = history.versions(session.path)
    assert first.read_text() == original  # the file as it was before the first save
    session.set_regions([])
    session.save()  # within the interval: no second version
    assert history.versions(session.path) == [first]
    kept = session.restore(first)
    assert len(session.image.regions) == n and not session.dirty
    assert session.path.read_text() == original
    assert kept in history.versions(session.path)
    emptied, _ = annotations.load(kept, dataset_dir, read_images=False)
    assert emptied.image(session.image.filename).regions == []  # what it replaced
    session.set_regions([*session.image.regions, Region(square(), "dust")])
    session.save()  # the restored file is the file now: saves go on from it
    assert session.path.read_text() != original


def test_cli_lists_the_versions_and_restores_one(dataset_dir, capsys):
    path = dataset_dir / "annotations.json"
    assert main(["versions", str(dataset_dir)]) == 0
    assert "no earlier version kept yet" in capsys.readouterr().out
    session = AnnotationSession.open(dataset_dir)
    n = len(session.dataset.regions)
    session.set_regions([])
    session.save()
    assert main(["versions", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 earlier version, newest first" in out
    assert "  1  " in out and f"{len(session.dataset.images)} images, {n} regions" in out
    assert main(["versions", str(path), "--restore", "2"]) == 2
    assert "no version 2 (there are 1" in capsys.readouterr().err
    assert main(["versions", str(path), "--restore", "1"]) == 0
    assert "back to annotations." in capsys.readouterr().out
    assert main(["versions", str(dataset_dir / "nothing.json")]) == 2
    assert "nothing.json: no such annotation file, and no earlier version" in (
        capsys.readouterr().err)  # fmt: skip
    assert len(AnnotationSession.open(dataset_dir).dataset.regions) == n
    assert len(history.versions(path)) == 2  # the emptied file kept too
    path.unlink()  # deleted by mistake: its versions bring it back
    assert main(["versions", str(path), "--restore", "1"]) == 0
    assert "there was no file to keep" in capsys.readouterr().out
    assert AnnotationSession.open(dataset_dir).dataset.regions


def test_cli_versions_of_an_import_are_those_of_its_edits_and_a_non_annotation_file_is_refused(
    dataset_dir, capsys
):
    from napari_bioanomaly.core import annotations

    ds, _ = annotations.load(dataset_dir / "annotations.json")
    (dataset_dir / "annotations.json").unlink()
    coco = dataset_dir / "c.json"
    annotations.save(ds, coco, "coco")
    session = AnnotationSession.open(coco)
    session.set_regions([])
    session.save()  # the first save: a new project, nothing replaced
    session.go_to(1)
    session.set_regions([])
    session.save()
    for source in (coco, dataset_dir):
        assert main(["versions", str(source)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{dataset_dir / 'c.via.json'}: 1 earlier version")
    model = dataset_dir / "model.pt"
    model.write_bytes(b"PK\x03\x04 not json")
    assert main(["versions", str(model)]) == 2
    assert "model.pt: not an annotation file (malformed JSON" in capsys.readouterr().err


def test_the_same_bytes_are_kept_once_so_repeated_runs_do_not_push_older_versions_out(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text("first")
    first = history.keep_version(path, force=True, now=1000.0)
    path.write_text("second")
    second = history.keep_version(path, force=True, now=2000.0)
    for now in (3000.0, 4000.0, 5000.0):  # e.g. nightly qc --save runs changing nothing
        assert history.keep_version(path, force=True, now=now) == second
    assert history.versions(path) == [second, first]
