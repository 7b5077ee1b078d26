"""How Qt wraps a label's text: where a word-wrapped line would end at a given width."""

from __future__ import annotations

import itertools

from qtpy.QtGui import QTextLayout, QTextOption
from qtpy.QtWidgets import QLabel


def wrapped_lines(label: QLabel, width: int) -> list[str]:
    """The lines the label's text, as shown, takes at ``width`` pixels (word wrap)."""
    shown = QLabel.text(label)  # as Qt lays it out (a StatusLabel's word joiners too)
    layout = QTextLayout(shown, label.font())
    option = QTextOption()
    option.setWrapMode(QTextOption.WrapMode.WordWrap)
    layout.setTextOption(option)
    layout.beginLayout()
    lines = []
    while (line := layout.createLine()).isValid():
        line.setLineWidth(width)
        lines.append(shown[line.textStart() : line.textStart() + line.textLength()])
    layout.endLayout()
    return lines


def numbers_cut(label: QLabel, widths: range = range(120, 480, 3)) -> list[tuple[int, str, str]]:
    """(width, line, next line) wherever a line ends in a decimal point and the next one
    starts with the number's digits: "... pixel F1) 0." and "072"."""
    cuts = []
    for width in widths:
        for end, start in itertools.pairwise(wrapped_lines(label, width)):
            if end.rstrip("\u2060")[-1:] == "." and start.lstrip("\u2060")[:1].isdigit():
                cuts.append((width, end, start))
    return cuts
