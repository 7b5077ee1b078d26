"""Words for the messages users read."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``counted(1, "image")`` is "1 image",
    ``counted(3, "image")`` "3 images", ``counted(2, "class", "classes")`` "2 classes";
    thousands are grouped ("12,000 images")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def name_first(text: str) -> str:
    """A message that starts with a file's whole path (``/data/study 3/plate 12/cells.json:
    no such file``) said with the file's name first and its folder last (``cells.json: no
    such file (in /data/study 3/plate 12)``): where only the first line shows (napari's
    notifications), the path alone said nothing of what went wrong. Other text unchanged."""
    head, sep, rest = text.partition(": ")
    if not sep or not rest or "\n" in head:
        return text
    parts = head.replace("\\", "/").rstrip("/").rsplit("/", 1)
    absolute = head.startswith(("/", "\\")) or (len(head) > 2 and head[1:3] in (":\\", ":/"))
    if len(parts) < 2 or not parts[1] or not absolute:
        return text
    folder = head[: len(parts[0])] or head[:1]
    return f"{parts[1]}: {rest} (in {folder})"
