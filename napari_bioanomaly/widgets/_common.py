"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget


def button_row(buttons: Iterable[tuple[str, Callable[[], object]]]) -> QHBoxLayout:
    """A row of push buttons, each calling its slot when clicked."""
    row = QHBoxLayout()
    for text, slot in buttons:
        button = QPushButton(text)
        button.clicked.connect(slot)
        row.addWidget(button)
    return row


def with_browse(field: QWidget, slot: Callable[[], object]) -> QHBoxLayout:
    """``field`` followed by a small "..." button that calls ``slot``."""
    row = QHBoxLayout()
    button = QPushButton("...")
    button.setMaximumWidth(30)
    button.clicked.connect(slot)
    row.addWidget(field, 1)
    row.addWidget(button)
    return row
