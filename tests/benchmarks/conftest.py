"""The scripts of ``benchmarks/real/`` import each other as top-level modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

REAL = Path(__file__).resolve().parents[2] / "benchmarks" / "real"


@pytest.fixture(scope="module")
def real_script() -> Iterator[Callable[[str], ModuleType]]:
    """Import a script of ``benchmarks/real/`` by name (its folder on the path meanwhile)."""
    sys.path.insert(0, str(REAL))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(REAL))
