"""Shapes to polygons, polygon repair and clipping, rasterisation.

All functions take and return ``(row, col)`` float arrays in continuous pixel
coordinates (see :mod:`napari_bioanomaly.core.model`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box
from shapely.validation import make_valid

from .text import counted

#: Called with ``(issue_kind, message)`` when a polygon is changed.
Note = Callable[[str, str], None]


#: Parts left by repairing a self-intersecting polygon that are smaller than this (px²,
#: and than 1% of the largest part) are slivers, dropped and reported.
SLIVER_AREA = 1.0
#: Coordinates beyond this (pixels, either sign) are refused on import: no image is that
#: large, and products of such numbers overflow to infinity in area and clipping code.
MAX_COORDINATE = 1e7


def _noop(kind: str, message: str) -> None:
    return None


def coordinates_in_range(points: np.ndarray) -> bool:
    """Whether every coordinate is finite and within :data:`MAX_COORDINATE`."""
    points = np.asarray(points, dtype=np.float64)
    # one reduction: the largest magnitude is NaN (a NaN anywhere) or inf, or a number
    return points.size == 0 or bool(np.abs(points).max() <= MAX_COORDINATE)


def _n_vertices(radius: float) -> int:
    """Vertices for a circle of ``radius`` px: about one per 2 px of arc, 16 to 128."""
    return int(min(128, max(16, math.ceil(math.pi * radius))))


def rect_polygon(row: float, col: float, height: float, width: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle whose top-left corner is ``(row, col)``."""
    r0, r1 = sorted((row, row + height))
    c0, c1 = sorted((col, col + width))
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=np.float64)


def ellipse_polygon(
    row: float, col: float, r_radius: float, c_radius: float, theta: float = 0.0
) -> np.ndarray:
    """Vertices of an ellipse.

    ``c_radius`` lies along the column (x) axis and ``r_radius`` along the row (y)
    axis before rotation; ``theta`` rotates by that many radians from +x towards
    +y, i.e. clockwise on screen, as VIA (HTML canvas ``ellipse``) draws it.
    """
    n = _n_vertices(max(abs(r_radius), abs(c_radius)))
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = c_radius * np.cos(t)
    y = r_radius * np.sin(t)
    cos, sin = math.cos(theta), math.sin(theta)
    cols = col + x * cos - y * sin
    rows = row + x * sin + y * cos
    return np.column_stack([rows, cols])


def circle_polygon(row: float, col: float, radius: float) -> np.ndarray:
    """Vertices of a circle."""
    return ellipse_polygon(row, col, radius, radius)


def circle_through(points: np.ndarray) -> tuple[float, float, float]:
    """Circle ``(row, col, radius)`` through the first three points (circumcircle).

    Falls back to the smallest circle around the points' bounding box when the
    points are collinear or fewer than three.
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) >= 3:
        (ay, ax), (by, bx), (cy, cx) = pts[:3]
        d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        if abs(d) > 1e-9:
            ux = (
                (ax**2 + ay**2) * (by - cy)
                + (bx**2 + by**2) * (cy - ay)
                + (cx**2 + cy**2) * (ay - by)
            ) / d
            uy = (
                (ax**2 + ay**2) * (cx - bx)
                + (bx**2 + by**2) * (ax - cx)
                + (cx**2 + cy**2) * (bx - ax)
            ) / d
            return float(uy), float(ux), float(math.hypot(ax - ux, ay - uy))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = (lo + hi) / 2.0
    return float(center[0]), float(center[1]), float(np.linalg.norm(hi - lo) / 2.0)


def polyline_polygon(points: np.ndarray, width: float) -> np.ndarray:
    """A thin polygon around an open path (a scratch or a hair), ``width`` px wide."""
    line = LineString(np.asarray(points, dtype=np.float64))
    shape = line.buffer(width / 2.0, quad_segs=2, cap_style="round", join_style="round")
    return _exterior(shape)


def _exterior(poly: Polygon) -> np.ndarray:
    """Exterior ring of a polygon without its closing vertex."""
    return np.asarray(poly.exterior.coords, dtype=np.float64)[:-1]


def _polygon_parts(geom: shapely.Geometry) -> list[Polygon]:
    """Polygons with non-zero area inside any (multi/collection) geometry."""
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    parts: list[Polygon] = []
    for g in getattr(geom, "geoms", ()):
        parts.extend(_polygon_parts(g))
    return parts


def drop_repeats(points: np.ndarray) -> np.ndarray:
    """Remove consecutive duplicate vertices, including a closing repeat of the first."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 2:
        return pts
    same = (pts[1:] == pts[:-1]).all(axis=1)
    if same.any():
        pts = pts[np.concatenate(([True], ~same))]
    end = len(pts)
    while end > 1 and (pts[end - 1] == pts[0]).all():
        end -= 1
    return pts[:end] if end < len(pts) else pts


def drop_repeats_many(rings: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`drop_repeats` for many rings in a few vectorised numpy calls."""
    if not rings:
        return []
    lengths = np.array([len(r) for r in rings])
    if (lengths < 2).any():
        return [drop_repeats(r) for r in rings]
    coords = np.concatenate(rings).astype(np.float64, copy=False)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    drop = np.zeros(len(coords), dtype=bool)
    drop[1:] = (coords[1:] == coords[:-1]).all(axis=1)
    drop[starts] = False
    closing = (coords[ends - 1] == coords[starts]).all(axis=1)
    drop[(ends - 1)[closing]] = True
    kept = np.add.reduceat(~drop, starts)
    parts = np.split(coords[~drop], np.cumsum(kept)[:-1])
    # a ring that still closes on itself (several repeats at its end) takes the slow path
    return [drop_repeats(p) if len(p) > 1 and (p[-1] == p[0]).all() else p for p in parts]


def clean_polygon(
    points: np.ndarray,
    image_shape: Sequence[int] | None = None,
    note: Note = _noop,
) -> list[np.ndarray]:
    """Make a list of valid simple polygons out of possibly broken vertices.

    How it works: repeated vertices are dropped; fewer than three distinct
    vertices or zero area gives no polygon. An invalid ring (self-intersecting,
    bow-tie) is repaired with shapely's ``make_valid``, which can split it into
    several parts; holes are dropped (VIA and COCO polygons have none). When
    ``image_shape`` is given the result is clipped to ``[0, rows] x [0, cols]``.
    Every change is told to ``note``.

    Returns
    -------
    list of ndarray
        Zero, one or several ``(N, 2)`` vertex arrays.
    """
    pts = drop_repeats(points)
    if len(pts) < 3:
        note("skipped", f"degenerate polygon: {len(pts)} distinct vertices")
        return []
    poly = shapely.polygons(pts)
    if shapely.is_valid(poly):
        if polygon_area(pts) <= 0:
            note("skipped", "degenerate polygon: zero area")
            return []
        parts = [poly]
    else:
        reason = shapely.is_valid_reason(poly)
        try:
            parts = _polygon_parts(make_valid(poly))
        except shapely.errors.GEOSException:
            # GEOS gives up on some near-degenerate rings (coordinates 1e-79 apart): the
            # zero-width buffer repairs them another way, or nothing does
            try:
                parts = _polygon_parts(poly.buffer(0))
            except shapely.errors.GEOSException:
                parts = []
        if not parts:
            note("skipped", f"invalid polygon with no area left after repair ({reason})")
            return []
        note("repaired", f"invalid polygon repaired ({reason})")
        # the repair of an edge that runs back along itself leaves slivers of almost no
        # area: they are no regions of their own
        largest = max(p.area for p in parts)
        slivers = [p for p in parts if p.area < min(SLIVER_AREA, 0.01 * largest)]
        if slivers and len(slivers) < len(parts):
            parts = [p for p in parts if p not in slivers]
            total = sum(p.area for p in slivers)
            note("repaired", f"{counted(len(slivers), 'sliver')} of the repair ({total:.3g} px² "
                 "in all) dropped")  # fmt: skip
    if image_shape is not None:
        rows, cols = image_shape[:2]
        minr, minc, maxr, maxc = shapely.total_bounds([p for p in parts])
        if minr < 0 or minc < 0 or maxr > rows or maxc > cols:
            frame = box(0, 0, rows, cols)
            clipped: list[Polygon] = []
            for p in parts:
                clipped.extend(_polygon_parts(p.intersection(frame)))
            if not clipped:
                note("skipped", f"polygon lies outside the {rows}x{cols} image")
                return []
            note("clipped", f"vertices outside the {rows}x{cols} image clipped")
            parts = clipped
    if any(p.interiors for p in parts):
        note("repaired", "polygon holes dropped")
    rings = [_exterior(p) for p in parts]
    rings = [r for r in rings if polygon_area(r) > 0]  # shapely and float shoelace can disagree
    if not rings:
        note("skipped", "degenerate polygon: zero area")
        return []
    parts = rings
    if len(parts) > 1:
        note("split", f"split into {len(parts)} polygons")
    return parts


def clean_polygons(
    rings: list[np.ndarray], notes: list[Note] | None = None
) -> list[list[np.ndarray]]:
    """:func:`clean_polygon` for many polygons at once (no clipping).

    How it works: all rings are built and checked in three vectorised shapely
    calls; only the invalid or degenerate ones go through :func:`clean_polygon`.
    A file of 20,000 valid polygons is checked several times faster this way.
    """
    notes = notes if notes is not None else [_noop] * len(rings)
    pts = drop_repeats_many(rings)
    out: list[list[np.ndarray] | None] = [None] * len(rings)
    fast = [i for i, p in enumerate(pts) if len(p) >= 3]
    if fast:
        lengths = np.array([len(pts[i]) for i in fast])
        coords = np.concatenate([pts[i] for i in fast])
        ring_id = np.repeat(np.arange(len(fast)), lengths)
        polys = shapely.polygons(shapely.linearrings(coords, indices=ring_id))
        good = shapely.is_valid(polys) & (_areas(coords, lengths) > 0)
        for i, ok in zip(fast, good, strict=True):
            if ok:
                out[i] = [pts[i]]
    return [
        done if done is not None else clean_polygon(pts[i], None, notes[i])
        for i, done in enumerate(out)
    ]


def _areas(coords: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Shoelace areas of rings stored one after another (vectorised :func:`polygon_area`)."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rel = coords - np.repeat(coords[starts], lengths, axis=0)
    nxt = np.arange(1, len(coords) + 1)
    nxt[ends - 1] = starts
    cross = rel[:, 0] * rel[nxt, 1] - rel[:, 1] * rel[nxt, 0]
    return np.abs(np.add.reduceat(cross, starts)) / 2.0


def polygon_area(points: np.ndarray) -> float:
    """Area of a simple polygon (shoelace, relative to the first vertex for precision)."""
    return float(_areas(np.asarray(points, dtype=np.float64), np.array([len(points)]))[0])


def rasterise_window(
    points: np.ndarray, shape: Sequence[int] | None = None
) -> tuple[int, int, np.ndarray]:
    """Pixels of a polygon inside its bounding box: ``(r0, c0, mask)``.

    How it works (a vectorised scanline fill): for the centre ``r + 0.5`` of each
    row of the box, the edges that cross it (half-open in y, so a vertex is
    counted once) give x-crossings; each crossing toggles the columns whose
    centre lies to its right, and a cumulative sum's parity (even-odd rule) says
    which centres are inside. About 20x faster than a point-in-polygon test per
    pixel. With ``shape``, the box is clipped to the image.
    """
    pts = np.asarray(points, dtype=np.float64)
    r0, c0 = np.floor(pts.min(axis=0)).astype(int)
    r1, c1 = np.ceil(pts.max(axis=0)).astype(int)
    if shape is not None:
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, int(shape[0])), min(c1, int(shape[1]))
    h, w = max(r1 - r0, 0), max(c1 - c0, 0)
    if not h or not w:
        return int(r0), int(c0), np.zeros((h, w), dtype=bool)
    y0, x0 = pts[:, 0] - r0, pts[:, 1] - c0
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    yc = np.arange(h, dtype=np.float64)[:, None] + 0.5
    cross = ((y0 <= yc) & (yc < y1)) | ((y1 <= yc) & (yc < y0))
    rows, edges = np.nonzero(cross)
    t = (yc[rows, 0] - y0[edges]) / (y1[edges] - y0[edges])
    x = x0[edges] + t * (x1[edges] - x0[edges])
    cols = np.clip(np.floor(x - 0.5).astype(np.int64) + 1, 0, w)
    toggles = np.bincount(rows * (w + 1) + cols, minlength=h * (w + 1)).reshape(h, w + 1)
    inside = (np.cumsum(toggles[:, :w], axis=1) & 1).astype(bool)
    return int(r0), int(c0), inside


def _next_vertex(lengths: np.ndarray) -> np.ndarray:
    """For rings stored one after another, the index of each vertex's successor."""
    nxt = np.arange(1, int(lengths.sum()) + 1)
    ends = np.cumsum(lengths)
    nxt[ends - 1] = ends - lengths
    return nxt


def rasterise_many(
    polygons: Sequence[np.ndarray], shape: Sequence[int] | None = None
) -> list[tuple[int, int, np.ndarray]]:
    """:func:`rasterise_window` for many polygons in one vectorised pass.

    How it works: the rows of all bounding boxes are laid end to end; every
    (row, edge of the same polygon) pair is tested at once, crossings toggle a
    flat buffer that holds all windows, and one cumulative sum (restarted at
    each row) gives the even-odd parity of every pixel centre.
    """
    if not polygons:
        return []
    pts = [np.asarray(p, dtype=np.float64) for p in polygons]
    lo = np.floor(np.array([p.min(axis=0) for p in pts])).astype(np.int64)
    hi = np.ceil(np.array([p.max(axis=0) for p in pts])).astype(np.int64)
    if shape is not None:
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, np.array(shape[:2], dtype=np.int64))
    hw = np.maximum(hi - lo, 0)
    h, w = hw[:, 0], hw[:, 1]
    n_edges = np.array([len(p) for p in pts])
    # edges, shifted into their window's coordinates
    p0 = np.concatenate(pts) - np.repeat(lo, n_edges, axis=0)
    p1 = p0[_next_vertex(n_edges)]
    edge_poly = np.repeat(np.arange(len(pts)), n_edges)
    # rows whose centre r + 0.5 an edge crosses: ymin <= r + 0.5 < ymax (half-open, so
    # a vertex counts once), clipped to the window: the classic edge table
    ymin, ymax = np.minimum(p0[:, 0], p1[:, 0]), np.maximum(p0[:, 0], p1[:, 0])
    r_start = np.maximum(np.ceil(ymin - 0.5), 0).astype(np.int64)
    r_end = np.minimum(np.ceil(ymax - 0.5).astype(np.int64), h[edge_poly])
    k = np.maximum(r_end - r_start, 0)
    e_idx = np.repeat(np.arange(len(edge_poly)), k)
    row_in_win = np.repeat(r_start, k) + np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    yc = row_in_win + 0.5
    y0, x0, y1, x1 = p0[e_idx, 0], p0[e_idx, 1], p1[e_idx, 0], p1[e_idx, 1]
    x = x0 + (yc - y0) / (y1 - y0) * (x1 - x0)
    poly = edge_poly[e_idx]
    cols = np.clip(np.floor(x - 0.5).astype(np.int64) + 1, 0, w[poly])
    sizes = h * (w + 1)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = offsets[poly] + row_in_win * (w[poly] + 1) + cols
    toggles = np.bincount(flat, minlength=int(sizes.sum()))
    parity = np.cumsum(toggles)
    out = []
    for i in range(len(pts)):
        if not h[i] or not w[i]:
            out.append((int(lo[i, 0]), int(lo[i, 1]), np.zeros((h[i], w[i]), dtype=bool)))
            continue
        block = parity[offsets[i] : offsets[i] + sizes[i]].reshape(h[i], w[i] + 1)
        before = np.concatenate([[parity[offsets[i] - 1] if offsets[i] else 0], block[:-1, -1]])
        inside = ((block[:, : w[i]] - before[:, None]) & 1).astype(bool)
        out.append((int(lo[i, 0]), int(lo[i, 1]), inside))
    return out


def rasterise_spans(
    polygons: Sequence[np.ndarray], shape: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of many polygons as row runs ``(polygon, row, start, end)``, end exclusive.

    The same pixels as :func:`rasterise_window` (centres inside, even-odd rule), without
    any dense array: the crossings of each row (an edge table, as there) are sorted,
    and consecutive pairs are the runs. With ``shape``, runs are clipped to the image.
    """
    empty = np.zeros(0, dtype=np.int64)
    if not polygons:
        return empty, empty, empty, empty
    pts = [np.asarray(p, dtype=np.float64) for p in polygons]
    n_edges = np.array([len(p) for p in pts])
    p0 = np.concatenate(pts)
    p1 = p0[_next_vertex(n_edges)]
    edge_poly = np.repeat(np.arange(len(pts)), n_edges)
    ymin, ymax = np.minimum(p0[:, 0], p1[:, 0]), np.maximum(p0[:, 0], p1[:, 0])
    r_start = np.ceil(ymin - 0.5).astype(np.int64)
    r_end = np.ceil(ymax - 0.5).astype(np.int64)
    k = np.maximum(r_end - r_start, 0)
    e_idx = np.repeat(np.arange(len(edge_poly)), k)
    rows = np.repeat(r_start, k) + np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    yc = rows + 0.5
    y0, x0, y1, x1 = p0[e_idx, 0], p0[e_idx, 1], p1[e_idx, 0], p1[e_idx, 1]
    cols = np.floor(x0 + (yc - y0) / (y1 - y0) * (x1 - x0) - 0.5).astype(np.int64) + 1
    poly = edge_poly[e_idx]
    if not len(rows):
        return empty, empty, empty, empty
    # one integer key per crossing, ordered by (polygon, row, column): a single argsort
    r_min, c_min = int(rows.min()), int(cols.min())
    n_rows, n_cols = int(rows.max()) - r_min + 1, int(cols.max()) - c_min + 1
    order = np.argsort((poly * n_rows + (rows - r_min)) * n_cols + (cols - c_min), kind="stable")
    poly, rows, cols = poly[order][0::2], rows[order][0::2], (cols[order][0::2], cols[order][1::2])
    start, end = cols
    if shape is not None:
        start, end = np.clip(start, 0, int(shape[1])), np.clip(end, 0, int(shape[1]))
        keep = (rows >= 0) & (rows < int(shape[0]))
        poly, rows, start, end = poly[keep], rows[keep], start[keep], end[keep]
    keep = end > start
    return poly[keep], rows[keep], start[keep], end[keep]


def polygon_to_mask(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Boolean mask of the pixels whose centre lies inside the polygon.

    Pixel ``(r, c)`` has its centre at ``(r + 0.5, c + 0.5)``, so a square from
    ``(0, 0)`` to ``(2, 2)`` covers exactly the four pixels of the top-left corner.
    """
    mask = np.zeros(tuple(shape[:2]), dtype=bool)
    r0, c0, window = rasterise_window(points, shape)
    h, w = window.shape
    if h and w:
        mask[r0 : r0 + h, c0 : c0 + w] = window
    return mask
