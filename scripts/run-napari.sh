#!/usr/bin/env bash
# Set up (see setup.sh) and open napari with the plugin and the synthetic sample dataset.
# Extra arguments go to `napari-bioanomaly gui`, e.g. a dataset folder or --screenshot shot.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "run: no display found; running under Xvfb (a virtual screen)" >&2
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/napari-bioanomaly gui "$@"
fi
exec .venv/bin/napari-bioanomaly gui "$@"
