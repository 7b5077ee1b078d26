"""The one way the widgets start background work: a napari thread worker running a
generator function, its events delivered on the GUI thread, the window's job state kept
in its :class:`~napari_bioanomaly._workspace.Workspace`.

With ``BIOANOMALY_INLINE=1`` the job runs on the calling thread instead (debugging,
profiling): the same callbacks, in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

from ..core.model import BioAnomalyError

#: Set to 1 to run workers (training, prediction, quality checks) on the calling thread.
INLINE_ENV = "BIOANOMALY_INLINE"


def error_text(exc: BaseException) -> str:
    """An error as a user reads it: our own errors by their message, a file that could not
    be read or written by its name and why, others with their type."""
    if isinstance(exc, BioAnomalyError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def is_bug(exc: BaseException) -> bool:
    """Whether an error of a job is a bug of ours (napari shows its traceback): not bad
    input (:class:`BioAnomalyError`), nor a file system that refused (``OSError``: a full
    disk, a folder that cannot be written, a file gone), said plainly instead."""
    return not isinstance(exc, (BioAnomalyError, OSError))


def launch(
    job: Callable[..., Generator[Any, Any, Any]],
    args: tuple = (),
    *,
    on_event: Callable[[Any], None] | None = None,
    on_returned: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    workspace: Any = None,
    describe: str = "",
) -> Any:
    """Run ``job(*args)`` in the background; returns the started worker (None inline).

    With a ``workspace``, its job is "running" (with ``describe``) until the job ends,
    then "failed" (with the error) or "done"; callbacks run after the state is set.
    Errors reach ``on_error``; bugs (:func:`is_bug`: not bad input nor a file system that
    refused, said plainly) are raised again on the GUI thread, where napari shows their
    traceback.
    ``on_finished`` runs last, after success, error or stop.
    """

    def errored(exc: BaseException) -> None:
        if workspace is not None:
            workspace.set_job("failed", error_text(exc))
        if on_error is not None:
            on_error(exc)

    def finished() -> None:
        if workspace is not None and workspace.job != "failed":
            workspace.set_job("done")
        if on_finished is not None:
            on_finished()

    if workspace is not None:
        workspace.set_job("running", describe)
    if os.environ.get(INLINE_ENV):
        generator = job(*args)
        try:
            while True:
                event = next(generator)
                if on_event is not None:
                    on_event(event)
        except StopIteration as stop:
            if on_returned is not None:
                on_returned(stop.value)
        except Exception as exc:
            errored(exc)
        finished()
        return None
    from napari.qt.threading import create_worker

    def errored_in_worker(exc: BaseException) -> None:
        errored(exc)
        if is_bug(exc):
            raise exc  # a bug: napari's error notification shows its traceback

    # errors are ours to report (napari would raise every one of them again)
    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True)
    if on_event is not None:
        worker.yielded.connect(on_event)
    if on_returned is not None:
        worker.returned.connect(on_returned)
    worker.errored.connect(errored_in_worker)
    worker.finished.connect(finished)
    worker.start()
    return worker
