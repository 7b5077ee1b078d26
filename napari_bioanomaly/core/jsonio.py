"""JSON read and written safely: orjson when installed, big integers kept, non-finite
numbers refused on writing, and hostile structure (lone surrogates, NaN, nesting beyond
reason) cleaned on reading with every change reported."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from .model import FormatError

try:  # optional speed-up: orjson parses and writes JSON several times faster
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but the core must run without
    orjson = None  # type: ignore[assignment]

from .fileio import atomic_write


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
    path: str | os.PathLike[str],
    data: Any,
    indent: int | None = None,
    check_finite: bool = True,
    backup: bool = True,
) -> Path:
    """Atomically write ``data`` as UTF-8 JSON (see :func:`atomic_write`, whose ``backup``
    this is, and :func:`dumps`)."""
    raw = dumps(data, indent, check_finite)
    return atomic_write(path, raw, backup=backup)


#: bytes -> b"0" for an ASCII digit, b" " for anything else: a run of 20 digits is then
#: found by ``bytes.find`` (about ten times faster than a regular expression on a 10 MB file)
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))


def _long_digit_run(raw: bytes) -> bool:
    """Whether ``raw`` holds 20 or more ASCII digits in a row (an integer orjson would
    change: it reads integers beyond 64 bits as floats)."""
    return raw.translate(_DIGITS).find(b"0" * 20) >= 0


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
    if orjson is not None and not _long_digit_run(raw):
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
        raise FormatError(f"{path}: {json_error_text(exc)}") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None


#: What is left of a JSON text cut inside a word or a number (``tru``, ``-1.5e``).
_TOKEN = re.compile(r"[A-Za-z0-9.+-]+")


def json_error_text(exc: json.JSONDecodeError) -> str:
    """Where and what is wrong in a JSON text, said whole: the standard library's
    "Unterminated string starting at" is followed by a position it leaves out, and a
    file that stops short (a copy or a save cut off) or holds nothing is worth naming as
    such."""
    where = f"line {exc.lineno}, column {exc.colno}"
    if not exc.doc.strip():
        return "empty file: no JSON in it"
    if exc.msg.startswith("Unterminated string"):
        what = "a string that starts here never ends"
    elif exc.msg.startswith("Invalid control character"):
        what = "a line break, tab or other control character inside a string"
    else:
        what = exc.msg[:1].lower() + exc.msg[1:]
    rest = exc.doc[exc.pos :].strip()
    # nothing left, a string left open, or a word or number cut ("tru", "1.5e")
    short = not exc.msg.startswith("Extra data") and (
        not rest or exc.msg.startswith("Unterminated string") or _TOKEN.fullmatch(rest)
    )
    if short:
        what += " (the file ends early: cut short while it was written or copied?)"
    return f"malformed JSON at {where}: {what}"


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


def object_at(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The JSON object under ``key``; an empty one where it is missing or not an object
    (hostile or hand-edited files put anything anywhere)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def shallow_attributes(attrs: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[str]]:
    """``attrs`` without the values nested deeper than :data:`MAX_ATTRIBUTE_DEPTH`, and a
    message for each one dropped (``kind``: "file" or "region")."""
    out = {}
    dropped = []
    for name, value in attrs.items():
        if isinstance(value, dict | list) and nesting(value) > MAX_ATTRIBUTE_DEPTH:
            dropped.append(f"{kind} attribute {name!r} nested more than {MAX_ATTRIBUTE_DEPTH} "
                           "levels deep: dropped")  # fmt: skip
        else:
            out[name] = value
    return out, dropped


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
                if type(node[key]) not in _PLAIN:
                    _visit(node, key, where, depth + 1, stack, changes)
        elif isinstance(node, list):
            try:  # a list of finite numbers (coordinates, most of a file), summed in C
                if math.isfinite(math.fsum(node)):
                    continue
            except (TypeError, ValueError, OverflowError):
                pass  # text, null, lists, objects, or not all finite: item by item
            for i, value in enumerate(node):
                kind = type(value)
                if kind in _PLAIN or (kind is float and math.isfinite(value)):
                    continue
                _visit(node, i, where, depth + 1, stack, changes)
    return data, changes


#: types of JSON values that need no cleaning (floats do when they are not finite)
_PLAIN = frozenset({int, bool, type(None)})


def _visit(parent: Any, key: Any, parent_where: str, depth: int, stack: list, changes: list
           ) -> None:  # fmt: skip
    value = parent[key]
    where = f"{parent_where}/{key}"
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
