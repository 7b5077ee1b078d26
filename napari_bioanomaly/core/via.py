"""VGG Image Annotator (VIA) JSON: read every version users have, write VIA 2.

Read: VIA 1.x exports, VIA 2.x exports and projects, VIA 3.x projects
(``detect_format`` names which). Write: VIA 2.x exports and projects that the
VIA 2 application opens again. x/y become row/col here and nowhere else.
Facts about the format: ``docs/formats.md``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .model import Dataset, FormatError
from .report import ImportReport
from .via3 import _parse_via3
from .via_parse import (
    CLASS_ATTRIBUTE_CANDIDATES,
    NO_ANOMALY_ATTRIBUTE,
    REVIEWED_ATTRIBUTE,
    ImportOptions,
    _checkbox_definitions,
    _clean_definitions,
    _parse_via12,
    _Parser,
    _project_classes,
    _project_order,
    _undefined_options,
    defined_checkboxes,
)
from .via_write import (
    COCO_CATEGORIES,
    IMPORTED_FROM,
    checkbox_classes,
    encode_cached,
    encode_entries,
    export_warnings,
    image_entry,
    rounded_polygons,
    to_via_export,
    to_via_project,
    via_attribute_definitions,
    with_class_attribute,
    with_imported_from,
)

#: The public names of the format, read and written (the rest is private to its modules).
__all__ = [
    "CLASS_ATTRIBUTE_CANDIDATES", "NO_ANOMALY_ATTRIBUTE", "REVIEWED_ATTRIBUTE", "ImportOptions",
    "checkbox_classes", "class_attribute_setting", "coco_categories_setting", "detect_format",
    "encode_cached",
    "encode_entries",
    "export_warnings",
    "image_entry", "imported_from_setting", "read_via", "rounded_polygons", "to_via_export",
    "to_via_project", "via_attribute_definitions", "with_class_attribute", "with_imported_from",
]  # fmt: skip


def _looks_like_via_image(value: Any) -> bool:
    return isinstance(value, dict) and ("filename" in value or "regions" in value)


def detect_format(data: Any) -> str | None:
    """Name the annotation format of parsed JSON, or ``None`` when it is not ours.

    Returns one of ``via1-export``, ``via2-export``, ``via2-project``,
    ``via3-project``, ``coco``.
    """
    if not isinstance(data, dict):
        return None
    if "_via_img_metadata" in data:
        return "via2-project"
    if isinstance(data.get("project"), dict) and "metadata" in data and "file" in data:
        return "via3-project"
    if isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
        return "coco"
    entries = [v for v in data.values() if _looks_like_via_image(v)]
    if not entries:
        return None
    as_object = sum(isinstance(v.get("regions"), dict) for v in entries)
    return "via1-export" if as_object > len(entries) / 2 else "via2-export"


# --------------------------------------------------------------------------- values


# --------------------------------------------------------------------------- public API


def class_attribute_setting(settings: Any) -> str | None:
    """The region attribute a VIA 2 project's settings name as the class attribute
    (``_via_settings.project.class_attribute``, recorded by
    :func:`~.via_write.with_class_attribute` when one is chosen), if any."""
    project = settings.get("project") if isinstance(settings, dict) else None
    name = project.get("class_attribute") if isinstance(project, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def imported_from_setting(settings: Any) -> str | None:
    """The name of the imported file whose edits a VIA 2 project holds (``_via_settings.
    project.imported_from``, see :data:`~.via_write.IMPORTED_FROM`), if it says."""
    project = settings.get("project") if isinstance(settings, dict) else None
    name = project.get(IMPORTED_FROM) if isinstance(project, dict) else None
    return name if isinstance(name, str) and name else None


def coco_categories_setting(settings: Any) -> dict[str, dict[str, Any]]:
    """The COCO categories a VIA 2 project's settings keep (``_via_settings.project.
    coco_categories``, see :data:`~.via_write.COCO_CATEGORIES`): those with a name and
    an id, by name (a COCO export checks the ids)."""
    project = settings.get("project") if isinstance(settings, dict) else None
    kept = project.get(COCO_CATEGORIES) if isinstance(project, dict) else None
    if not isinstance(kept, dict):
        return {}
    return {
        name: dict(cat) for name, cat in kept.items()
        if isinstance(name, str) and name and isinstance(cat, dict)
        and isinstance(cat.get("id"), (int, str)) and not isinstance(cat.get("id"), bool)
    }  # fmt: skip


def read_via(
    data: Any, file: str = "", options: ImportOptions | None = None
) -> tuple[Dataset, ImportReport]:
    """Build a :class:`Dataset` from parsed VIA JSON of any version.

    Malformed entries are reported in the :class:`ImportReport` and skipped;
    only data that is not VIA at all raises.

    Raises
    ------
    FormatError
        When ``data`` is not a VIA file.
    """
    options = options or ImportOptions()
    fmt = detect_format(data)
    if fmt is None or fmt == "coco":
        raise FormatError(f"{file or 'data'}: not a VIA annotation file")
    report = ImportReport(file=file, format=fmt)
    chosen = options.class_attribute
    recorded = class_attribute_setting(data.get("_via_settings"))
    if fmt == "via2-project" and chosen is None and recorded is not None:
        # the class attribute chosen in napari-bioanomaly (see :func:`class_attribute_setting`)
        options = dataclasses.replace(options, class_attribute=recorded)
    parser = _Parser(options, report)
    if fmt == "via3-project":
        _parse_via3(data, parser)
        return parser.dataset(), report
    if fmt == "via2-project":
        meta = data["_via_img_metadata"]
        if not isinstance(meta, dict):
            raise FormatError(f"{file}: _via_img_metadata is not an object")
        version = data.get("_via_data_format_version")
        report.version = str(version) if version is not None else None
        parser.defined = defined_checkboxes(data.get("_via_attributes"))
        _parse_via12(meta, parser, _project_order(data, report))
        ds = parser.dataset()
        attrs = data.get("_via_attributes")
        if isinstance(attrs, dict):
            ds.attribute_definitions = _clean_definitions(attrs, report)
            _undefined_options(ds, parser)
            ds.classes = _project_classes(ds.attribute_definitions, ds.class_attribute)
        elif attrs is not None:
            report.add("changed", "_via_attributes is not an object: not kept")
        if isinstance(data.get("_via_settings"), dict):
            ds.settings = copy.deepcopy(data["_via_settings"])
            ds.categories = coco_categories_setting(ds.settings)
        if chosen is not None and recorded not in (None, chosen):
            # --class-attribute over a file's recorded choice: what is written of the
            # dataset (convert, qc --save) records the one its classes were read from
            ds.settings = with_class_attribute(ds.settings, chosen)
        _checkbox_definitions(ds, parser)
        return ds, report
    _parse_via12(data, parser)
    ds = parser.dataset()
    _checkbox_definitions(ds, parser)
    return ds, report
