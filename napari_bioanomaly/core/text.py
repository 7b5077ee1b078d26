"""Words for the messages users read."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``count(1, "image")`` is "1 image",
    ``count(3, "image")`` "3 images", ``count(2, "class", "classes")`` "2 classes";
    thousands are grouped ("12,000 images")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
