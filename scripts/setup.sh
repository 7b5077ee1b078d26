#!/usr/bin/env bash
# Set up napari-bioanomaly on a fresh Debian/Ubuntu machine:
#   - Debian packages napari needs for OpenGL under a (virtual) X display,
#   - a project virtual environment in .venv with the plugin and its test tools.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
  libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)

if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup: not a Debian/Ubuntu system; install Xvfb and Mesa OpenGL yourself" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

stamp=.venv/.napari-bioanomaly-setup
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # PyTorch first, pinned to the release this project is tested with (a CPU/CUDA build).
  if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "setup: installing torch and torchvision (a few minutes)"
    "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" || "${PIP[@]}" torch torchvision
  fi
  echo "setup: installing napari-bioanomaly with napari, PyQt5 and test tools"
  "${PIP[@]}" -e ".[testing]"
  echo "$want" >"$stamp"
fi
echo "setup: ready ($(.venv/bin/napari-bioanomaly --version))"
