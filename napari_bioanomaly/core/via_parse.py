"""Reading VIA 1 and 2 files entry by entry: the names VIA uses, the import options, and a
parser that checks every value, reports what it skips or changes, and builds the dataset
(see :mod:`.via`)."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import geometry
from .jsonio import shallow_attributes
from .model import FALLBACK_CLASS, SOURCES, Dataset, ImageRecord, Region
from .report import ImportReport
from .text import counted

#: Region attributes tried, in order, for the class when none is configured.
CLASS_ATTRIBUTE_CANDIDATES = ("class", "type", "anomaly", "label")
#: File attribute that stores the "checked: no anomaly" flag.
NO_ANOMALY_ATTRIBUTE = "no_anomaly"
#: File attribute that stores the "reviewed" flag.
REVIEWED_ATTRIBUTE = "reviewed"
#: VIA 2 data format version we write.
VIA2_VERSION = "2.0.10"

_TRUE_STRINGS = {"true", "yes", "1", "y", "checked"}


@dataclass(frozen=True)
class ImportOptions:
    """How shapes and attributes become regions.

    Parameters
    ----------
    class_attribute
        Region attribute holding the class; ``None`` picks the first present of
        :data:`CLASS_ATTRIBUTE_CANDIDATES`, else the only attribute, else
        :data:`~napari_bioanomaly.core.model.FALLBACK_CLASS`.
    polyline_width
        Width in pixels of the thin polygon made from a polyline.
    point_radius
        Import points as discs of this radius; ``None`` reports and skips them.
    """

    class_attribute: str | None = None
    polyline_width: float = 3.0
    point_radius: float | None = None

    def __post_init__(self) -> None:
        if not self.polyline_width > 0:
            raise ValueError(f"polyline width must be > 0, got {self.polyline_width}")
        if self.point_radius is not None and not self.point_radius > 0:
            raise ValueError(f"point radius must be > 0, got {self.point_radius}")


class _EntryError(ValueError):
    """A malformed region or image entry: reported, skipped, the rest goes on."""


# --------------------------------------------------------------------------- detection


def _num(value: Any, what: str) -> float:
    """A finite number from a JSON value (numbers written as strings accepted)."""
    if isinstance(value, bool):
        raise _EntryError(f"{what} is a boolean, expected a number")
    if isinstance(value, (int, float)):
        try:
            out = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise _EntryError(f"{what} is too large: {str(value)[:20]}...") from None
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _EntryError(f"{what} is not a number: {value[:40]!r}") from None
    else:
        raise _EntryError(f"{what} is not a number: {type(value).__name__}")
    if not math.isfinite(out):
        raise _EntryError(f"{what} is not finite: {value!r}")
    return out


def _nums(values: Any, what: str) -> np.ndarray:
    """Coordinates: finite numbers within :data:`~.geometry.MAX_COORDINATE`."""
    out = _finite(values, what)
    if not geometry.coordinates_in_range(out):
        raise _EntryError(f"{what} holds coordinates beyond +-{geometry.MAX_COORDINATE:g} px")
    return out


def _finite(values: Any, what: str) -> np.ndarray:
    if not isinstance(values, list):
        raise _EntryError(f"{what} is not a list")
    try:  # fast path: numbers (or numeric strings) converted by numpy in C
        arr = np.array(values, dtype=np.float64)
        if arr.ndim == 1 and np.isfinite(arr).all() and bool not in map(type, values):
            return arr
    except (ValueError, TypeError, OverflowError):
        pass
    # slow path, for a message naming the first bad value
    out = np.array([_num(v, f"{what}[{i}]") for i, v in enumerate(values)], dtype=np.float64)
    if out.ndim != 1:  # pragma: no cover - _num rejects lists already
        raise _EntryError(f"{what} is not a list of numbers")
    return out


def _vertices(xs: Any, ys: Any) -> np.ndarray:
    """(row, col) vertices from VIA's ``all_points_x`` and ``all_points_y``: finite numbers
    within :data:`~.geometry.MAX_COORDINATE`, as many of each."""
    if type(xs) is list and type(ys) is list and len(xs) == len(ys) and xs:
        try:  # fast path: both lists converted and checked in a few C calls
            pts = np.array((ys, xs), dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            pts = None
        # the largest magnitude is NaN (a NaN anywhere), inf, or a number; numpy reads
        # booleans as 0 and 1, so they are looked for
        if (
            pts is not None
            and pts.ndim == 2
            and np.abs(pts).max() <= geometry.MAX_COORDINATE
            and bool not in map(type, xs)
            and bool not in map(type, ys)
        ):
            return np.ascontiguousarray(pts.T)
    # slow path, for a message naming the first bad value
    x, y = _nums(xs, "all_points_x"), _nums(ys, "all_points_y")
    if len(x) != len(y):
        raise _EntryError(f"{len(x)} x coordinates but {len(y)} y coordinates")
    return np.column_stack([y, x])


def _truthy(value: Any) -> bool:
    if isinstance(value, dict):
        return any(bool(v) for v in value.values())
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return bool(value)


def _attr_text(value: Any) -> str:
    """A class label from an attribute value (text, option id, or checkbox object, whose
    ticked ids are joined as :func:`join_options` does)."""
    if isinstance(value, dict):
        return join_options([str(k) for k, v in value.items() if v])
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value).strip()


def join_options(ids: Sequence[str]) -> str:
    """The class of a checkbox value with several options ticked: their ids joined by
    ``+``, a ``+`` or ``\\`` inside an id escaped by a ``\\`` (``["GFP+", "dead"]`` is
    ``GFP\\++dead``), so that :func:`split_options` finds them again."""
    return "+".join(i.replace("\\", "\\\\").replace("+", "\\+") for i in ids)


def split_options(label: str) -> list[str]:
    """The option ids of a class made by :func:`join_options`: ``label`` split at each
    ``+`` that is not escaped, ``\\+`` and ``\\\\`` unescaped (other backslashes kept)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(label)
    for ch in chars:
        if ch == "+":
            parts.append("".join(current))
            current = []
            continue
        if ch == "\\":
            after = next(chars, "")
            if after in ("+", "\\"):
                current.append(after)
                continue
            ch += after
        current.append(ch)
    parts.append("".join(current))
    return parts


def checked_options(label: str, options: Collection[str]) -> list[str]:
    """The option ids of a checkbox attribute that a class stands for: several options
    joined (:func:`join_options`) when each is one of ``options``; else the one option
    named ``label``, or escaped in it; else ``label`` itself (a class given in napari:
    an option of its own)."""
    parts = split_options(label)
    if len(parts) > 1 and all(p in options for p in parts):
        return parts
    if label in options or len(parts) > 1:
        return [label]
    return parts


def checkbox_label(ids: Sequence[str], options: Collection[str]) -> str:
    """The class of a checkbox value with ``ids`` ticked, among the attribute's
    ``options``: one id as it is (``GFP+``), unless :func:`checked_options` would take it
    for others (the id ``a+b`` beside the options ``a`` and ``b``: ``a\\+b``); several
    joined by :func:`join_options`. Either way :func:`checked_options` gives ``ids`` back."""
    if len(ids) == 1 and checked_options(ids[0], options) == list(ids):
        return ids[0]
    return join_options(ids)


def defined_checkboxes(attrs: Any) -> dict[str, set[str]]:
    """The option ids of the region attributes a VIA 2 ``_via_attributes`` defines as
    checkboxes (what :func:`~.via_write.checkbox_classes` finds in a dataset)."""
    region = attrs.get("region") if isinstance(attrs, dict) else None
    if not isinstance(region, dict):
        return {}
    out = {}
    for name, definition in region.items():
        if isinstance(definition, dict) and definition.get("type") == "checkbox":
            options = definition.get("options")
            out[str(name)] = set(map(str, options)) if isinstance(options, dict) else set()
    return out


# --------------------------------------------------------------------------- parser


class _Parser:
    """Shared state of one import: options, report, and the dataset being built."""

    def __init__(self, options: ImportOptions, report: ImportReport) -> None:
        self.options = options
        self.report = report
        self.images: dict[str, ImageRecord] = {}
        self.class_sources: dict[str, int] = {}
        self.pending: list[tuple[ImageRecord, np.ndarray, Any, tuple[Any, ...], Any]] = []
        #: regions with no class attribute at all (reported once, in :meth:`dataset`)
        self.unlabelled = 0
        #: the attributes those regions had, with how many had each
        self.unlabelled_with: Counter[str] = Counter()
        #: class attributes whose values were checkbox objects, with the option ids seen
        self.checkboxes: dict[str, dict[str, None]] = {}
        #: option ids of the attributes the file defines as checkboxes (VIA 2 projects)
        self.defined: dict[str, set[str]] = {}
        #: class attributes whose values were checkbox objects, with the option ids ticked
        self.ticked: dict[str, dict[str, None]] = {}

    # ---- images

    def image(self, filename: Any, key: str, size: Any = -1) -> ImageRecord | None:
        from .paths import normalise_filename

        if not isinstance(filename, str) or not filename.strip():
            self.report.add("image", "entry has no 'filename'; its regions are skipped", key)
            return None
        name = normalise_filename(filename)
        try:
            nbytes = int(_num(size, "size")) if size not in (None, "") else -1
        except _EntryError:
            self.report.add("image", f"size is not a number: {size!r}; using -1", name)
            nbytes = -1
        if name in self.images:
            self.report.add(
                "image", "file name appears in more than one entry; regions merged", name
            )
            return self.images[name]
        record = ImageRecord(filename=name, size=nbytes)
        self.images[name] = record
        return record

    def file_attributes(self, record: ImageRecord, attrs: Any) -> None:
        if attrs in (None, [], ""):
            return
        if not isinstance(attrs, dict):
            self.report.add("image", "file_attributes is not an object; ignored", record.filename)
            return
        attrs, dropped = shallow_attributes(dict(attrs), "file")
        for message in dropped:
            self.report.add("changed", message, record.filename)
        if NO_ANOMALY_ATTRIBUTE in attrs:
            record.no_anomaly = _truthy(attrs.pop(NO_ANOMALY_ATTRIBUTE))
        if REVIEWED_ATTRIBUTE in attrs:
            record.reviewed = _truthy(attrs.pop(REVIEWED_ATTRIBUTE))
        record.file_attributes.update(attrs)

    # ---- regions

    def add_region(
        self,
        record: ImageRecord | None,
        index: Any,
        shape: str,
        points: np.ndarray | None,
        attributes: Any,
        in_range: bool = False,
        raw: Any = None,
    ) -> None:
        """Count a region found in the file and import it if it has a polygon (``in_range``:
        its coordinates are known to be finite and in range; ``raw``: the region as the
        file held it, kept in :attr:`~.model.ImageRecord.unread` if it is not imported)."""
        if record is None:
            return
        image = record.filename
        if points is None:
            return
        if not in_range and not geometry.coordinates_in_range(points):
            limit = geometry.MAX_COORDINATE
            self.report.add("skipped", f"coordinates beyond +-{limit:g} px or not finite",
                            image, index)  # fmt: skip
            return
        if attributes in (None, [], ""):
            attributes = {}
        if not isinstance(attributes, dict):
            self.report.add("skipped", "region_attributes is not an object", image, index)
            return
        label, class_attr, rest, score, source, unlabelled = self.split_attributes(
            attributes, image, index
        )

        def note(kind: str, message: str) -> None:
            self.report.add(kind, message, image, index)

        # polygons are checked together in finish(), much faster than one by one
        fields = (label, rest, score, source, shape, class_attr, unlabelled, str(index))
        self.pending.append((record, points, note, fields, raw))

    def finish(self) -> None:
        """Validate the pending polygons in one batch and attach the regions, in file order."""
        pending, self.pending = self.pending, []
        cleaned = geometry.clean_polygons([p[1] for p in pending], [p[2] for p in pending])
        for (record, _, _, fields, raw), parts in zip(pending, cleaned, strict=True):
            if not parts:
                if raw is not None:
                    record.unread.append(raw)
                continue
            label, rest, score, source, shape, class_attr, unlabelled, index = fields
            if isinstance(label, tuple):  # a checkbox value: class_attr is its attribute
                label = checkbox_label(label, self.options_of(str(class_attr)))
            self.report.regions_imported += 1
            origin = (self.report.file, index)
            for part in parts:
                record.regions.append(Region(part, label, dict(rest), score, source, shape,
                                             class_attr, unlabelled, origin))  # fmt: skip

    def split_attributes(
        self, attrs: dict[str, Any], image: str, index: Any
    ) -> tuple[str | tuple[str, ...], str | None, dict[str, Any], float | None, str, str | None]:
        """Take the class, score and source out of region attributes; the last item is
        the region's :attr:`~.model.Region.unlabelled`. The class of a checkbox value is
        the ids ticked, made text by :meth:`finish` (:func:`checkbox_label`)."""
        rest, dropped = shallow_attributes(dict(attrs), "region")
        for message in dropped:
            self.report.add("changed", message, image, index)
        score: float | None = None
        if "score" in rest:
            try:
                score = _num(rest["score"], "score")
                del rest["score"]
            except _EntryError as exc:
                self.report.add("class", f"{exc}; kept as an attribute", image, index)
        source = "human"
        if "source" in rest:
            if rest["source"] in SOURCES:
                source = rest.pop("source")
            else:
                self.report.add(
                    "class",
                    f"unknown source {rest['source']!r}; kept as an attribute",
                    image,
                    index,
                )
        key = self.class_key(rest)
        if key is None:
            self.unlabelled += 1
            self.unlabelled_with.update(k for k, v in rest.items() if isinstance(v, (str, dict)))
            return FALLBACK_CLASS, None, rest, score, source, ""
        value = rest.pop(key)
        if isinstance(value, dict):
            self.checkboxes.setdefault(key, {}).update(dict.fromkeys(map(str, value)))
            ticked = (str(k) for k, v in value.items() if v)
            self.ticked.setdefault(key, {}).update(dict.fromkeys(ticked))
        label: str | tuple[str, ...] = _attr_text(value)
        unlabelled = None
        if label and isinstance(value, dict):
            # made text in finish(), once every option id of the file is known
            label = tuple(str(k) for k, v in value.items() if v)
        if not label:
            self.report.add(
                "class", f"empty class in attribute {key!r}: shown as {FALLBACK_CLASS!r}, "
                "written back empty", image, index,
            )  # fmt: skip
            label = FALLBACK_CLASS
            unlabelled = json.dumps(value, ensure_ascii=False)
        self.class_sources[key] = self.class_sources.get(key, 0) + 1
        return label, key, rest, score, source, unlabelled

    def options_of(self, key: str) -> set[str]:
        """The option ids of the checkbox attribute ``key`` (what the definition kept with
        the dataset lists): those it is defined with and those its values tick that it does
        not define (:meth:`undefined_ticks`), else every id its values hold in the file."""
        if key in self.defined:
            return self.defined[key] | set(self.ticked.get(key, {}))
        return set(self.checkboxes.get(key, {}))

    def undefined_ticks(self) -> dict[str, list[str]]:
        """The ids ticked in values of each attribute defined as a checkbox that are not
        among its options (an option deleted in VIA while regions still tick it, a file
        written by a script), in the order first seen: :func:`_undefined_options` adds
        them, so that they are ticked again on export."""
        out = {}
        for key, defined in self.defined.items():
            missing = [i for i in self.ticked.get(key, {}) if i not in defined]
            if missing:
                out[key] = missing
        return out

    def class_key(self, attrs: Mapping[str, Any]) -> str | None:
        wanted = self.options.class_attribute
        if wanted is not None:
            return wanted if wanted in attrs else None
        for name in CLASS_ATTRIBUTE_CANDIDATES:
            if name in attrs:
                return name
        lowered = {k.lower(): k for k in attrs}
        for name in CLASS_ATTRIBUTE_CANDIDATES:
            if name in lowered:
                return lowered[name]
        if len(attrs) == 1:
            return next(iter(attrs))
        return None

    # ---- shapes

    def shape_points(self, sa: Any, image: str | None, index: Any) -> tuple[str, np.ndarray | None]:
        """Polygon vertices (row, col) of VIA 1/2 ``shape_attributes``."""
        report = self.report
        if not isinstance(sa, dict):
            report.shapes["missing"] += 1
            report.add("skipped", "shape_attributes missing or not an object", image, index)
            return "missing", None
        name = sa.get("name")
        shape = name if isinstance(name, str) else "missing"
        report.shapes[shape] += 1
        try:
            return shape, self._points(shape, sa)
        except _EntryError as exc:
            report.add("skipped", f"{shape}: {exc}", image, index)
        except KeyError as exc:
            report.add("skipped", f"{shape}: field {exc.args[0]!r} missing", image, index)
        return shape, None

    def _points(self, shape: str, sa: dict[str, Any]) -> np.ndarray | None:
        if shape in ("polygon", "polyline"):
            return self._path(shape, _vertices(sa["all_points_x"], sa["all_points_y"]))
        if shape == "rect":
            x, y = _num(sa["x"], "x"), _num(sa["y"], "y")
            w, h = _num(sa["width"], "width"), _num(sa["height"], "height")
            return geometry.rect_polygon(y, x, h, w)
        if shape == "circle":
            return self._round(
                shape, _num(sa["cy"], "cy"), _num(sa["cx"], "cx"), _num(sa["r"], "r")
            )
        if shape == "ellipse":
            theta = _num(sa.get("theta", 0.0), "theta")
            return self._round(
                shape,
                _num(sa["cy"], "cy"),
                _num(sa["cx"], "cx"),
                _num(sa["rx"], "rx"),
                _num(sa["ry"], "ry"),
                theta,
            )
        if shape == "point":
            return self._point(_num(sa["cy"], "cy"), _num(sa["cx"], "cx"))
        raise _EntryError("unknown shape")

    def _path(self, shape: str, pts: np.ndarray) -> np.ndarray:
        """Polygon from polygon/polyline vertices (row, col)."""
        if shape == "polyline":
            if len(pts) < 2:
                raise _EntryError(f"polyline with {len(pts)} vertex")
            pts = geometry.drop_repeats(pts)
            if len(pts) < 2:
                raise _EntryError("polyline of one repeated vertex")
            self._converted(shape, f"buffered to {self.options.polyline_width:g} px wide")
            return geometry.polyline_polygon(pts, self.options.polyline_width)
        if len(pts) >= 4 and pts[0, 0] == pts[-1, 0] and pts[0, 1] == pts[-1, 1]:
            self.report.add("closed", "closing vertex removed", *self._where)
            pts = pts[:-1]
        return pts

    def _round(
        self,
        shape: str,
        row: float,
        col: float,
        r1: float,
        r2: float | None = None,
        theta: float = 0.0,
    ) -> np.ndarray:
        """Circle (``r2`` None) or ellipse with x radius ``r1`` and y radius ``r2``."""
        if max(abs(row), abs(col), r1, r2 or 0.0) > geometry.MAX_COORDINATE:
            raise _EntryError(f"centre or radius beyond {geometry.MAX_COORDINATE:g} px")
        if r2 is None:
            if r1 <= 0:
                raise _EntryError(f"radius {r1:g} is not positive")
            self._converted(shape, "converted to a polygon")
            return geometry.circle_polygon(row, col, r1)
        if r1 <= 0 or r2 <= 0:
            raise _EntryError(f"radii {r1:g}, {r2:g} are not positive")
        self._converted(shape, "converted to a polygon")
        return geometry.ellipse_polygon(row, col, r2, r1, theta)

    def _point(self, row: float, col: float) -> np.ndarray | None:
        radius = self.options.point_radius
        if radius is None:
            self.report.add(
                "skipped", "point skipped (import points as discs to keep them)", *self._where
            )
            return None
        self._converted("point", f"imported as a disc of radius {radius:g} px")
        return geometry.circle_polygon(row, col, radius)

    def _converted(self, shape: str, how: str) -> None:
        self.report.add("converted", f"{shape} {how}", *self._where)

    # Location of the region being parsed, for notes from the shape helpers.
    _where: tuple[str | None, Any] = (None, None)

    def region_v12(self, record: ImageRecord | None, index: Any, entry: Any) -> None:
        image = record.filename if record else None
        self.report.regions_found += 1
        if not isinstance(entry, dict):
            self.report.shapes["missing"] += 1
            self.report.add("skipped", "region is not an object", image, index)
            if record is not None:
                record.unread.append(entry)
            return
        self._where = (image, index)
        shape, points = self.shape_points(entry.get("shape_attributes"), image, index)
        queued = len(self.pending)
        # a polygon's vertices were checked as they were read (_vertices)
        self.add_region(record, index, shape, points, entry.get("region_attributes", {}),
                        in_range=shape == "polygon", raw=entry)  # fmt: skip
        if record is not None and len(self.pending) == queued:
            record.unread.append(entry)  # not imported: kept as it was, to be written back

    def dataset(self) -> Dataset:
        self.finish()
        unread = sum(len(im.unread) for im in self.images.values())
        if unread:
            are = "is kept as it is" if unread == 1 else "are kept as they are"
            self.report.add("note", f"{counted(unread, 'region')} not imported (see "
                            f"'skipped') {are}: saved with the dataset as VIA, left out "
                            "of other formats")  # fmt: skip
        if self.unlabelled:
            have = "has" if self.unlabelled == 1 else "have"
            wanted = self.options.class_attribute
            looked = repr(wanted) if wanted else ", ".join(CLASS_ATTRIBUTE_CANDIDATES)
            text = (f"{counted(self.unlabelled, 'region')} {have} no class attribute "
                    f"({looked}): shown as {FALLBACK_CLASS!r}, written back without "
                    "one")  # fmt: skip
            if self.unlabelled_with:
                names = ", ".join(repr(n) for n, _ in self.unlabelled_with.most_common(5))
                text += (f"; their attributes: {names} (choose the one holding the class "
                         "with --class-attribute, or under Classes in Annotate)")  # fmt: skip
            self.report.add("class", text)
        images = list(self.images.values())
        ds = Dataset(images=images)
        if self.class_sources:
            ds.class_attribute = max(self.class_sources, key=self.class_sources.__getitem__)
        elif self.options.class_attribute:
            ds.class_attribute = self.options.class_attribute
        self.report.images = len(images)
        return ds


# --------------------------------------------------------------------------- VIA 1 and 2


def _parse_via12(data: dict[str, Any], parser: _Parser, keys: Iterable[str] | None = None) -> None:
    report = parser.report
    for key in keys if keys is not None else data:
        entry = data[key]
        if not isinstance(entry, dict):
            report.add("image", "image entry is not an object; skipped", str(key))
            continue
        record = parser.image(entry.get("filename"), str(key), entry.get("size", -1))
        if record is not None:
            parser.file_attributes(record, entry.get("file_attributes"))
        regions = entry.get("regions", [])
        if isinstance(regions, dict):
            items: Iterable[tuple[Any, Any]] = regions.items()
        elif isinstance(regions, list):
            items = enumerate(regions)
        else:
            report.add("image", "'regions' is neither a list nor an object; none read", str(key))
            continue
        for index, region in items:
            parser.region_v12(record, index, region)


def _project_order(data: dict[str, Any], report: ImportReport) -> list[str]:
    meta = data["_via_img_metadata"]
    order = data.get("_via_image_id_list")
    if not isinstance(order, list):
        return list(meta)
    keys = []
    seen: set[str] = set()
    for key in order:
        if not isinstance(key, str) or key not in meta:
            report.add(
                "image", "listed in _via_image_id_list but has no metadata; skipped", str(key)
            )
        elif key not in seen:
            seen.add(key)
            keys.append(key)
    keys.extend(k for k in meta if k not in seen)
    return keys


def _clean_definitions(attrs: dict[str, Any], report: ImportReport) -> dict[str, Any]:
    """A copy of VIA 2 ``_via_attributes`` that can be saved and read again: definitions
    that are not objects are dropped, ``options`` and ``default_options`` that are not
    objects emptied, each change reported."""
    out = copy.deepcopy(attrs)
    for scope in ("region", "file"):
        defs = out.get(scope, {})
        if not isinstance(defs, dict):
            report.add("changed", f"_via_attributes.{scope} is not an object: not kept")
            out[scope] = {}
            continue
        for name in list(defs):
            if not isinstance(defs[name], dict):
                report.add("changed", f"_via_attributes.{scope}.{name} is not an attribute "
                           "definition (an object): not kept")  # fmt: skip
                del defs[name]
                continue
            for key in ("options", "default_options"):
                value = defs[name].get(key)
                if value is not None and not isinstance(value, dict):
                    report.add("changed", f"_via_attributes.{scope}.{name}.{key} is "
                               f"{type(value).__name__}, not an object: emptied")  # fmt: skip
                    defs[name][key] = {}
    return out


def _undefined_options(ds: Dataset, parser: _Parser) -> None:
    """Add to the checkbox definitions read the ids that values tick but the definition
    lacks (:meth:`_Parser.undefined_ticks`), each the label of its own option as VIA shows
    it, said once per attribute: else they would be lost, or written back as one junk
    option, on export."""
    region = ds.attribute_definitions.get("region")
    if not isinstance(region, dict):
        return
    for key, ids in parser.undefined_ticks().items():
        definition = region.get(key)
        if not isinstance(definition, dict):
            continue
        options = definition.get("options")
        definition["options"] = options = dict(options) if isinstance(options, dict) else {}
        options.update((i, i) for i in ids)
        named = ", ".join(repr(i) for i in ids)
        parser.report.add("changed", f"checkbox attribute {key!r}: option{'s' * (len(ids) > 1)} "
                          f"{named} ticked but not defined: added")  # fmt: skip


def _checkbox_definitions(ds: Dataset, parser: _Parser) -> None:
    """Define as checkboxes the class attributes that held checkbox objects and have no
    definition (a VIA export has none), so that they are written back as checkboxes."""
    if not parser.checkboxes:
        return
    region = ds.attribute_definitions.setdefault("region", {})
    ds.attribute_definitions.setdefault("file", {})
    if not isinstance(region, dict):
        return
    for key, ids in parser.checkboxes.items():
        if key not in region:
            region[key] = {"type": "checkbox", "description": "",
                           "options": dict.fromkeys(ids, ""), "default_options": {}}  # fmt: skip


def _project_classes(attrs: Any, class_attribute: str) -> list[str]:
    """Class option ids of a VIA 2 dropdown/radio/checkbox class attribute definition."""
    try:
        options = attrs["region"][class_attribute]["options"]
    except (KeyError, TypeError):
        return []
    return [str(k) for k in options] if isinstance(options, dict) else []


# --------------------------------------------------------------------------- VIA 3
