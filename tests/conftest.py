"""Shared fixtures: small synthetic datasets and the real VIA files in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import settings

from napari_bioanomaly.core.synthetic import SampleConfig, write_sample

# The same examples on every run: CI is not red one day in fifty because hypothesis
# drew a new case (cases found that way become tests of their own);
# benchmarks/bench_fuzz.py explores further.
settings.register_profile("project", derandomize=True)
settings.load_profile("project")

SHARED_VIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "via"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A written sample dataset: 6 images of 128 px (do not modify; copy first)."""
    out = tmp_path_factory.mktemp("sample")
    write_sample(out, SampleConfig(n_images=6, size=128, seed=3))
    return out


@pytest.fixture
def write_json(tmp_path: Path):
    """Write an object as JSON into tmp_path and return the path."""

    def write(obj, name: str = "ann.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(obj), encoding="utf-8")
        return path

    return write


def shared_file(name: str) -> Path:
    """A file of ../shared/data/via, or skip when the shared folder is absent."""
    path = SHARED_VIA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is not checked out beside the project)")
    return path


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    """Every test gets its own config folder (where sessions remember the last image)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def dataset_dir(sample_dir, tmp_path):
    """A private, writable copy of the sample dataset."""
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(sample_dir, folder)
    return folder
