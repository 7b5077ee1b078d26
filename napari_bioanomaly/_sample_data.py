"""napari sample data: the synthetic brightfield anomaly dataset, written once to a cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from ._layers import LayerData
from .core.synthetic import SampleConfig, write_sample


def sample_folder(config: SampleConfig = SampleConfig()) -> Path:
    """Folder of the sample dataset (made on first use; edits there are kept)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = (
        cache / "napari-bioanomaly" / f"sample-n{config.n_images}-s{config.size}-seed{config.seed}"
    )
    if not (folder / "annotations.json").is_file():
        write_sample(folder, config)
    return folder


def make_sample_data() -> list[LayerData]:
    """Images and ground-truth polygons of the sample dataset."""
    from ._reader import dataset_layers
    from .core.annotations import open_folder

    dataset, report, ann = open_folder(sample_folder())
    return dataset_layers(dataset, report, ann)
