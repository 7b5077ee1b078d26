"""Reading VIA 3 projects (files, views, metadata; video segments are not regions), with
the parser of :mod:`.via_parse`."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import geometry
from .jsonio import object_at
from .model import ImageRecord
from .via_parse import _EntryError, _num, _nums, _Parser

_V3_SHAPES = {
    1: "point",
    2: "rect",
    3: "circle",
    4: "ellipse",
    5: "line",
    6: "polyline",
    7: "polygon",
    8: "extreme_rect",
    9: "extreme_circle",
}


def _parse_via3(data: dict[str, Any], parser: _Parser) -> None:
    report = parser.report
    project = data.get("project", {})
    report.version = str(project.get("data_format_version", "")) or None
    files = object_at(data, "file")
    views = object_at(data, "view")
    attrs = object_at(data, "attribute")
    metadata = object_at(data, "metadata")

    def attr_name(aid: Any) -> str:
        a = attrs.get(str(aid))
        return str(a.get("aname", aid)) if isinstance(a, dict) else str(aid)

    def attr_value(aid: Any, value: Any) -> Any:
        """Option ids become option labels (VIA 3 ids are auto numbers)."""
        a = attrs.get(str(aid))
        options = a.get("options") if isinstance(a, dict) else None
        if isinstance(options, dict) and isinstance(value, str):
            parts = [options.get(v, v) for v in value.split(",")] if value else []
            return ",".join(str(p) for p in parts)
        return value

    def named(av: Any) -> dict[str, Any]:
        if not isinstance(av, dict):
            return {}
        return {attr_name(k): attr_value(k, v) for k, v in av.items()}

    vid_list = project.get("vid_list")
    vids = [str(v) for v in vid_list] if isinstance(vid_list, list) else list(views)
    records: dict[str, ImageRecord | None] = {}
    names: dict[str, str] = {}  # what each view shows, for messages (a video's file name)
    for vid in vids:
        view = views.get(vid)
        fids = view.get("fid_list") if isinstance(view, dict) else None
        if not isinstance(fids, list) or not fids:
            what = "view has no file" if not fids else f"fid_list is not a list ({fids!r:.40})"
            report.add("image", what, f"view {vid}")
            records[vid] = None
            continue
        if not isinstance(fids[0], str | int):
            report.add("image", f"file id {fids[0]!r:.40} is not an id", f"view {vid}")
            records[vid] = None
            continue
        f = files.get(str(fids[0]))
        if not isinstance(f, dict):
            report.add("image", f"file {fids[0]!r} of the view is not defined", f"view {vid}")
            records[vid] = None
            continue
        names[vid] = str(f.get("fname"))
        if f.get("type", 2) not in (2, "2"):
            report.add("image", "file is not an image (video/audio); skipped", str(f.get("fname")))
            records[vid] = None
            continue
        records[vid] = parser.image(f.get("fname"), f"view {vid}")

    for mid, entry in metadata.items():
        if not isinstance(entry, dict):
            report.regions_found += 1
            report.shapes["missing"] += 1
            report.add("skipped", "metadata entry is not an object", None, mid)
            continue
        vid = str(entry.get("vid"))
        record = records.get(vid)
        image = record.filename if record else names.get(vid, f"view {vid}")
        z, xy = entry.get("z") or [], entry.get("xy") or []
        if not z and not xy:
            if record is not None:
                parser.file_attributes(record, named(entry.get("av")))
            continue
        if z:  # a time segment of a video or audio file: no image region at all
            report.shapes["temporal"] += 1
            report.add("skipped", "temporal segment (z = time), not an image region", image, mid)
            continue
        report.regions_found += 1
        if vid not in records:
            report.shapes["missing"] += 1
            report.add("skipped", f"region refers to unknown view {vid!r}", image, mid)
            continue
        parser._where = (image, mid)
        shape, points = _v3_points(xy, parser, image, mid)
        parser.add_region(record, mid, shape, points, named(entry.get("av")))


def _v3_points(xy: Any, parser: _Parser, image: str, index: Any) -> tuple[str, np.ndarray | None]:
    report = parser.report
    if not isinstance(xy, list) or not xy:
        report.shapes["missing"] += 1
        report.add("skipped", "xy is not a list", image, index)
        return "missing", None
    try:
        sid = int(_num(xy[0], "shape id"))
    except _EntryError as exc:
        report.shapes["missing"] += 1
        report.add("skipped", str(exc), image, index)
        return "missing", None
    shape = _V3_SHAPES.get(sid, f"shape-{sid}")
    report.shapes[shape] += 1
    try:
        v = _nums(xy[1:], "xy")
        need = {1: 2, 2: 4, 3: 3, 4: 4, 5: 4}.get(sid)
        if need is not None and len(v) < need:
            raise _EntryError(f"{len(v)} coordinates, {need} needed")
        if sid not in _V3_SHAPES:
            raise _EntryError("unknown shape")
        if sid == 1:
            return shape, parser._point(v[1], v[0])
        if sid == 2:
            return shape, geometry.rect_polygon(v[1], v[0], v[3], v[2])
        if sid == 3:
            return shape, parser._round(shape, v[1], v[0], v[2])
        if sid == 4:
            return shape, parser._round(shape, v[1], v[0], v[2], v[3])
        if len(v) % 2:
            raise _EntryError(f"odd number of coordinates ({len(v)})")
        pts = np.column_stack([v[1::2], v[0::2]])
        if sid in (5, 6):
            return shape, parser._path("polyline", pts)
        if sid == 7:
            return shape, parser._path("polygon", pts)
        if sid == 8:
            parser._converted(shape, "converted to its bounding rectangle")
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            return shape, geometry.rect_polygon(lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
        row, col, radius = geometry.circle_through(pts)
        return shape, parser._round(shape, row, col, radius)
    except _EntryError as exc:
        report.add("skipped", f"{shape}: {exc}", image, index)
        return shape, None
