"""Earlier versions of an annotation file, kept while it is edited, and going back to one.

Every edit is saved at once, and the ``.bak`` beside the file holds only the version
before the last edit: a bulk change regretted an hour later (a class removed, Accept
all on many images, a wrong reload) could not be undone. So, before a save replaces the
file, the version on disk is copied into ``.<name>.history/`` beside it when the newest
copy there is older than :data:`INTERVAL` seconds; the newest :data:`KEEP` are kept.
:func:`restore` puts one back (the version it replaces is kept first, so a restore can
be undone the same way). Nothing is written outside the annotation file's folder.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .fileio import _atomic_copy, file_lock
from .model import BioAnomalyError

#: Seconds between two kept versions of a file being edited.
INTERVAL = float(os.environ.get("BIOANOMALY_HISTORY_INTERVAL", 600))
#: Versions kept per file (the oldest go).
KEEP = int(os.environ.get("BIOANOMALY_HISTORY_KEEP", 30))


#: the time stamp (UTC) of a kept version's name, and its number within the same second
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)(?:-(\d+))?")


def history_dir(path: str | os.PathLike[str]) -> Path:
    """The folder of an annotation file's earlier versions: ``.<name>.history`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.history")


def replaced_text(kept: Path | None) -> str:
    """What a restore says of the file it replaced (see :func:`restore`)."""
    if kept is None:
        return "there was no file to keep"
    return f"the version it replaced is kept as {kept.name}"


def versions(path: str | os.PathLike[str]) -> list[Path]:
    """The kept versions of ``path``, newest first."""
    folder = history_dir(path)
    if not folder.is_dir():
        return []
    stem, suffix = Path(path).stem, Path(path).suffix
    found = []
    for p in folder.iterdir():
        match = _STAMP.fullmatch(p.name[len(stem) + 1 : len(p.name) - len(suffix)])
        if p.is_file() and p.name.startswith(f"{stem}.") and p.suffix == suffix and match:
            found.append((match[1], int(match[2] or 0), p))
    return [p for *_, p in sorted(found, reverse=True)]


def _version_name(path: Path, when: float) -> str:
    """In UTC: the order of the names stays the order of the saves across daylight
    saving time, time zones, and machines in several of them editing one share."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(when))
    return f"{path.stem}.{stamp}{path.suffix}"


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def keep_version(
    path: str | os.PathLike[str],
    force: bool = False,
    now: float | None = None,
    spare: Path | None = None,
) -> Path | None:
    """Copy the file at ``path`` into its history folder when the newest kept version is
    :data:`INTERVAL` seconds old or more (always with ``force``); drop the oldest beyond
    :data:`KEEP`, never the copy just made nor ``spare`` (the version being restored).
    Returns the copy (the newest kept version where that holds the same bytes already), or
    None (nothing to keep, or kept recently).

    Best effort: a history that cannot be written (a read-only folder) is no reason to
    refuse a save, so errors are swallowed here and None returned.
    """
    path = Path(path)
    now = time.time() if now is None else now
    try:
        if not path.is_file():
            return None
        kept = versions(path)
        if kept and not force and abs(now - kept[0].stat().st_mtime) < INTERVAL:
            return None
        if kept and _same_bytes(path, kept[0]):
            return kept[0]  # kept already: the same again would push older versions out
        folder = history_dir(path)
        folder.mkdir(exist_ok=True)
        if folder.is_symlink() or folder.resolve().parent != path.parent.resolve():
            return None  # a link that leads elsewhere: nothing is written outside the folder
        for tmp in folder.glob(".*.tmp"):  # left by a process killed while copying
            if now - tmp.stat().st_mtime > 60:
                tmp.unlink(missing_ok=True)
        name = _version_name(path, now)
        target, n = folder / name, 1
        while target.exists():  # two in the same second: neither replaces the other
            target = folder / f"{Path(name).stem}-{n}{path.suffix}"
            n += 1
        _atomic_copy(path, target)
        os.utime(target, (now, now))  # its age counts from when it was kept
        keep = {target.resolve(), spare.resolve() if spare is not None else None}
        others = [v for v in versions(path) if v.resolve() not in keep]
        for old in others[max(KEEP - 1 - (spare is not None), 0) :]:
            old.unlink(missing_ok=True)
        return target
    except OSError:
        return None


def restore(path: str | os.PathLike[str], version: str | os.PathLike[str]) -> Path | None:
    """Put ``version`` (one of :func:`versions`) back as ``path``; the file it replaces is
    kept as a version first (and as ``.bak``). Returns the version that was kept, None
    where there was no file (deleted: its versions bring it back).

    Raises
    ------
    BioAnomalyError
        When ``version`` is not a kept version of ``path``, or the copy fails.
    """
    path, version = Path(path), Path(version)
    if version.resolve().parent != history_dir(path).resolve() or not version.is_file():
        raise BioAnomalyError(
            f"{version}: not a kept version of {path.name} (those are in {history_dir(path)})"
        )
    from .fileio import atomic_write

    with file_lock(path):
        try:
            data = version.read_bytes()  # before keeping the current one prunes the oldest
        except OSError as exc:
            raise BioAnomalyError(f"{version}: cannot read it ({exc})") from None
        before = keep_version(path, force=True, spare=version)
        if path.is_file() and before is None:
            raise BioAnomalyError(f"{history_dir(path)}: cannot keep the current version "
                                  "there; nothing restored")  # fmt: skip
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise BioAnomalyError(f"{path}: cannot restore {version.name} ({exc})") from None
    return before
