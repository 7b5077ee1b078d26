"""napari-bioanomaly: annotate, train, and review anomaly segmentation in microscopy images."""

__version__ = "0.1.0"
