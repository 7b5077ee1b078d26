"""Machine learning: datasets, models, training and prediction (torch; no napari, no Qt)."""
