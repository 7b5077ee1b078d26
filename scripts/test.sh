#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite headless: lint, then pytest with a
# real napari viewer on a virtual X display (pytest-xvfb starts Xvfb with Mesa OpenGL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check napari_bioanomaly tests benchmarks
.venv/bin/ruff format --check napari_bioanomaly tests benchmarks
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$(mktemp -d)}"
exec .venv/bin/python -m pytest "$@"
