"""Reading what microscopes and labs save: 16-bit colour PNGs at full depth, EXIF
orientation as viewers show it, compressed TIFFs, NaN or infinite float pixels, integer
types wider than 16 bits in quality control."""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from napari_bioanomaly.core import quality
from napari_bioanomaly.core.images import (
    NON_FINITE,
    ImageReadError,
    checked_shape,
    image_shape,
    percentile_range,
    percentiles,
    read_image,
    with_finite_pixels,
)

#: A 12-bit ramp of 1200 grey levels (more than 8 bits hold).
RAMP = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 1200 + 1000).astype(np.uint16)


def _png16(path, pixels: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow writes none of these colour types)."""
    rows, cols = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels.astype(">u2")[r].tobytes() for r in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", cols, rows, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize(
    ("colour_type", "planes", "expected"),
    [(2, 3, (40, 60, 3)), (6, 4, (40, 60, 4)), (4, 2, (40, 60))],
    ids=["rgb16", "rgba16", "grey16+alpha"],
)
def test_16_bit_colour_and_grey_alpha_pngs_keep_their_depth(tmp_path, colour_type, planes,
                                                             expected):  # fmt: skip
    """Pillow cut them to 8 bits: a 12-bit image of 1007 levels came back with 6."""
    alpha = np.full_like(RAMP, 65535)
    channels = {2: [RAMP, RAMP, RAMP], 6: [RAMP, RAMP, RAMP, alpha], 4: [RAMP, alpha]}
    path = tmp_path / "deep.png"
    _png16(path, np.dstack(channels[colour_type]), colour_type)
    data = read_image(path)
    assert data.dtype == np.uint16 and data.shape == expected
    grey = data if data.ndim == 2 else data[..., 0]
    assert np.array_equal(grey, RAMP)  # every one of the 1200 levels
    assert image_shape(path) == checked_shape(path) == (40, 60)


def test_a_16_bit_colour_png_without_its_decoder_is_refused_naming_the_file(tmp_path,
                                                                             monkeypatch):  # fmt: skip
    path = tmp_path / "deep.png"
    _png16(path, np.dstack([RAMP] * 3), 2)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(ImageReadError, match=r"deep\.png: a 16-bit colour .*pip install "
                                             "imagecodecs"):  # fmt: skip
        read_image(path)


def _jpeg(path, orientation: int) -> None:
    pixels = np.zeros((30, 50), np.uint8)
    pixels[:10, :20] = 250  # a bright corner shows which way it was turned
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_pixels_and_size_as_viewers_show_them(tmp_path,
                                                                             orientation):  # fmt: skip
    """A JPEG turned by its EXIF orientation is shown turned by browsers and VIA: regions
    drawn there did not line up with the pixels read here."""
    path = tmp_path / f"o{orientation}.jpg"
    _jpeg(path, orientation)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im))
    data = read_image(path)
    assert np.array_equal(data, shown)
    assert image_shape(path) == checked_shape(path) == shown.shape[:2]
    assert (data.shape == (50, 30)) == (orientation >= 5)


def test_compressed_tiffs_are_read(tmp_path):
    """LZW (many microscopes' default) and JPEG TIFFs needed imagecodecs; zlib did not."""
    tifffile.imwrite(tmp_path / "zlib.tif", RAMP, compression="zlib")
    assert np.array_equal(read_image(tmp_path / "zlib.tif"), RAMP)
    pytest.importorskip("imagecodecs", reason="imagecodecs (an install requirement) missing")
    Image.fromarray(RAMP).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert np.array_equal(read_image(tmp_path / "lzw.tif"), RAMP)
    eight = (RAMP // 8).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "jpeg.tif", compression="jpeg", quality=95)
    assert np.abs(read_image(tmp_path / "jpeg.tif").astype(int) - eight).max() <= 8


def test_a_missing_codec_is_refused_with_the_advice_to_install_it(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "lzw.tif", RAMP)

    def no_codec(self, *args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
    with pytest.raises(ImageReadError, match=r"lzw\.tif: cannot read image \(<COMPRESSION.LZW: "
                                             r"5> requires .*; install or upgrade it: "
                                             r"pip install -U imagecodecs\)"):  # fmt: skip
        read_image(tmp_path / "lzw.tif")


def _ratio_image() -> np.ndarray:
    """A float image (an ImageJ ratio) with NaN (0/0) and infinite (x/0) pixels."""
    image = (RAMP / 4000).astype(np.float32)
    image[2:6, 2:6] = np.nan
    image[10, 10], image[11, 11] = np.inf, -np.inf
    return image


def test_statistics_of_a_float_image_leave_non_finite_pixels_out():
    """One NaN pixel made the display range NaN (napari's contrast slider failed on it)."""
    image = _ratio_image()
    finite = image[np.isfinite(image)]
    assert percentiles(image, [0, 50, 100]) == pytest.approx(
        [float(finite.min()), float(np.median(finite)), float(finite.max())])  # fmt: skip
    low, high = percentile_range(image)
    assert np.isfinite([low, high]).all() and low < high
    assert percentile_range(np.full((4, 4), np.nan, np.float32)) == (0.0, 1.0)
    filled, count = with_finite_pixels(image)
    assert count == 18 and np.isfinite(filled).all()
    assert filled[3, 3] == pytest.approx(float(np.median(finite)))
    assert with_finite_pixels(RAMP)[0] is RAMP  # integer images are left as they are


def test_quality_flags_non_finite_pixels_and_judges_the_rest():
    """NaN statistics compared False: an image with NaN pixels was flagged nothing."""
    report = quality.check(_ratio_image())
    assert report.flags == (NON_FINITE,)
    assert np.isfinite([report.std, report.p75, report.focus, report.saturated]).all()
    flat = quality.check(np.full((20, 20), np.nan, np.float32))
    assert "uniform" in flat.flags and NON_FINITE in flat.flags


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64])
def test_12_bit_data_in_a_wide_integer_type_is_judged_as_16_bit(dtype):
    """Divided by 2^31, 12-bit data stored as int32 was flagged uniform, and
    --exclude-qc dropped good images."""
    rng = np.random.default_rng(1)
    camera = rng.normal(2000, 150, (64, 64)).clip(0, 4095).astype(np.uint16)
    wide = quality.check(camera.astype(dtype))
    assert wide.flags == quality.check(camera).flags == ()
    assert wide.std == pytest.approx(quality.check(camera).std)
    full = np.array([[0, 2**31 - 1], [5, 2**30]], dtype=np.int64)  # its values reach 31 bits
    assert quality.check(full).p75 <= 1.0


def test_a_png_s_size_is_read_without_decoding_it(tmp_path, monkeypatch):
    """Asking a PNG without EXIF for its orientation made Pillow decode it (23 ms a header
    of a 1080 px 16-bit PNG, at every open of a folder, and an image over the size limit
    decoded before it was refused): sizes and the file-end check decode no pixel."""
    from PIL import ImageFile

    path = tmp_path / "ramp.png"
    Image.fromarray(RAMP).save(path)

    loads = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(1) or load(im))
    assert image_shape(path) == checked_shape(path) == RAMP.shape
    assert loads == []


def test_a_tiff_whose_last_strip_is_counted_long_is_whole(tmp_path):
    """Some writers count the last strip as a full one although the file ends sooner: the
    image is whole (it reads exactly), so it is not called cut short; a TIFF really cut
    short still is."""
    import struct

    path = tmp_path / "strips.tif"
    data = (np.arange(100 * 64).reshape(100, 64) % 4000).astype(np.uint16)
    tifffile.imwrite(path, data, rowsperstrip=16)
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["StripByteCounts"]
        at, count, kind = tag.valueoffset, tag.count, int(tag.dtype)
    raw = bytearray(path.read_bytes())
    form = {3: "<H", 4: "<I", 16: "<Q"}[kind]
    struct.pack_into(form, raw, at + (count - 1) * struct.calcsize(form), 16 * 64 * 2)
    path.write_bytes(bytes(raw))
    assert np.array_equal(read_image(path), data)
    assert checked_shape(path) == data.shape
    cut = tmp_path / "cut.tif"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ImageReadError, match="cut short"):
        checked_shape(cut)
