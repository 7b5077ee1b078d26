"""A status line that wraps between words, never inside a number.

Qt's line breaker splits a number after its decimal point when a closing parenthesis
and a space come before it: "... pixel F1) 0." at a line's end, "072" on the next.
:class:`StatusLabel` shows its text with a word joiner (U+2060, invisible, no break
either side) after each decimal point between digits; :meth:`StatusLabel.text` gives
the text as set.
"""

from __future__ import annotations

import re

from qtpy.QtWidgets import QLabel

WORD_JOINER = "\u2060"
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")


def numbers_whole(text: str) -> str:
    """``text`` with a word joiner after each decimal point between digits."""
    return _DECIMAL_POINT.sub("." + WORD_JOINER, text)


class StatusLabel(QLabel):
    """A word-wrapped label whose numbers stay on one line."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self._text = ""
        self.setText(text)

    def setText(self, text: str | None) -> None:
        self._text = text or ""
        super().setText(numbers_whole(self._text))

    def text(self) -> str:
        """The text as set (without the word joiners shown)."""
        return self._text
