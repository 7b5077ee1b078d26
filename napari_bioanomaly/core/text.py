"""Words for the messages users read."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``counted(1, "image")`` is "1 image",
    ``counted(3, "image")`` "3 images", ``counted(2, "class", "classes")`` "2 classes";
    thousands are grouped ("12,000 images")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def printable(name: str) -> str:
    """``name`` on one line: a line break, carriage return or other control character in it
    (a file name may hold one) written escaped, as Python writes it (``a\\nb.tif``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def name_first(text: str) -> str:
    """A message that starts with a file's whole path (``/data/study 3/plate 12/cells.json:
    no such file``) said with the file's name first and its folder last (``cells.json: no
    such file (in /data/study 3/plate 12)``): where only the first line shows (napari's
    notifications), the path alone said nothing of what went wrong. Other text unchanged."""
    line = text.split("\n", 1)[0]
    absolute = line.startswith(("/", "\\")) or line[1:3] in (":\\", ":/")
    ends = [i for i in range(len(line)) if line.startswith(": ", i)]
    if not absolute or not ends:
        return text

    def name(at: int) -> str:
        return line[:at].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]

    # a folder may hold ": " too ("/data/run: 3/cells.json"): the path ends at the first
    # ": " after a name with an extension, else at the first
    at = next((i for i in ends if "." in name(i)), ends[0])
    head, rest = text[:at], text[at + 2 :]
    parts = head.replace("\\", "/").rstrip("/").rsplit("/", 1)
    if not rest or len(parts) < 2 or not parts[1]:
        return text
    first, sep, after = rest.partition("\n")  # the folder at the end of the first line
    return f"{parts[1]}: {first} (in {head[: len(parts[0])] or head[:1]}){sep}{after}"
