"""Layering rules: the core runs where there is no napari, Qt or torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(tool: str) -> str:
    """Run a check of the test tools (settings in pyproject.toml) at the repository's root;
    its output where it passed."""
    exe = Path(sys.executable).parent / tool
    if not exe.exists():
        pytest.skip(f"{tool} is not installed (pip install -e .[testing])")
    done = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_import_linter_contracts_hold():
    assert "Contracts: 6 kept, 0 broken." in _check("lint-imports")


def test_the_core_type_checks():
    """mypy over the package (the Qt widgets are hinted, not checked)."""
    assert "Success: no issues found" in _check("mypy")


def test_core_and_cli_import_without_napari_qt_or_torch():
    code = (
        "import sys\n"
        "import napari_bioanomaly.core.annotations, napari_bioanomaly.core.synthetic\n"
        "import napari_bioanomaly.core.masks, napari_bioanomaly.cli\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'magicgui', 'torch') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_package_init_is_light():
    code = "import sys, napari_bioanomaly; print(len([m for m in sys.modules if m.startswith('numpy')]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


def test_manifest_is_installed_with_the_package_and_valid():
    from npe2 import PluginManifest

    pkg_manifest = ROOT / "napari_bioanomaly" / "napari.yaml"
    top = ROOT / "napari.yaml"
    assert top.resolve() == pkg_manifest.resolve()  # one file, no second copy to drift
    manifest = PluginManifest.from_file(pkg_manifest)
    assert manifest.name == "napari-bioanomaly"
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), command.python_name


def test_training_prediction_and_plots_import_without_napari_or_qt():
    """What a GPU server runs: torch, scikit-learn and matplotlib's Agg, but no napari or Qt."""
    code = (
        "import sys\n"
        "import napari_bioanomaly.ml.predict, napari_bioanomaly.ml.crossval\n"
        "import napari_bioanomaly.ml.anomaly, napari_bioanomaly.ml.forest, napari_bioanomaly.plots\n"
        "napari_bioanomaly.plots.curves_image([0, 1, 1], [0.2, 0.4, 0.9])\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'magicgui', 'vispy') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
