"""Waiting for a widget's background job in GUI tests."""

from __future__ import annotations

from typing import Any


def wait_for_job(qtbot: Any, widget: Any, timeout: int) -> None:
    """Wait (``timeout`` ms) until the job ``widget`` started has ended and its callbacks
    have run. The window's job state is ended on the GUI thread by a connection made
    before the worker started, so a short job that ends before the wait begins is not
    missed, as a wait on the worker's ``finished`` signal would miss it. A review the job
    opens (read and scored in the background) is waited for too."""
    qtbot.waitUntil(
        lambda: not widget.workspace.busy and not getattr(widget, "opening", False),
        timeout=timeout,
    )


def wait_for_open(qtbot: Any, widget: Any, timeout: int = 30_000) -> None:
    """Wait until the review the Review ``widget`` opens in the background is shown."""
    qtbot.waitUntil(lambda: not widget.opening, timeout=timeout)
