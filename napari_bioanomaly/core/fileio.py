"""Safe file handling: atomic writes with backups, JSON reading, paths kept inside a root."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from .model import BioAnomalyError, FormatError

try:  # optional speed-up: orjson parses and writes JSON several times faster
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but the core must run without
    orjson = None


class DiskChanged(BioAnomalyError):
    """A file was changed on disk by someone else since we read or wrote it."""


def digest(raw: bytes) -> str:
    """The content fingerprint of a file's bytes (SHA-256)."""
    return hashlib.sha256(raw).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """:func:`digest` of the file's current bytes, ``None`` when there is no file."""
    try:
        return digest(Path(path).read_bytes())
    except FileNotFoundError:
        return None


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
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


if os.name == "nt":  # pragma: no cover - Windows
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
        if not force and file_digest(path) != expected:
            raise DiskChanged(
                f"{path}: changed on disk by another program since it was read; "
                "reload it, or save over it (the other version is kept as .bak)"
            )
        atomic_write(path, lambda fh: fh.write(raw))
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


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that readers only ever see the old or the new version.

    ``write`` receives a binary file object of a temporary file in the same
    folder; it is flushed and fsynced, the previous file (if any) is copied to
    :func:`backup_path`, then the temporary file replaces the target with
    ``os.replace`` (atomic on POSIX and Windows). On any error the target is
    left untouched and the temporary file removed.
    """
    path = Path(path)
    if path.is_dir():
        raise BioAnomalyError(f"{path}: is a folder, expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            _atomic_copy(path, backup_path(path))
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dumps(data: Any, indent: int | None = None, check_finite: bool = True) -> bytes:
    """UTF-8 JSON bytes; orjson (about 10x faster) when installed, else the standard library.

    Non-finite floats are refused (JSON has none). ``check_finite=False`` skips
    that walk over the data for callers whose numbers are finite by construction
    (the annotation model validates every vertex and score).
    """
    if orjson is not None and indent is None:
        if check_finite:
            _check_finite(data)
        try:
            return orjson.dumps(data)
        except TypeError:  # types orjson does not know (and ints beyond 64 bits)
            pass
    return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _check_finite(data: Any) -> None:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError("Out of range float values are not JSON compliant")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def write_json(
    path: str | os.PathLike[str], data: Any, indent: int | None = None, check_finite: bool = True
) -> Path:
    """Atomically write ``data`` as UTF-8 JSON (see :func:`atomic_write` and :func:`dumps`)."""
    raw = dumps(data, indent, check_finite)
    return atomic_write(path, lambda fh: fh.write(raw))


_LONG_DIGITS = re.compile(rb"\d{20,}")


def read_json(path: str | os.PathLike[str], raw: bytes | None = None) -> Any:
    """Read a JSON file (or its bytes ``raw``, already read), turning every failure into
    one :class:`FormatError` line."""
    path = Path(path)
    try:
        raw = path.read_bytes() if raw is None else raw
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a folder, expected a JSON file") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # orjson reads integers beyond 64 bits as floats (changing them): the standard library
    # keeps them, so files with such long digit runs take it
    if orjson is not None and not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
        except (orjson.JSONDecodeError, RecursionError):
            pass  # the standard library says where the error is, and reads NaN and big ints
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text (byte {exc.start}); not a JSON file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None


#: Values nested deeper than this in an annotation file are dropped (no annotation format
#: nests more than a few levels; ~1,000 levels would overflow Python's stack when saved).
MAX_JSON_DEPTH = 100
#: Attribute values nested deeper than this are dropped by the readers (see
#: :func:`shallow_attributes`): well inside :data:`MAX_JSON_DEPTH` in any format we
#: write, so what loads once loads the same after a save.
MAX_ATTRIBUTE_DEPTH = 32


def nesting(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (0 for a number or text)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
            deepest = max(deepest, depth + 1)
    return deepest


def shallow_attributes(attrs: dict[str, Any], drop: Callable[[str], None]) -> dict[str, Any]:
    """``attrs`` without the values nested deeper than :data:`MAX_ATTRIBUTE_DEPTH`;
    ``drop(name)`` is told each one."""
    out = {}
    for name, value in attrs.items():
        if isinstance(value, dict | list) and nesting(value) > MAX_ATTRIBUTE_DEPTH:
            drop(name)
        else:
            out[name] = value
    return out


def _clean_text(text: str) -> str | None:
    """``text`` with lone surrogates (JSON ``"\\ud800"`` escapes, which UTF-8 cannot hold)
    replaced by U+FFFD, or ``None`` when it holds none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return None


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_json(data: Any) -> tuple[Any, list[tuple[str, str]]]:
    """Parsed JSON made savable: ``(data, changes)``, each change ``(where, what)``.

    Lone surrogates in any text (keys included) become U+FFFD; ``NaN`` and
    ``Infinity`` (which Python's reader accepts and JSON has not) and values
    nested deeper than :data:`MAX_JSON_DEPTH` become ``null``. Everything else is kept
    as read. The walk is iterative (a file nested a thousand levels deep cannot
    overflow the stack) and changes ``data`` in place.
    """
    changes: list[tuple[str, str]] = []
    fixed = _clean_text(data) if isinstance(data, str) else None
    if fixed is not None:
        return fixed, [("", "text held invalid characters (lone surrogates): replaced by U+FFFD")]
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                new_key = _clean_text(key) if isinstance(key, str) else None
                if new_key is not None:
                    node[new_key] = node.pop(key)
                    changes.append((f"{where}/{new_key}", "key held invalid characters (lone "
                                    "surrogates): replaced by U+FFFD"))  # fmt: skip
                    key = new_key
                _visit(node, key, f"{where}/{key}", depth + 1, stack, changes)
        elif isinstance(node, list):
            for i in range(len(node)):
                _visit(node, i, f"{where}/{i}", depth + 1, stack, changes)
    return data, changes


def _visit(parent: Any, key: Any, where: str, depth: int, stack: list, changes: list) -> None:
    value = parent[key]
    if isinstance(value, str):
        fixed = _clean_text(value)
        if fixed is not None:
            parent[key] = fixed
            changes.append((where, "text held invalid characters (lone surrogates): replaced "
                            "by U+FFFD"))  # fmt: skip
    elif isinstance(value, float) and not math.isfinite(value):
        parent[key] = None
        changes.append((where, f"{value} is no JSON number (JSON has no NaN or Infinity): "
                        "read as null"))  # fmt: skip
    elif isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            parent[key] = None
            shown = where if len(where) < 80 else where[:60] + "/.../" + where.rsplit("/", 1)[-1]
            changes.append((shown, f"nested more than {MAX_JSON_DEPTH} levels deep: dropped"))
        else:
            stack.append((value, where, depth))


def normalise_filename(name: str) -> str:
    """A file name as stored in the model: ``/`` separators, no leading ``./``.

    Windows paths (``C:\\data\\a.png``) get forward slashes; URLs and absolute
    paths are kept as they are and resolved by :func:`resolve_image`.
    """
    name = name.strip()
    if "\\" in name and "://" not in name:
        name = PureWindowsPath(name).as_posix()
    while name.startswith("./"):
        name = name[2:]
    return name


def unusable_name(name: str) -> str | None:
    """Why ``name`` cannot name a file on any common file system (``None`` if it can):
    NUL bytes, text that UTF-8 cannot encode, or a part longer than 255 bytes."""
    if "\0" in name:
        return "the name holds a NUL byte"
    try:
        parts = [len(p.encode("utf-8")) for p in name.replace("\\", "/").split("/")]
    except UnicodeEncodeError:
        return "the name holds characters that UTF-8 cannot encode"
    if max(parts, default=0) > 255:
        return "a part of the name is longer than 255 bytes"
    return None


def resolve_image(root: Path, filename: str) -> Path:
    """The image file for ``filename``, which must lie inside ``root``.

    Relative names are joined to ``root``. URLs and absolute paths (annotation
    files made on another machine) are looked up by their base name in ``root``.
    A name that leads outside ``root`` (``../``, symlinks) is refused.

    Raises
    ------
    BioAnomalyError
        When the path escapes the dataset folder.
    """
    root = Path(root).resolve()
    problem = unusable_name(filename)
    if problem:
        raise BioAnomalyError(f"image {filename[:80]!r}: {problem}; no such file can exist")
    if (
        "://" in filename
        or PurePosixPath(filename).is_absolute()
        or PureWindowsPath(filename).drive
    ):
        candidate = root / PurePosixPath(filename.rstrip("/")).name
    else:
        candidate = root / filename
    if not candidate.exists():  # macOS writes names decomposed (NFD), most tools composed
        rel = str(candidate.relative_to(root))
        for form in ("NFC", "NFD"):
            other = root / unicodedata.normalize(form, rel)
            if other.exists():
                candidate = other
                break
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise BioAnomalyError(f"image {filename!r}: path leads outside the dataset folder {root}")
    return resolved


def name_key(name: str) -> str:
    """A file name as compared with others: Unicode NFC (``é`` typed, or ``e`` + accent
    as macOS stores it, are one name)."""
    return unicodedata.normalize("NFC", name)


def relative_name(name: str) -> PurePosixPath:
    """``name`` as a path relative to a folder: its own relative folders, or only its base
    name when it is absolute, a URL, or climbs with ``..``."""
    posix = PurePosixPath(normalise_filename(name))
    if (
        "://" in name
        or posix.is_absolute()
        or PureWindowsPath(name).drive
        or any(part in ("..", ".") for part in posix.parts)
    ):
        posix = PurePosixPath(posix.name)
    return posix


def output_path(out: Path, name: str, item: str) -> Path:
    """Where an export writes the file ``name`` (derived from an image's name) in ``out``.

    The image's own relative folders are kept (``sub/a_rois.zip``). A name that is
    absolute, a URL, or climbs with ``..`` keeps only its base name, as
    :func:`resolve_image` finds such images; whatever the name, the file lands
    inside ``out`` (a symlink inside ``out`` that leads out is refused).

    Raises
    ------
    BioAnomalyError
        Naming ``item`` (e.g. ``image 'x.tif'``) when no file inside ``out`` fits.
    """
    posix = relative_name(name)
    if posix.name in ("", ".", ".."):
        raise BioAnomalyError(f"{item}: no file name to write in {out}")
    root = Path(out).resolve()
    target = Path(out).joinpath(*posix.parts)
    resolved = target.resolve()
    if resolved == root or root not in resolved.parents:
        raise BioAnomalyError(f"{item}: {target} would lie outside the output folder {out}")
    return target


def export_paths(out: Path, images: list[str], suffix: str) -> dict[str, Path]:
    """The export file of each image: ``<stem><suffix>`` in the image's folder inside
    ``out``; images whose stems collide there (``x.tif`` and ``x.png``) all get
    ``<name><suffix>`` instead (``x.tif<suffix>``, ``x.png<suffix>``), so none
    overwrites another and each reads back to its own image. See :func:`output_path`.
    """
    from collections import Counter

    names = {im: relative_name(im) for im in images}
    for im, p in names.items():
        if p.name in ("", ".", ".."):
            raise BioAnomalyError(f"image {im!r}: no file name to name its export after")
        problem = unusable_name(str(p) + suffix)
        if problem:
            raise BioAnomalyError(f"image {im[:80]!r}: cannot name its export after it "
                                  f"({problem}); rename the image in the annotations")  # fmt: skip
    stem_paths = {im: output_path(out, str(p.with_name(p.stem + suffix)), f"image {im!r}")
                  for im, p in names.items()}  # fmt: skip
    shared = Counter(str(p).lower() for p in stem_paths.values())
    out_paths = {}
    for im, path in stem_paths.items():
        if shared[str(path).lower()] > 1:
            p = names[im]
            path = output_path(out, str(p.with_name(p.name + suffix)), f"image {im!r}")
        out_paths[im] = path
    taken = Counter(str(p).lower() for p in out_paths.values())
    for im, path in out_paths.items():
        if taken[str(path).lower()] > 1:
            raise BioAnomalyError(f"image {im!r}: its export {path} would overwrite another's")
    return out_paths
