"""File names as stored (``/`` separators, NFC), names no file system can hold, and paths
kept inside a root: images found, exports written, never outside the folder chosen."""

from __future__ import annotations

import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from .model import BioAnomalyError

try:  # optional speed-up: orjson parses and writes JSON several times faster
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but the core must run without
    orjson = None  # type: ignore[assignment]


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


def export_paths(out: Path, images: list[str], suffix: str) -> tuple[dict[str, Path], list[str]]:
    """The export file of each image: ``<stem><suffix>`` in the image's folder inside
    ``out``; images whose stems collide there (``x.tif`` and ``x.png``) all get
    ``<name><suffix>`` instead (``x.tif<suffix>``, ``x.png<suffix>``), so none
    overwrites another and each reads back to its own image. See :func:`output_path`.

    Returns the paths and, for the images left out, why: a name that gives no file name,
    and one whose export would still be another's (``../b.png`` beside ``b.png``: the
    image named as it is in the folder keeps the file). The others are exported.
    """
    from collections import Counter

    names, skipped = {}, []
    for im in images:
        p = relative_name(im)
        if p.name in ("", ".", ".."):
            skipped.append(f"image {im!r}: no file name to name its export after; not exported")
            continue
        problem = unusable_name(str(p) + suffix)
        if problem:
            skipped.append(f"image {im[:80]!r}: cannot name its export after it ({problem}); "
                           "not exported: rename the image in the annotations")  # fmt: skip
            continue
        names[im] = p
    # one export per name in a folder: the image named as the folder has it (not
    # "../b.png" or "C:/b.png" beside "b.png") keeps it, the others are left out
    owner: dict[str, str] = {}
    for im in sorted(names, key=lambda im: names[im].as_posix() != normalise_filename(im)):
        key = names[im].as_posix().lower()
        if key in owner:
            skipped.append(f"image {im!r}: its export would overwrite that of {owner[key]!r}; "
                           "not exported: rename the image in the annotations")  # fmt: skip
            continue
        owner[key] = im
    names = {im: p for im, p in names.items() if im in set(owner.values())}
    stem_paths = {im: output_path(out, str(p.with_name(p.stem + suffix)), f"image {im!r}")
                  for im, p in names.items()}  # fmt: skip
    shared = Counter(str(p).lower() for p in stem_paths.values())
    out_paths = {}
    for im, path in stem_paths.items():
        if shared[str(path).lower()] > 1:  # x.tif and x.png: x.tif<suffix>, x.png<suffix>
            p = names[im]
            path = output_path(out, str(p.with_name(p.name + suffix)), f"image {im!r}")
        out_paths[im] = path
    taken: dict[str, str] = {}
    for im, path in list(out_paths.items()):  # a name that is another's export name
        if str(path).lower() in taken:
            skipped.append(f"image {im!r}: its export {path.name} would overwrite that of "
                           f"{taken[str(path).lower()]!r}; not exported")  # fmt: skip
            del out_paths[im]
        else:
            taken[str(path).lower()] = im
    return out_paths, skipped


def set_aside_earlier_exports(
    out: Path, images: list[str], suffix: str, written: list[Path], what: tuple[str, str]
) -> list[str]:
    """Rename to ``.bak`` (as a replaced file is kept, :func:`~.fileio.backup_path`) the
    files in ``out`` that an earlier export wrote for images of ``images`` and that this
    export, which wrote ``written``, did not write again: an image without regions now
    gets no file, and one whose stem is no longer shared gets ``x<suffix>`` where it had
    ``x.tif<suffix>``. Left there, reading the folder back would bring back regions
    deleted since. Only the names :func:`export_paths` gives an image
    (``<stem><suffix>`` and ``<name><suffix>`` in its folder inside ``out``) are looked
    at; every other file stays as it is, and nothing outside ``out`` is touched.

    Parameters
    ----------
    out
        The export's folder.
    images
        The file names of all the images of the dataset exported.
    suffix
        What the export appends to an image's stem (``.geojson``, ``_rois.zip``).
    written
        The files this export wrote.
    what
        The kind of file, singular and plural (``("GeoJSON file", "GeoJSON files")``).

    Returns
    -------
    list[str]
        What the export's warnings say of the files set aside, or not (none when there
        were none).
    """
    import os

    from .text import counted

    out = Path(out)
    if not out.is_dir():
        return []
    root = out.resolve()
    # by where they lead (a link inside the folder back into it names a file written) and
    # without case (a case-insensitive disk: one file)
    keep = {str(p.resolve()).lower() for p in written}
    seen: set[str] = set()
    moved: list[str] = []
    failed: list[tuple[str, str]] = []
    for im in images:
        p = relative_name(im)
        if p.name in ("", ".", ".."):
            continue
        for rel in dict.fromkeys((p.with_name(p.stem + suffix), p.with_name(p.name + suffix))):
            if unusable_name(str(rel)):
                continue
            target = out.joinpath(*rel.parts)
            key = str(target).lower()
            if key in keep or key in seen:
                continue
            seen.add(key)
            if not target.is_file() or root not in target.resolve().parents:
                continue  # none there, or a link that leads out of the folder
            if str(target.resolve()).lower() in keep:
                continue  # one this export wrote, by another name
            bak = _free_backup(target)
            try:
                os.replace(target, bak)
            except OSError as exc:
                failed.append((rel.as_posix(), exc.strerror or str(exc)))
            else:
                moved.append(f"{rel.as_posix()} -> {bak.name}")
    out_lines = []
    if moved:
        out_lines.append(
            f"{counted(len(moved), what[0], what[1])} in {out} named for images this export "
            f"writes none for (no regions now, or a file of another name) set aside "
            f"({_some(moved)}): left there, reading the folder would bring back the regions "
            "they hold"
        )
    if failed:
        names = _some([f"{name} ({why})" for name, why in failed])
        out_lines.append(
            f"{counted(len(failed), what[0], what[1])} in {out} named for images this export "
            f"writes none for could not be renamed to .bak: {names}; move "
            f"{'it' if len(failed) == 1 else 'them'} out of the folder, or reading it brings "
            "back the regions they hold"
        )
    return out_lines


def _free_backup(path: Path) -> Path:
    """Where ``path`` is set aside: its ``.bak`` (:func:`~.fileio.backup_path`), or where
    that holds a file already (an earlier backup, or the user's), ``.bak.1``, ``.bak.2``, ...
    (nothing replaced)."""
    from .fileio import backup_path

    bak = backup_path(path)
    n = 0
    while bak.exists() or bak.is_symlink():
        n += 1
        bak = bak.with_name(f"{backup_path(path).name}.{n}")
    return bak


def _some(names: list[str], limit: int = 3) -> str:
    """The first ``limit`` of ``names``, and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def unwritable_reason(folder: str | Path) -> str | None:
    """Why no file can be written into ``folder`` (``None`` if one can), found by creating
    a temporary file there and removing it: permissions, a read-only file system, ACLs and
    quotas all answer as a real write would. A folder not made yet is judged by its nearest
    existing parent (where writing would make it); a file on the way cannot hold one."""
    import tempfile

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".bioanomaly-write-check."):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
