"""How many CPU threads the computations of this process may use.

Default: one per core the process may use (its CPU affinity: a batch system's allocation,
``taskset``). ``--threads N`` on the command line (and the widgets, which leave a core to
napari) set a lower limit, which every pool of threads honours: torch's (set with it),
the random forest's trees, the line cue's FFTs. Threads competing for the same cores run
many times slower than one thread per core.
"""

from __future__ import annotations

import os

_limit: int | None = None


def available() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cpu_threads() -> int:
    """The threads a pool of this process may use: the limit set, else :func:`available`."""
    return _limit if _limit is not None else available()


def set_cpu_threads(n: int | None) -> None:
    """Limit the threads of every pool to ``n`` (None: one per core available)."""
    global _limit
    if n is not None and n < 1:
        raise ValueError(f"threads must be 1 or more, not {n}")
    _limit = n
