"""napari glue of a review: the predictions' Shapes layer and the anomaly-map Image layer.

Beside :mod:`._annotator` (the ground truth's layers): no Qt, no review logic. Polygons
cross into napari through :func:`._layers.to_napari` and back through ``from_napari``,
and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._layers import TAG, from_napari, to_napari
from .core.model import Region

GT_COLOR = "#00c000"
PRED_COLOR = "#ff2020"


def _alive(viewer: Any, layer: Any) -> bool:
    return layer is not None and layer in viewer.layers


class ReviewLayers:
    """The layers a review shows, created when first needed (again if the user deleted
    them)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.predictions: Any = None
        self.heatmap: Any = None
        #: the regions the predictions layer was last filled with, and that layer
        self._shown: tuple[list[Region], Any] = ([], None)

    def ensure_predictions(self, source: str | Path) -> Any:
        if not _alive(self.viewer, self.predictions):
            self.predictions = self.viewer.add_shapes(
                None, ndim=2, name="predictions (review)", shape_type="polygon",
                edge_color=PRED_COLOR, face_color="transparent", edge_width=2,
                metadata={TAG: {"role": "prediction", "file": str(source)}},
            )  # fmt: skip
        return self.predictions

    def remove(self) -> None:
        """Take the review's own layers (predictions, anomaly map) out of the viewer."""
        for layer in (self.predictions, self.heatmap):
            if _alive(self.viewer, layer):
                self.viewer.layers.remove(layer)
        self.predictions = self.heatmap = None
        self._shown = ([], None)

    def show_predictions(self, regions: list[Region]) -> bool:
        """Fill the predictions layer with ``regions``; False (nothing done) when it
        already shows these very regions, as after a move of the IoU threshold (a slider
        move then redraws nothing, and outlines the user is editing stay as drawn)."""
        layer = self.predictions
        if layer is None:
            return False
        before, filled = self._shown
        if filled is layer and len(layer.data) == len(regions) == len(before) and all(
                a is b for a, b in zip(before, regions, strict=True)):  # fmt: skip
            return False
        layer.selected_data = set()
        layer.data = []
        if regions:
            layer.add_polygons([to_napari(r.polygon) for r in regions])
        self._shown = (list(regions), layer)
        return True

    def redraw(self) -> None:
        """Have the next :meth:`show_predictions` fill the layer again, even with the same
        regions (outlines edited before an accept go back to the model's)."""
        self._shown = ([], None)

    def polygons(self) -> list[np.ndarray]:
        """The shown predictions' outlines as the user may have edited them (image
        coordinates), in the order they were shown."""
        if self.predictions is None:
            return []
        return [from_napari(d) for d in self.predictions.data]

    def selected(self) -> list[int]:
        return [] if self.predictions is None else sorted(self.predictions.selected_data)

    def restyle(self, ground_truth: Any, fill: bool, opacity: float) -> None:
        """Outline colours, fill (a translucent face) and opacity of both shape layers."""
        alpha = "55" if fill else "00"
        for layer, color in ((self.predictions, PRED_COLOR), (ground_truth, GT_COLOR)):
            if layer is not None:
                layer.opacity = opacity
                if len(layer.data):
                    layer.face_color = color + alpha

    @staticmethod
    def set_visible(layer: Any, on: bool) -> None:
        if layer is not None:
            layer.visible = on

    def show_heatmap(self, heat: np.ndarray | None, folder: str | Path, above: list[Any]) -> None:
        """Show an anomaly map (inferno, 0 to 1) just under the layers ``above`` (the
        outlines); hide the layer when ``heat`` is None."""
        layer = self.heatmap
        if heat is None:
            if _alive(self.viewer, layer):
                layer.visible = False
            return
        if _alive(self.viewer, layer):
            layer.data = heat
            layer.visible = True
            return
        self.heatmap = self.viewer.add_image(
            heat, name="anomaly map", colormap="inferno", contrast_limits=(0.0, 1.0),
            opacity=0.7, blending="additive",
            metadata={TAG: {"role": "anomaly map", "folder": str(folder)}},
        )  # fmt: skip
        layers = self.viewer.layers
        index = layers.index(self.heatmap)
        targets = [layers.index(x) for x in above if _alive(self.viewer, x)]
        if targets and index > min(targets):
            layers.move(index, min(targets))

    def zoom_to(self, bbox: tuple[float, float, float, float], width_px: float = 600) -> None:
        """Centre the camera on an image-coordinate box, which then fills about a quarter
        of the canvas."""
        r0, c0, r1, c1 = bbox
        self.viewer.camera.center = tuple(to_napari(((r0 + r1) / 2, (c0 + c1) / 2)))
        extent = max(r1 - r0, c1 - c0, 8)
        self.viewer.camera.zoom = width_px / (4 * extent)
