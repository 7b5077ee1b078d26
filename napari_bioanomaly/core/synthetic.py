"""A deterministic synthetic brightfield dataset with exact anomaly polygons.

Cells are drawn as textured ellipses with a bright halo (as brightfield shows
them), under uneven illumination and camera noise. Anomalies (dark spots,
dust, scratches, hairs, bacterial colonies) are drawn by rasterising their
polygon, so the polygon is the exact ground truth. About 20% of the images
are normal and flagged "checked: no anomaly". Everything follows from the
seed: image ``i`` uses the random stream ``(seed, i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import geometry
from .model import DEFAULT_CLASSES, Dataset, ImageRecord, Region

#: Cell lines of the sample and their typical cell radius in px (at 512 px).
CELL_LINES = {"HeLa": 14.0, "U2OS": 18.0, "A549": 11.0}
#: ``easy``: clear anomalies; ``hard``: see :func:`make_hard_image`.
DIFFICULTIES = ("easy", "hard")
#: How much weaker the anomalies of the hard sample are (a factor on their contrast).
HARD_CONTRAST = (0.3, 0.6)


@dataclass(frozen=True)
class SampleConfig:
    """What :func:`generate` makes.

    Parameters
    ----------
    n_images, size, seed
        Number of images, their side in pixels, and the random seed.
    normal_fraction
        Share of images without anomaly (rounded, at least one when n >= 2).
    bit_depth
        16 writes 12-bit data in uint16 TIFFs (a typical camera), 8 writes PNGs.
    difficulty
        ``easy`` (the first look: clear anomalies on an even background) or
        ``hard`` (what learning tests and benchmarks use, see :func:`make_hard_image`):
        faint anomalies among look-alike textures, uneven light, out-of-focus
        patches, unannotated specks, full-range 16-bit data.
    """

    n_images: int = 12
    size: int = 512
    seed: int = 0
    normal_fraction: float = 0.2
    bit_depth: int = 16
    difficulty: str = "easy"

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be easy or hard, not {self.difficulty!r}")
        if self.n_images < 1:
            raise ValueError(f"need at least one image, got {self.n_images}")
        if self.size < 64:
            raise ValueError(f"images must be at least 64 px, got {self.size}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit depth must be 8 or 16, got {self.bit_depth}")
        if not 0 <= self.normal_fraction <= 1:
            raise ValueError(f"normal fraction must be in [0, 1], got {self.normal_fraction}")


def _blob(
    rng: np.random.Generator, center: np.ndarray, radius: float, roughness: float
) -> np.ndarray:
    """An irregular closed outline around ``center`` (smoothed random radii)."""
    n = int(np.clip(radius * 2, 16, 48))
    noise = rng.normal(0, 1, n)
    noise = np.real(np.fft.ifft(np.fft.fft(noise) * (np.arange(n) < 4)))  # keep low frequencies
    noise /= max(np.abs(noise).max(), 1e-9)
    radii = radius * (1 + roughness * noise)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    return np.column_stack([center[0] + radii * np.sin(t), center[1] + radii * np.cos(t)])


def _path(rng: np.random.Generator, start: np.ndarray, length: float, curl: float) -> np.ndarray:
    """A smooth random path of ``length`` px; ``curl`` is the turning per step (rad)."""
    steps = max(4, int(length / 8))
    angle = rng.uniform(0, 2 * np.pi)
    turns = np.cumsum(rng.normal(0, curl, steps))
    angles = angle + ndimage.gaussian_filter1d(turns, 2)
    deltas = 8 * np.column_stack([np.sin(angles), np.cos(angles)])
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(deltas, axis=0)])


def _anomaly(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, float]:
    """Polygon (row, col) and intensity change of one anomaly of ``kind``."""
    s = size / 512
    center = rng.uniform(0.1 * size, 0.9 * size, 2)
    if kind == "dark spot":
        return _blob(rng, center, rng.uniform(6, 18) * s, 0.15), -0.35
    if kind == "dust":
        return _blob(rng, center, rng.uniform(4, 10) * s, 0.45), -0.22
    if kind == "bacterial colony":
        return _blob(rng, center, rng.uniform(20, 40) * s, 0.3), -0.12
    if kind == "scratch":
        path = _path(rng, center, rng.uniform(0.4, 0.8) * size, 0.01)
        return geometry.polyline_polygon(path, rng.uniform(2, 4) * s), 0.18
    if kind == "hair":
        path = _path(rng, center, rng.uniform(0.2, 0.5) * size, 0.12)
        return geometry.polyline_polygon(path, rng.uniform(3, 6) * s), -0.3
    raise ValueError(kind)


def _cells(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """Brightfield cells: darker textured bodies, darker nuclei, bright halos."""
    from skimage.draw import ellipse

    img = np.zeros((size, size), dtype=np.float32)
    n = int(0.35 * size * size / (math.pi * radius**2))
    for _ in range(n):
        r, c = rng.uniform(0, size, 2)
        a, b = radius * rng.uniform(0.7, 1.3, 2)
        rot = rng.uniform(-np.pi, np.pi)
        rr, cc = ellipse(r, c, a * 1.15, b * 1.15, (size, size), rotation=rot)
        img[rr, cc] = 0.07  # halo
        rr, cc = ellipse(r, c, a, b, (size, size), rotation=rot)
        img[rr, cc] = -0.06 + rng.normal(0, 0.015, len(rr))
        rr, cc = ellipse(r, c, a * 0.4, b * 0.4, (size, size), rotation=rot)
        img[rr, cc] = -0.12
    return ndimage.gaussian_filter(img, 1.2)


def _draw_anomalies(
    rng: np.random.Generator,
    kinds: list[str],
    size: int,
    contrast: tuple[float, float] | None = None,
) -> tuple[np.ndarray, list[Region]]:
    """The intensity change of the anomalies of ``kinds`` and their regions; with
    ``contrast``, each anomaly's change is scaled by a factor drawn from that range."""
    regions: list[Region] = []
    effect = np.zeros((size, size), dtype=np.float32)
    for kind in kinds:
        poly, delta = _anomaly(rng, kind, size)
        if contrast is not None:
            delta *= rng.uniform(*contrast)
        for part in geometry.clean_polygon(poly, (size, size)):
            mask = geometry.polygon_to_mask(part, (size, size))
            if kind == "bacterial colony":
                dots = rng.random((size, size)) < 0.25
                effect[mask] = delta * (1 + 1.5 * dots[mask])
            else:
                effect[mask] = delta * rng.uniform(0.8, 1.1)
            regions.append(Region(part, kind, shape="polygon"))
    return effect, regions


def make_image(
    rng: np.random.Generator, size: int, cell_line: str, kinds: list[str]
) -> tuple[np.ndarray, list[Region]]:
    """One image in ``[0, 1]`` and its anomaly regions."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gy, gx = rng.uniform(-0.08, 0.08, 2)
    image = 0.55 + gy * (yy - 0.5) + gx * (xx - 0.5) - 0.06 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    image += _cells(rng, size, CELL_LINES[cell_line] * size / 512)
    effect, regions = _draw_anomalies(rng, kinds, size)
    image = image + ndimage.gaussian_filter(effect, 0.6) * (effect != 0)
    image += rng.normal(0, 0.012, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), regions


def _granular_cells(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """HepG2-like clumps: dense cell clusters full of dark granules and lipid droplets,
    the texture that a dark-spot or dust detector mistakes for anomalies."""
    from skimage.draw import disk

    img = _cells(rng, size, radius)
    clumps = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):
        centre = rng.uniform(0, size, 2)
        reach = rng.uniform(3, 6) * radius
        for _ in range(int(rng.integers(40, 90))):
            r, c = centre + rng.normal(0, reach / 2, 2)
            rr, cc = disk((r, c), rng.uniform(0.8, 2.2) * size / 512 + 0.8, shape=(size, size))
            clumps[rr, cc] += rng.choice([-0.16, -0.1, 0.08])
    return img + ndimage.gaussian_filter(clumps, 0.8)


def make_hard_image(
    rng: np.random.Generator, size: int, cell_line: str, kinds: list[str]
) -> tuple[np.ndarray, list[Region]]:
    """One hard image in ``[0, 1]`` and its anomaly regions.

    What makes it hard, each a thing real brightfield data does:

    - anomalies at 30-60% of the easy sample's contrast, blurred like the cells;
    - HepG2-like granular clumps (:func:`_granular_cells`) that look like dust;
    - strong uneven illumination (tilt and vignetting of up to 25%);
    - out-of-focus patches (a disc of the image blurred), not anomalies;
    - specks of 1-2 px (smaller than any cell), not to be annotated;
    - slow background texture (debris in the medium) and more camera noise.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gy, gx = rng.uniform(-0.25, 0.25, 2)
    vignette = rng.uniform(0.1, 0.25)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    image = 0.55 + gy * (yy - 0.5) + gx * (xx - 0.5) - vignette * ((yy - cy) ** 2 + (xx - cx) ** 2)
    image += _granular_cells(rng, size, CELL_LINES[cell_line] * size / 512)
    image += ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 40).astype(
        np.float32
    ) * 0.4  # fmt: skip
    effect, regions = _draw_anomalies(rng, kinds, size, HARD_CONTRAST)
    image = image + ndimage.gaussian_filter(effect, 1.0) * (effect != 0)
    for _ in range(int(rng.integers(1, 3))):  # out-of-focus patches
        from skimage.draw import disk

        rr, cc = disk(tuple(rng.uniform(0, size, 2)), rng.uniform(0.08, 0.2) * size,
                      shape=(size, size))  # fmt: skip
        blurred = ndimage.gaussian_filter(image, rng.uniform(2.5, 5.0))
        image[rr, cc] = blurred[rr, cc]
    n_specks = int(rng.integers(15, 40) * (size / 512) ** 2) + 3
    specks = np.zeros((size, size), dtype=np.float32)
    where = rng.integers(0, size, (n_specks, 2))
    specks[where[:, 0], where[:, 1]] = rng.uniform(-0.35, -0.15, n_specks)
    image += ndimage.gaussian_filter(specks, 0.7) * 4
    image += rng.normal(0, 0.02, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), regions


def generate(config: SampleConfig = SampleConfig()) -> tuple[Dataset, list[np.ndarray]]:
    """The sample dataset in memory: annotations and images (float in ``[0, 1]``)."""
    n = config.n_images
    n_normal = round(n * config.normal_fraction)
    if n >= 2 and config.normal_fraction > 0:
        n_normal = max(1, n_normal)
    order = np.random.default_rng(config.seed).permutation(n)
    normal = set(order[:n_normal].tolist())
    lines = list(CELL_LINES)
    kinds = [k for k in DEFAULT_CLASSES if k != "other"]
    dataset = Dataset(classes=list(DEFAULT_CLASSES), class_attribute="class")
    images = []
    suffix = ".tif" if config.bit_depth == 16 else ".png"
    for i in range(n):
        rng = np.random.default_rng([config.seed, i])
        line = lines[i % len(lines)]
        chosen = [] if i in normal else list(rng.choice(kinds, size=rng.integers(1, 4)))
        make = make_hard_image if config.difficulty == "hard" else make_image
        img, regions = make(rng, config.size, line, [str(k) for k in chosen])
        record = ImageRecord(
            filename=f"img_{i:03d}{suffix}",
            shape=(config.size, config.size),
            file_attributes={"cell_line": line},
            no_anomaly=not regions,
            regions=regions,
        )
        for r in regions:
            r.class_attribute = "class"
        dataset.images.append(record)
        images.append(img)
    return dataset, images


def write_sample(out_dir: str | Path, config: SampleConfig = SampleConfig()) -> Path:
    """Write the sample images and ``annotations.json`` (a VIA 2 project).

    Returns the annotation file's path.
    """
    import imageio.v3 as iio
    import tifffile

    from .annotations import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset, images = generate(config)
    for record, img in zip(dataset.images, images, strict=True):
        path = out / record.filename
        if config.bit_depth == 16 and config.difficulty == "hard":
            # the full 16-bit range above a camera offset, as sCMOS cameras write it
            raw = 500 + img * 60000
            tifffile.imwrite(path, np.round(raw).astype(np.uint16), compression="zlib")
        elif config.bit_depth == 16:
            tifffile.imwrite(path, np.round(img * 4095).astype(np.uint16), compression="zlib")
        else:
            iio.imwrite(path, np.round(img * 255).astype(np.uint8))
        record.size = path.stat().st_size
    dataset.root = out
    ann = out / "annotations.json"
    save(dataset, ann, "via-project")
    return ann
