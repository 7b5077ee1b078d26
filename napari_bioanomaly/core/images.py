"""Reading microscopy images: TIFF, PNG, JPEG; 8/16-bit; grayscale or RGB."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .model import BioAnomalyError

#: File name suffixes read as images.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class ImageReadError(BioAnomalyError):
    """An image file is missing, truncated, or not an image."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the name ends in one of :data:`IMAGE_SUFFIXES`."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


#: Images whose pixels would take more memory than this are refused before they are read
#: (``BIOANOMALY_MAX_IMAGE_BYTES`` changes it): crop or tile them first.
MAX_IMAGE_BYTES = int(os.environ.get("BIOANOMALY_MAX_IMAGE_BYTES", 4 << 30))

# tifffile reports damaged files on its logger (printed on stderr): our errors say it instead
logging.getLogger("tifffile").setLevel(logging.CRITICAL)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes), not an image")


def _reason(exc: BaseException) -> str:
    """A decoder's error as a short reason (its first line); a codec that is missing keeps
    the advice to install it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, IndexError) or "out of range" in text:
        text = "no image in the file (damaged or not a TIFF)"
    if "imagecodecs" in text:  # "<COMPRESSION.LZW: 5> requires the 'imagecodecs' package",
        # or a codec that the imagecodecs installed lacks
        return f"{text[:160]}; install or upgrade it: pip install -U imagecodecs"
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _check_size(path: Path, rows: int, cols: int, samples: int, itemsize: int) -> None:
    need = rows * cols * max(samples, 1) * max(itemsize, 1)
    if need > MAX_IMAGE_BYTES:
        raise ImageReadError(
            f"{path}: {rows}x{cols} px ({need / 2**30:.1f} GiB in memory) is larger than "
            f"images read at once ({MAX_IMAGE_BYTES / 2**30:.1f} GiB, "
            "BIOANOMALY_MAX_IMAGE_BYTES): crop or tile it first"
        )


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Pixels of an image file: ``(rows, cols)`` or ``(rows, cols, 3|4)``.

    Multi-page TIFFs give their first page. Images of any size are read up to
    :data:`MAX_IMAGE_BYTES` (PIL's decompression-bomb limit does not apply: these
    are the user's own images); larger ones are refused before any pixel is
    decoded. Raises :class:`ImageReadError` naming the file and the reason on any
    failure.
    """
    path = Path(path)
    _check_file(path)
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                _check_size(path, int(page.imagelength), int(page.imagewidth),
                            int(page.samplesperpixel), page.dtype.itemsize)  # fmt: skip
                data = page.asarray()
        else:
            data = _read_pil(path)
    except ImageReadError:
        raise
    except Exception as exc:  # decoders raise anything: ValueError, OSError, struct.error...
        raise ImageReadError(f"{path}: cannot read image ({_reason(exc)})") from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise ImageReadError(
            f"{path}: expected a 2D grayscale or RGB image, got shape {data.shape}"
        )
    return data


def _read_pil(path: Path) -> np.ndarray:
    """PNG, JPEG, BMP through Pillow, which names what is wrong with a damaged file; turned
    as their EXIF orientation says (:func:`_orient`). 16-bit colour or grey+alpha PNGs,
    which Pillow cuts to 8 bits, are decoded by imagecodecs (:func:`_read_png16`)."""
    from PIL import Image

    with _no_pixel_limit(), Image.open(path) as im:
        orientation = _orientation(im)
        depth, kind = _png_depth(path) if im.format == "PNG" else (0, 0)
        if depth == 16 and kind in _PNG16_CHANNELS:
            data = _read_png16(path, im.size[1], im.size[0], kind)
            return _orient(data, orientation)
        bands = len(im.getbands())
        itemsize = 2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1
        _check_size(path, im.size[1], im.size[0], bands, itemsize)
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("1", "LA", "CMYK", "YCbCr"):
            im = im.convert({"1": "L", "LA": "L"}.get(im.mode, "RGB"))
        data = np.asarray(im)
    if data.dtype == np.int32 and data.size and 0 <= data.min() and data.max() < 65536:
        data = data.astype(np.uint16)  # 16-bit PNGs that Pillow opens as 32-bit "I"
    return _orient(data, orientation)


#: Channels of the 16-bit PNG colour types Pillow cuts to 8 bits: grey+alpha, RGB, RGBA.
_PNG16_CHANNELS = {4: 2, 2: 3, 6: 4}


def _png_depth(path: Path) -> tuple[int, int]:
    """Bit depth and colour type of a PNG, from its header (IHDR)."""
    with path.open("rb") as f:
        head = f.read(26)
    return (head[24], head[25]) if len(head) == 26 and head[12:16] == b"IHDR" else (0, 0)


def _read_png16(path: Path, rows: int, cols: int, kind: int) -> np.ndarray:
    """A 16-bit grey+alpha (its grey, as an 8-bit one gives), RGB or RGBA PNG at full depth.

    Pillow reads these as 8 bits (a 12-bit image of 1007 levels came back with 6), so
    they are decoded by imagecodecs; without it they are refused, not cut.
    """
    _check_size(path, rows, cols, _PNG16_CHANNELS[kind], 2)
    try:
        import imagecodecs
    except ImportError:
        raise ImageReadError(
            f"{path}: a 16-bit colour or grey+alpha PNG, which needs the 'imagecodecs' "
            "package to be read at full depth; install it: pip install imagecodecs"
        ) from None
    data = np.asarray(imagecodecs.png_decode(path.read_bytes()))
    return data[..., 0] if kind == 4 else data


#: How each EXIF orientation (2-8) is undone: the image as a viewer shows it (a browser,
#: VIA), as Pillow's ``ImageOps.exif_transpose`` gives it.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orientation(im: Any) -> int:
    """The EXIF orientation of an open Pillow image (1, upright, when it has none).

    Read without decoding a pixel: a JPEG's EXIF comes with its header; a PNG's only when
    its eXIf chunk precedes the pixel data (Pillow's ``getexif`` of a PNG without one
    decodes the whole image to look behind it: 23 ms a header of a 1080 px 16-bit PNG,
    and an image over the size limit decoded before it is refused).
    """
    if im.format not in ("JPEG", "MPO") and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: shown as stored, as browsers do
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _orient(data: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels turned as their EXIF ``orientation`` says, so regions line up with what
    VIA and other viewers show (they honour it)."""
    turn = _ORIENT.get(orientation)
    return data if turn is None else np.ascontiguousarray(turn(data))


class _no_pixel_limit:
    """Lift Pillow's decompression-bomb limit while reading (size is checked by us)."""

    def __enter__(self) -> None:
        from PIL import Image

        self._old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc: object) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = self._old


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(rows, cols)`` of an image, read from its header without decoding pixels."""
    return _header(Path(path), planes=False)[0]


#: How a whole PNG file ends: its IEND chunk (length 0, type, CRC).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: How a whole JPEG file ends: its end-of-image marker.
_JPEG_END = b"\xff\xd9"


def checked_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(rows, cols)`` of an image whose file holds all its pixels, checked without decoding
    them where the format allows: the header read (:func:`image_shape`), then the file's
    end: a TIFF's strips or tiles (first page) lie within the file, a PNG ends with its
    IEND chunk, a JPEG with its end marker. A file cut short (a copy or download
    interrupted) is found so, which a header alone does not show. A PNG or JPEG that ends
    otherwise (data after its end), and any other format, is decoded to be sure.

    On 1080x1080 16-bit images (warm cache, one shared core) the header and end take
    0.1-0.3 ms; decoding takes 20-50 ms (zlib TIFF, PNG; 0.6 ms an uncompressed TIFF): for
    5000 images about a second against 2-4 minutes, so training decodes none up front.
    Raises :class:`ImageReadError` naming the file and what is wrong.
    """
    path = Path(path)
    if _is_tiff(path):
        return _whole_tiff(path)
    shape = image_shape(path)
    size = path.stat().st_size
    ending = {".png": _PNG_END, ".jpg": _JPEG_END, ".jpeg": _JPEG_END}.get(path.suffix.lower())
    if ending is not None and size >= len(ending):
        try:
            with path.open("rb") as f:
                f.seek(size - len(ending))
                if f.read() == ending:
                    return shape
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read image ({_reason(exc)})") from None
    read_image(path)  # no end to check: decoded (raises naming what is wrong)
    return shape


def _whole_tiff(path: Path) -> tuple[int, int]:
    """:func:`checked_shape` of a TIFF, its file opened once."""
    _check_file(path)
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape = int(page.imagelength), int(page.imagewidth)
            offsets, counts = page.dataoffsets, page.databytecounts
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read image header ({_reason(exc)})") from None
    size = path.stat().st_size
    end = max((int(o) + int(n) for o, n in zip(offsets, counts, strict=False)), default=0)
    if end > size:
        # some writers count the last strip as a full one although the file ends sooner
        # (the image is whole): decoded to be sure before the file is called cut short
        try:
            read_image(path)
        except ImageReadError:
            raise ImageReadError(f"{path}: cannot read image (file cut short: {size} bytes, "
                                 f"its pixel data ends at byte {end})") from None  # fmt: skip
    return shape


def _tiff_planes(tif: Any) -> int:
    """Planes of an open TIFF: its pages, unless the second page is a preview or a mask
    (another size, or a reduced-resolution or mask page), not a plane; or more where the
    stack describes itself (ImageJ, OME, tifffile's; ImageJ stacks over 4 GiB have one
    page). Cheap: the page count and at most two pages' headers besides."""
    pages = len(tif.pages)
    if pages > 1:
        first, second = tif.pages[0], tif.pages[1]
        if getattr(second, "subfiletype", 0) or second.shape != first.shape:
            pages = 1
    described = 1
    if tif.is_imagej or tif.is_ome or tif.is_shaped:
        series = tif.series[0]
        described = math.prod(n for n, ax in zip(series.shape, series.axes, strict=False)
                              if ax not in "YXS")  # fmt: skip
    return max(pages, described, 1)


def image_header(path: str | os.PathLike[str]) -> tuple[tuple[int, int], int]:
    """``(rows, cols)`` of an image and its number of planes (pages of a TIFF stack: z,
    time or channels; 1 for other files), read without decoding pixels. Only the first
    plane is read (:func:`read_image`)."""
    return _header(Path(path), planes=True)


def _header(path: Path, planes: bool) -> tuple[tuple[int, int], int]:
    _check_file(path)
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                count = _tiff_planes(tif) if planes else 1  # the first page only, or more
                return (int(page.imagelength), int(page.imagewidth)), count
        from PIL import Image

        with _no_pixel_limit(), Image.open(path) as im:
            width, height = im.size
            if _orientation(im) in (5, 6, 7, 8):  # turned by a quarter (see _orient)
                width, height = height, width
            return (int(height), int(width)), 1
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read image header ({_reason(exc)})") from None


def unknown_size_text(root: str | os.PathLike[str] | None, filename: str) -> str:
    """Why an image's size is unknown, in words: "image not found", or "image could not be
    read: " and why (a file that is there but is no image its reader can decode)."""
    from .paths import resolve_image

    try:
        path = resolve_image(Path(root or "."), filename)
        if not path.is_file():
            return "image not found"
        image_header(path)
    except ImageReadError as exc:
        return f"image could not be read: {str(exc).removeprefix(f'{path}: ')}"
    except BioAnomalyError as exc:
        return str(exc)
    return "image not read"


def stack_note(planes: int) -> str:
    """What a user is told of an image file holding ``planes`` planes (> 1)."""
    return f"a stack of {planes} planes (pages): only the first plane is used"


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601) of an RGB(A) image; grayscale images pass through."""
    if image.ndim == 2:
        return image
    rgb = image[..., :3].astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if np.issubdtype(image.dtype, np.integer):
        return np.round(gray).astype(image.dtype)
    return gray.astype(image.dtype)


#: The policy for NaN and infinite pixels of float images (an ImageJ ratio image's 0/0, a
#: registered frame's NaN border): they carry no intensity. Every statistic (display
#: range, normalisation percentiles, quality statistics) is taken over the finite pixels;
#: where pixels are used (on screen, in training and prediction) they take the median of
#: the finite ones, a neutral grey (a dark fill would look like a dark-spot anomaly);
#: quality control flags the image with this.
NON_FINITE = "non-finite pixels"


def non_finite(image: np.ndarray) -> np.ndarray | None:
    """Where ``image``'s pixels are NaN or infinite; ``None`` where none are (integer
    images never hold any, and are not looked at)."""
    if image.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(image)
    return bad if bad.any() else None


def finite_median(image: np.ndarray, bad: np.ndarray | None = None) -> float:
    """The median of ``image``'s finite pixels (``bad``: where they are not, as
    :func:`non_finite` gives it); 0 when none is."""
    values = image[~bad] if bad is not None else image.ravel()
    return float(np.median(values)) if values.size else 0.0


def with_finite_pixels(image: np.ndarray) -> tuple[np.ndarray, int]:
    """``image`` with its NaN or infinite pixels set to the median of the finite ones
    (:data:`NON_FINITE`), and how many there were: the image itself when there are none.
    RGB(A) images are judged as a whole (a pixel with a non-finite channel is one)."""
    bad = non_finite(image)
    if bad is None:
        return image, 0
    out = image.copy()
    out[bad] = finite_median(image, bad)
    count = int(bad.any(axis=-1).sum()) if image.ndim == 3 else int(bad.sum())
    return out, count


def percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(values, qs)`` (its default, linear interpolation), as floats, of the
    finite values (:data:`NON_FINITE`); all 0 when none is.

    Integer data of up to 16 bits (camera images) goes through a histogram instead of
    a partial sort: the same values, about four times faster on a 1080 px image.
    """
    flat = np.asarray(values).ravel()
    bad = non_finite(flat)
    if bad is not None:
        flat = flat[~bad]
    if not flat.size:
        return [0.0 for _ in qs]
    if flat.dtype.kind not in "ui" or flat.dtype.itemsize > 2:
        return [float(v) for v in np.percentile(flat, qs)]
    offset = int(flat.min()) if flat.dtype.kind == "i" else 0
    cum = np.cumsum(np.bincount(flat if not offset else flat.astype(np.int32) - offset))
    n, out = flat.size, []
    for q in qs:
        pos = q / 100 * (n - 1)  # as numpy computes it, to give the same floats
        i = int(np.floor(pos))
        t = pos - i
        a, b = (int(np.searchsorted(cum, k, side="right")) + offset for k in (i, min(i + 1, n - 1)))
        out.append(float(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)))
    return out


def percentile_range(
    image: np.ndarray, low: float = 0.1, high: float = 99.9
) -> tuple[float, float]:
    """Display/normalisation range from intensity percentiles of the finite pixels
    (:data:`NON_FINITE`).

    Big images are subsampled on a regular grid (at most about 1 M pixels), which
    changes the percentiles by far less than a grey level and keeps this fast.
    """
    data = image if image.ndim == 2 else to_grayscale(image)
    step = max(1, int(np.sqrt(data.size / 1_000_000)))
    sample = data[::step, ::step]
    lo, hi = percentiles(sample, [low, high])
    return widened(lo, hi)


def widened(low: float, high: float) -> tuple[float, float]:
    """``(low, high)``, or a range one grey level wide (more where one would not change a
    float that large) when ``high`` is not above ``low``: napari refuses ends that are
    equal, and a flat image has them."""
    if high > low:
        return float(low), float(high)
    return float(low), float(low) + max(1.0, abs(float(low)) * 1e-6)
