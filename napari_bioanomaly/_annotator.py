"""napari glue for annotating: one image and its regions on screen, kept in sync with a session.

No Qt here (psygnal signals only), so it is driven the same way by the dock
widget, by tests, and by scripts. Everything runs on the main thread.

How it works: the current image is an Image layer and its regions a 2D Shapes
layer with one feature row per shape (class, source, score, attributes). After
every finished edit (napari's ``data`` event with action ``added``, ``removed``
or ``changed``) the regions are read back from the layer into the session and
the session is saved (atomic, with a backup). Regions about to be deleted are
copied first so a deletion can be undone. Switching images saves, then replaces
the layers' data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from ._layers import (
    FEATURE_DEFAULTS,
    ROLE_GROUND_TRUTH,
    ROLE_IMAGE,
    TAG,
    class_color,
    region_row,
    regions_from_shapes,
    to_napari,
)
from .core.annotations import inside_image
from .core.colors import dataset_colors
from .core.images import (
    NON_FINITE,
    percentile_range,
    stack_note,
    widened,
    with_finite_pixels,
)
from .core.model import FALLBACK_CLASS, BioAnomalyError, Region
from .core.report import ImportReport
from .core.session import AnnotationSession, DiskChanged
from .core.text import counted, name_first

#: What to do when the annotation file changed on disk: the callback returns one of these.
CONFLICT_CHOICES = ("reload", "overwrite", "later")

FACE_ALPHA = 0.25


def _face(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    rgba = transform_color(color)[0].copy()
    rgba[3] = FACE_ALPHA
    return rgba


def _no_features() -> Any:
    """An empty feature table with the columns (and kinds of values) of ours."""
    import pandas as pd  # type: ignore[import-untyped]

    return pd.DataFrame({k: pd.Series([], dtype=float if isinstance(v, float) else object)
                         for k, v in FEATURE_DEFAULTS.items()})  # fmt: skip


class Annotator:
    """Show and edit one image of an :class:`AnnotationSession` at a time in a viewer.

    Parameters
    ----------
    viewer
        The napari viewer.
    session
        The dataset being annotated.
    on_conflict
        Called with the :class:`DiskChanged` error when the annotation file was
        changed by another program; returns ``"reload"``, ``"overwrite"`` or
        ``"later"`` (keep the changes unsaved and ask again at the next save).
    on_save_failed
        Called with the error when a save fails for another reason (a read-only folder,
        a full disk), once per run of failed saves: the changes stay in memory and every
        edit tries again; the widget offers to save a copy elsewhere.
    color, name
        One colour for all regions instead of a colour per class, and the name
        of the Shapes layer.
    """

    image_changed = Signal(int)
    regions_changed = Signal()
    saved = Signal(str)
    message = Signal(str)
    #: the error of each failed save ("autosave failed: ..."), an error to show
    save_failed = Signal(str)
    #: the whole file was read again (theirs reloaded, or an earlier version restored):
    #: any image's regions may have changed
    reloaded = Signal()
    #: a class was renamed: regions of any image may have another label
    classes_renamed = Signal()

    def __init__(
        self,
        viewer: Any,
        session: AnnotationSession,
        on_conflict: Callable[[DiskChanged], str] | None = None,
        on_save_failed: Callable[[Exception], object] | None = None,
        color: str | None = None,
        name: str = "ground truth",
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.color = color  # one colour for every region (review: ground truth in green)
        self.name = name
        self.on_conflict = on_conflict or (lambda exc: "later")
        self.on_save_failed = on_save_failed or (lambda exc: None)
        #: saves failed in a row (0 after a save went through)
        self.failed_saves = 0
        self.polyline_width = 3.0
        #: whether the image shown could be read (its regions are editable)
        self._readable = True
        self.min_area = 0.0
        self._current_class = session.dataset.classes[0] if session.dataset.classes else "anomaly"
        self._pending_delete: list[Region] = []
        self._said: set[str] = set()
        self._loading = False
        self.image_layer: Any = None
        self.shapes_layer: Any = None
        self.show(session.current)

    # ------------------------------------------------------------------ layers

    def _ensure_layers(self, pixels: np.ndarray) -> None:
        meta = {"root": str(self.session.dataset.root), "annotation_file": str(self.session.path)}
        if self.image_layer is None or self.image_layer not in self.viewer.layers:
            self.image_layer = self.viewer.add_image(
                pixels, name="image", metadata={TAG: {"role": ROLE_IMAGE, **meta}}
            )
            # under the outlines and maps already there (Review's predictions and anomaly
            # map, left from another dataset), which it would hide
            layers = self.viewer.layers
            layers.move(layers.index(self.image_layer), 0)
        if self.shapes_layer is None or self.shapes_layer not in self.viewer.layers:
            layer = self.viewer.add_shapes(
                None,
                ndim=2,
                name=self.name,
                shape_type="polygon",
                edge_width=2,
                features={k: np.array([], dtype=object) for k in FEATURE_DEFAULTS},
                feature_defaults=dict(FEATURE_DEFAULTS),
                text={"string": "{class}", "visible": False, "color": "white", "size": 9},
                metadata={TAG: {"role": ROLE_GROUND_TRUTH, **meta}},
            )
            layer.events.data.connect(self._on_data)
            self.shapes_layer = layer
            self.current_class = self._current_class

    def _show_pixels(self, pixels: np.ndarray) -> None:
        layer = self.image_layer
        rgb = pixels.ndim == 3
        same_kind = layer.rgb == rgb and layer.data.ndim == pixels.ndim
        if not same_kind:  # napari cannot switch a layer between RGB and grayscale
            self.viewer.layers.remove(layer)
            self.image_layer = None
            self._ensure_layers(pixels)
            self.viewer.layers.move(self.viewer.layers.index(self.image_layer), 0)
            layer = self.image_layer
        old_shape = layer.data.shape
        layer.data = pixels
        if not rgb:
            layer.contrast_limits_range = _limits_range(pixels)
            layer.contrast_limits = percentile_range(pixels)
        if old_shape != pixels.shape:
            self.viewer.reset_view()

    def _fill_shapes(self, regions: list[Region]) -> None:
        layer = self.shapes_layer
        self._loading = True
        try:
            layer.selected_data = set()
            layer.data = []
            # napari keeps the old features when the shapes are emptied: the next image's
            # first new shape took the first old row's class
            layer.features = _no_features()
            if regions:
                rows = [region_row(r, self.session.image.filename) for r in regions]
                colors = dataset_colors(self.session.dataset)
                edge = [self.color or colors.get(r.label) or class_color(r.label) for r in regions]
                layer.add_polygons(
                    [to_napari(r.polygon) for r in regions],
                    edge_color=edge,
                    face_color=[_face(c) for c in edge],
                )
                layer.features = {k: [row[k] for row in rows] for k in FEATURE_DEFAULTS}
        finally:
            self._loading = False
        # setting the shapes made napari take a drawing class and colour from them (the
        # last region's): new shapes get the class chosen in Classes again
        self._apply_current_class()
        # nothing is drawn over an image that cannot be read: where would it be? (napari
        # makes a layer editable again whenever its data is set)
        layer.editable = self._readable

    # ------------------------------------------------------------------ navigation

    @property
    def index(self) -> int:
        return self.session.current

    def show(self, index: int, save: bool = True) -> bool:
        """Save the current image's regions (unless not ``save``: the layer no longer
        shows the session's), then show image ``index``.

        Returns ``False`` (and tells why through :attr:`message`) when the image
        cannot be read; its regions are still shown over an empty canvas so
        they can be reviewed, in a layer that cannot be edited.
        """
        if self.shapes_layer is not None and save:
            self.sync()
        previous = self.session.current
        screen = self._screen()
        self.session.go_to(index)
        try:
            return self._display(index)
        except BaseException:
            # the session goes back to the image before, and so do the pixels and the
            # outlines on screen, whatever of this image was shown: a region drawn next
            # is saved into the image it was drawn over
            self.session.go_to(previous)
            self._restore(screen)
            raise

    def _screen(self) -> _Screen | None:
        """What the image layer shows now (``None`` before any image was shown)."""
        layer = self.image_layer
        if layer is None or layer not in self.viewer.layers:
            return None
        limits = None if layer.rgb else (layer.contrast_limits_range, layer.contrast_limits)
        return _Screen(layer, layer.data, limits, self._readable)

    def _restore(self, screen: _Screen | None) -> None:
        """Show again ``screen`` (the pixels before) and the session's image's outlines,
        after showing another image failed. Should that fail too, nothing on screen can
        be edited: no region is drawn where it cannot be saved to its image."""
        try:
            if screen is not None:
                self._put_back(screen)
            self._fill_shapes(self.session.image.regions)
        except Exception:
            if self.shapes_layer is not None:
                self._readable = False
                self.shapes_layer.editable = False

    def _put_back(self, screen: _Screen) -> None:
        """The image layer of ``screen`` in the viewer, showing its pixels as they were."""
        layers = self.viewer.layers
        if self.image_layer is not screen.layer:  # replaced (RGB and grayscale differ)
            if self.image_layer is not None and self.image_layer in layers:
                layers.remove(self.image_layer)
            if screen.layer not in layers:
                layers.insert(0, screen.layer)
            self.image_layer = screen.layer
        screen.layer.data = screen.data
        if screen.limits is not None:
            screen.layer.contrast_limits_range, screen.layer.contrast_limits = screen.limits
        self._readable = screen.readable

    def _display(self, index: int) -> bool:
        """Show the session's current image ``index`` and its regions (see :meth:`show`)."""
        ok = True
        try:
            pixels = self.session.read_pixels(index)
        except BioAnomalyError as exc:
            self.message.emit(f"{exc}; its regions are shown, but cannot be edited")
            shape = self.session.image.shape or (512, 512)
            pixels = np.zeros(shape, dtype=np.uint8)
            ok = False
        # NaN or infinite pixels never reach napari: its contrast slider fails on them
        pixels, non_finite = with_finite_pixels(pixels)
        self._ensure_layers(pixels)
        self._show_pixels(pixels)
        planes = self.session.planes(index) if ok else 1
        if planes > 1:
            self._say_once(stack_note(planes))
        if non_finite:
            bad = counted(non_finite, "NaN or infinite pixel")
            self._say_once(f"{bad}, shown as the median grey of the others ({NON_FINITE})")
        self._readable = ok
        self._fill_shapes(self.session.image.regions)
        self.viewer.layers.selection.active = self.shapes_layer
        if self.session.dirty:  # clipping on first read changes regions
            self.autosave()
        self.image_changed.emit(index)
        return ok

    def _say_once(self, text: str) -> None:
        """Tell ``text`` of the image shown, once, not at every visit."""
        said = f"{self.session.image.filename}: {text}"
        if said not in self._said:
            self._said.add(said)
            self.message.emit(said)

    def next(self, step: int = 1) -> None:
        """Show the next (``step`` > 0) or previous image, staying in range."""
        n = len(self.session.dataset.images)
        target = min(max(self.index + step, 0), n - 1)
        if target != self.index:
            self.show(target)

    # ------------------------------------------------------------------ edits

    def _rows(self) -> list[dict[str, Any]]:
        feats = self.shapes_layer.features
        n = len(self.shapes_layer.data)
        cols = {k: (list(feats[k]) if k in feats else [v] * n) for k, v in FEATURE_DEFAULTS.items()}
        return [{k: cols[k][i] for k in cols} for i in range(n)]

    def layer_regions(self, indices: list[int] | None = None) -> list[Region]:
        """Regions of the shapes on screen (all, or those at ``indices``)."""
        layer = self.shapes_layer
        data, types, rows = layer.data, layer.shape_type, self._rows()
        picked = list(range(len(data))) if indices is None else list(indices)
        regions = regions_from_shapes(
            [data[i] for i in picked],
            [types[i] for i in picked],
            [rows[i] for i in picked],
            self.polyline_width,
        )
        return [r for r in regions if r is not None]

    def _on_data(self, event: Any) -> None:
        if self._loading:
            return
        action = str(getattr(event, "action", ""))
        if action == "removing":
            self._pending_delete = self.layer_regions(list(event.data_indices))
        elif action == "removed":
            self.session.push_deleted(self._pending_delete)
            self._pending_delete = []
            self.sync()
        elif action in ("added", "changed"):
            self.sync()

    def sync(self) -> None:
        """Read the regions on screen into the session and autosave if they changed."""
        if self.shapes_layer is None or self._loading:
            return
        regions, clipped, dropped = self.layer_regions(), 0, 0
        shape = self.session.image.shape
        if shape is not None:  # shapes drawn past the image's edges are cut to it
            regions, clipped, dropped = inside_image(regions, shape)
        changed = self.session.set_regions(regions)
        if clipped or dropped:
            self._fill_shapes(self.session.image.regions)  # as kept
            said = [f"{counted(clipped, 'region')} cut at the image's edges"] if clipped else []
            if dropped:
                said.append(f"{counted(dropped, 'region')} wholly outside the image dropped")
            self.message.emit(f"{self.session.image.filename}: {'; '.join(said)}")
        if changed:
            self.regions_changed.emit()
        self.autosave()

    def autosave(self) -> None:
        """Save now if anything changed; on a disk conflict ask :attr:`on_conflict`."""
        if not self.session.dirty:
            return
        try:
            path = self.session.save()
        except DiskChanged as exc:
            choice = self.on_conflict(exc)
            if choice == "reload":
                try:
                    self.session.reload()
                except (OSError, BioAnomalyError) as err:  # gone or unreadable since
                    self.message.emit(f"{self.session.path.name} not reloaded: {err} "
                                      "(changes not saved yet)")  # fmt: skip
                    return
                self._fill_shapes(self.session.image.regions)
                self.regions_changed.emit()
                self.reloaded.emit()
                self.message.emit(f"reloaded {self.session.path.name} from disk")
                return
            if choice != "overwrite":
                self.message.emit(f"{exc} (changes not saved yet)")
                return
            try:
                path = self.session.save(force=True)
            except (OSError, BioAnomalyError) as err:
                self._save_failed(err)
                return
        except (OSError, BioAnomalyError) as exc:
            self._save_failed(exc)
            return
        self.failed_saves = 0
        if path is not None:
            self.saved.emit(str(path))

    def _save_failed(self, exc: Exception) -> None:
        self.failed_saves += 1
        self.save_failed.emit(f"autosave failed: {exc}")
        if self.failed_saves == 1:  # asked once, not at every edit of the run
            self.on_save_failed(exc)

    @property
    def current_class(self) -> str:
        return self._current_class

    @current_class.setter
    def current_class(self, name: str) -> None:
        """Class of new shapes; also given to the shapes selected now."""
        self._current_class = name
        layer = self.shapes_layer
        if layer is None:
            return
        selected = sorted(layer.selected_data)
        if selected:
            layer.features.loc[selected, "class"] = name
        self._apply_current_class()  # also recolours the selected shapes
        if selected:
            self.sync()

    def _apply_current_class(self) -> None:
        """New shapes of the layer get :attr:`current_class`, its colour, source human."""
        layer = self.shapes_layer
        if layer is None:
            return
        # a new shape's row, not napari's copy of the last region's (its attributes too)
        layer.feature_defaults = {**FEATURE_DEFAULTS, "class": self._current_class}
        name = self._current_class
        color = self.color or dataset_colors(self.session.dataset).get(name) or class_color(name)
        layer.current_edge_color = color
        layer.current_face_color = _face(color)

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class everywhere: the dataset, the shapes on screen (they were synced
        back with the old name, so this image kept it) and the class chosen for drawing."""
        self.sync()
        changed = self.session.rename_class(old, new)
        layer = self.shapes_layer
        if layer is not None and len(layer.data):
            for before, after in changed.items():  # combinations of checkbox options too
                layer.features.loc[layer.features["class"] == before, "class"] = after
        if self._current_class == old:
            self._current_class = new
        self.show(self.index)  # redraw with the new name and colour
        self.classes_renamed.emit()

    def set_class_attribute(self, name: str) -> ImportReport:
        """Read the classes from another region attribute (see
        :meth:`~.core.session.AnnotationSession.set_class_attribute`): the shapes on screen
        are synced first, every region is read again, shown and saved. Returns the report
        of reading them again."""
        self.sync()
        report = self.session.set_class_attribute(name)
        classes = self.session.dataset.classes
        if self._current_class not in classes:
            self._current_class = classes[0] if classes else FALLBACK_CLASS
        self.show(self.index, save=False)
        self.regions_changed.emit()
        self.reloaded.emit()
        self.autosave()
        return report

    def set_no_anomaly(self, value: bool) -> None:
        """Mark the current image as checked with no anomaly (only when it has no regions)."""
        if value and self.session.image.regions:
            raise BioAnomalyError(
                f"{self.session.image.filename}: has {len(self.session.image.regions)} regions; "
                "delete them before marking it 'no anomaly'"
            )
        self.session.set_flag("no_anomaly", value)
        self.autosave()
        self.regions_changed.emit()

    def set_file_attributes(self, attributes: dict[str, Any]) -> None:
        self.session.set_file_attributes(attributes)
        self.autosave()
        self.regions_changed.emit()

    def undo_delete(self) -> bool:
        """Put back the last deleted regions (going to their image if needed)."""
        deleted = self.session.pop_deleted()
        if deleted is None:
            self.message.emit("nothing to undo")
            return False
        names = [im.filename for im in self.session.dataset.images]
        if deleted.image not in names:
            return False
        index = names.index(deleted.image)
        if index != self.index:
            self.show(index)
        self.add_regions(deleted.regions)
        self.message.emit(f"restored {counted(len(deleted.regions), 'region')} on {deleted.image}")
        return True

    def restore(self, version: str | Path) -> Path | None:
        """Go back to a kept version of the annotation file (:mod:`.core.history`): the
        edits on screen are saved first, so the version it replaces, kept too, holds
        them. Returns that kept version. Refused (:class:`BioAnomalyError`) while the
        last edits cannot be saved: they would be lost."""
        self.sync()
        if self.session.dirty:
            raise BioAnomalyError(f"{self.session.path.name}: the last changes are not saved "
                                  "yet; nothing restored (save a copy first)")  # fmt: skip
        kept = self.session.restore(version)
        self.show(self.session.current, save=False)  # the layer shows the old file's
        self.regions_changed.emit()
        self.reloaded.emit()
        return kept

    def add_regions(self, regions: list[Region]) -> None:
        """Add regions to the image on screen (shown, saved)."""
        self._fill_shapes(self.session.image.regions + list(regions))
        self.sync()

    def small_regions(self) -> list[int]:
        """Indices of the current image's regions smaller than :attr:`min_area`."""
        return [i for i, r in enumerate(self.session.image.regions) if r.area < self.min_area]

    def close(self) -> None:
        """Save, stop listening to the layers and take them out of the viewer: left there,
        they looked editable, and what was drawn on them was saved nowhere. When the save
        fails (a read-only folder) they stay, named as unsaved, and an error says so."""
        if self.shapes_layer is not None:
            self.sync()
            self.shapes_layer.events.data.disconnect(self._on_data)
        if self.session.dirty and self.shapes_layer is not None:
            from napari.utils.notifications import show_error

            self.shapes_layer.name = f"{self.name} (NOT SAVED)"
            show_error(name_first(
                f"{self.session.path}: the last changes could not be saved; its layer "
                f"'{self.shapes_layer.name}' stays in the viewer (napari's File > Save "
                "Selected Layers keeps it)"))  # fmt: skip
            return
        for layer in (self.shapes_layer, self.image_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.shapes_layer = self.image_layer = None


def _limits_range(pixels: np.ndarray) -> tuple[float, float]:
    """The contrast slider's range for a grayscale image: its minimum to its maximum
    (finite pixels: :func:`~.core.images.with_finite_pixels` has filled the others), one
    grey level wide for a flat image (napari refuses a range whose ends are equal)."""
    return widened(float(pixels.min()), float(pixels.max()))


@dataclass
class _Screen:
    """What the image layer showed before another image was shown: the layer, its pixels,
    its contrast range and limits (``None`` for RGB) and whether its regions were editable."""

    layer: Any
    data: Any
    limits: tuple[Any, Any] | None
    readable: bool
