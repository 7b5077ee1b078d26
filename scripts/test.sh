#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite headless: lint, then pytest with a
# real napari viewer on a virtual X display (pytest-xvfb starts Xvfb with Mesa OpenGL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check napari_bioanomaly tests benchmarks
.venv/bin/ruff format --check napari_bioanomaly tests benchmarks
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$(mktemp -d)}"
.venv/bin/python -m pytest "$@"
# With no arguments (the whole suite, as CI runs it): the plugin tests again on PyQt6, the
# binding napari keeps after PyQt5's support ends, installed beside the venv's PyQt5 in
# .venv/pyqt6 and chosen by QT_API. SKIP_PYQT6=1 leaves this run out.
if [ $# -eq 0 ] && [ "${SKIP_PYQT6:-0}" != 1 ]; then
  if [ ! -d .venv/pyqt6/PyQt6 ]; then
    echo "test: installing PyQt6 into .venv/pyqt6"
    .venv/bin/python -m pip install -q --disable-pip-version-check --target .venv/pyqt6 "PyQt6==6.11.*"
  fi
  echo "test: the plugin tests on PyQt6"
  BIOANOMALY_TEST_QT=pyqt6 QT_API=pyqt6 PYTEST_QT_API=pyqt6 PYTHONPATH=.venv/pyqt6 .venv/bin/python -m pytest tests/plugin
fi
