"""Reading microscopy images: TIFF, PNG, JPEG; 8/16-bit; grayscale or RGB."""

from __future__ import annotations

import os
from pathlib import Path

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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Pixels of an image file: ``(rows, cols)`` or ``(rows, cols, 3|4)``.

    Multi-page TIFFs give their first page. Raises :class:`ImageReadError`
    naming the file on any failure.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                data = tif.pages[0].asarray()
        else:
            import imageio.v3 as iio

            data = iio.imread(path)
    except ImageReadError:
        raise
    except Exception as exc:  # decoders raise anything: ValueError, OSError, struct.error...
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise ImageReadError(
            f"{path}: expected a 2D grayscale or RGB image, got shape {data.shape}"
        )
    return data


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(rows, cols)`` of an image, read from its header without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
            return int(height), int(width)
    except Exception as exc:
        raise ImageReadError(
            f"{path}: cannot read image header ({type(exc).__name__}: {exc})"
        ) from None


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601) of an RGB(A) image; grayscale images pass through."""
    if image.ndim == 2:
        return image
    rgb = image[..., :3].astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if np.issubdtype(image.dtype, np.integer):
        return np.round(gray).astype(image.dtype)
    return gray.astype(image.dtype)


def percentile_range(
    image: np.ndarray, low: float = 0.1, high: float = 99.9
) -> tuple[float, float]:
    """Display/normalisation range from intensity percentiles.

    Big images are subsampled on a regular grid (at most about 1 M pixels), which
    changes the percentiles by far less than a grey level and keeps this fast.
    """
    data = image if image.ndim == 2 else to_grayscale(image)
    step = max(1, int(np.sqrt(data.size / 1_000_000)))
    sample = data[::step, ::step]
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        hi = lo + 1
    return float(lo), float(hi)
