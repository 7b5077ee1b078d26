"""Pure core: annotation model, file formats, geometry, images.

Nothing under ``napari_bioanomaly.core`` imports napari, Qt, magicgui or torch
(enforced by import-linter contracts in ``pyproject.toml``).
"""
