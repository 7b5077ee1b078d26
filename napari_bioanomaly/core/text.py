"""Words for the messages users read."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``counted(1, "image")`` is "1 image",
    ``counted(3, "image")`` "3 images", ``counted(2, "class", "classes")`` "2 classes";
    thousands are grouped ("12,000 images")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
