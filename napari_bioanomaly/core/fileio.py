"""Safe file handling: atomic writes with backups, content digests, lock files and
compare-and-swap replacement, stale temporaries removed (JSON: :mod:`.jsonio`; names and
paths: :mod:`.paths`)."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .model import BioAnomalyError

try:  # optional speed-up: orjson parses and writes JSON several times faster
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but the core must run without
    orjson = None  # type: ignore[assignment]


class DiskChanged(BioAnomalyError):
    """A file was changed on disk by someone else since we read or wrote it (``gone``: it
    is no longer there, moved or deleted)."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


class WriteError(BioAnomalyError, OSError):
    """A file could not be written (a read-only folder, a full disk): named by the file the
    user chose, not by the hidden temporary or lock file the error came from. Still an
    :class:`OSError` (with its ``errno``), so what caught those before catches it."""

    def __str__(self) -> str:
        return str(self.args[0])


#: What an errno of a failed write most likely means for the user.
_WRITE_HINTS = {
    errno.EACCES: "the folder is read-only for you",
    errno.EPERM: "the folder is read-only for you",
    errno.EROFS: "the disk is read-only",
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", 122): "the disk quota is used up",  # (none on Windows)
}


def write_error(path: Path, exc: OSError) -> WriteError:
    """``exc``, raised while writing ``path`` (or its temporary, backup or lock file), as
    one line naming ``path``."""
    if isinstance(exc, WriteError):
        return exc
    why = exc.strerror or str(exc)
    hint = _WRITE_HINTS.get(exc.errno or 0)
    error = WriteError(f"{path}: cannot be written ({why}{'; ' + hint if hint else ''})")
    error.errno, error.strerror, error.filename = exc.errno, exc.strerror, str(path)
    return error


def digest(raw: bytes) -> str:
    """The content fingerprint of a file's bytes (SHA-256)."""
    return hashlib.sha256(raw).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """:func:`digest` of the file's current bytes, ``None`` when there is no file."""
    try:
        return digest(Path(path).read_bytes())
    except FileNotFoundError:
        return None


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused while reading a large file.

    Parsing an annotation file allocates hundreds of thousands of small objects, none in
    reference cycles; each allocation burst makes the collector walk every object of the
    process, which in napari (some 230,000 objects before any file is open) cost a third
    of the time of reading two VIA files of 22,500 polygons. Nothing is freed later than
    it would be otherwise: objects without cycles are freed by reference counting.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def lock_path(path: Path) -> Path:
    """The advisory lock file of ``path``: hidden, beside it."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = 10.0) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (see :func:`lock_path`) for a check and a write.

    Every writer of the project's annotation files takes it, so a compare and the
    rename that follows cannot interleave with another process's (``flock`` on
    POSIX, also over NFS on Linux; ``msvcrt.locking`` on Windows). Waits up to
    ``timeout`` seconds, then raises :class:`BioAnomalyError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise write_error(path, exc) from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                _lock(fd)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BioAnomalyError(
                        f"{path}: another program has been writing it for {timeout:g} s "
                        f"(lock {lock_path(path).name}); try again"
                    ) from None
                time.sleep(0.01)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - Windows
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def replace_if_unchanged(
    path: str | os.PathLike[str], raw: bytes, expected: str | None, force: bool = False
) -> str:
    """Write ``raw`` to ``path`` (atomically, the previous file kept as ``.bak``) only if
    the file still holds what was read or written last (``expected``: its
    :func:`digest`, ``None``: no file); returns the digest of what is now there.

    Compare and swap: the check and the rename happen under :func:`file_lock`, so
    no other writer's save can fall between them. ``force`` writes anyway (the
    other version is then the ``.bak``).

    Raises
    ------
    DiskChanged
        When the file changed since (nothing is written).
    """
    path = Path(path)
    with file_lock(path):
        now = file_digest(path) if not force else expected
        if now is None and expected is not None:
            raise DiskChanged(
                f"{path}: no longer there: moved or deleted by another program since it "
                "was read; save it there again, or save a copy elsewhere",
                gone=True,
            )
        if now != expected:
            raise DiskChanged(
                f"{path}: changed on disk by another program since it was read; "
                "reload it, or save over it (the other version is kept as an earlier "
                "version, and as .bak)"
            )
        atomic_write(path, raw)
    return digest(raw)


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is always whole (a temporary copy, synced,
    renamed over it): a process killed while copying leaves the old backup, not half a
    new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike[str], older_than: float = 60.0) -> int:
    """Delete the temporary files that writes of ``path`` (and of its backup) left behind
    when their process was killed: ``.<name>.*.tmp`` beside it. When nobody holds the
    file's lock (:func:`file_lock`: no save is in progress) all of them go; otherwise
    only those older than ``older_than`` seconds. Returns how many went."""
    path = Path(path)
    try:
        with file_lock(path, timeout=0):
            return _remove_temporaries(path, 0.0)
    except (BioAnomalyError, OSError):
        return _remove_temporaries(path, older_than)


def _remove_temporaries(path: Path, older_than: float) -> int:
    now = time.time()
    removed = 0
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    import glob

    return glob.escape(name)


def backup_path(path: Path) -> Path:
    """Where the previous version of ``path`` is kept: ``name.ext.bak``."""
    return path.with_name(path.name + ".bak")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str],
    write: bytes | Callable[[IO[bytes]], object],
    backup: bool = True,
) -> Path:
    """Write a file so that readers only ever see the old or the new version.

    ``write`` is the file's bytes, or a function that receives a binary file object of a
    temporary file in the same folder and writes into it; that file is flushed and fsynced,
    the previous file (if any) is copied to :func:`backup_path` (unless ``backup`` is
    false: a file rewritten several times by one run keeps as its backup the file from
    before the run), then the temporary file replaces the target with ``os.replace``
    (atomic on POSIX and Windows). On any error the target is left untouched and the
    temporary file removed.
    """
    path = Path(path)
    if path.is_dir():
        raise BioAnomalyError(f"{path}: is a folder, expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, bytes):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            if backup:
                _atomic_copy(path, backup_path(path))
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    return path
