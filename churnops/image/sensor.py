"""A simulated camera: bundled digits -> scene -> optics -> Bayer RGGB raw -> 16-bit DNG.

The scene is scikit-learn's `load_digits` (1,797 real handwritten 8x8 digits, 10 classes)
upscaled to the contract's size, with a seeded ink and background colour per image, in linear
light. The camera blurs it (optics), mixes colours (`color_matrix`), applies per-channel gains,
samples an RGGB mosaic, adds shot noise (Poisson in electrons) and read noise (Gaussian), adds the
black level and clips at the white level. Each capture is written as a DNG whose CFA, black,
white, AsShotNeutral and ColorMatrix1 tags say exactly that, so LibRaw (rawpy) reads it back.
Everything is a function of (seed, image index): regenerating gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from churnops.image.contract import ImageContract, SensorSpec

# linear sRGB (D65) -> CIE XYZ
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)
RGGB = np.array([[0, 1], [1, 2]])  # channel index at each site of the 2x2 tile


@dataclass(frozen=True)
class Capture:
    """One raw frame as the camera wrote it."""

    raw: np.ndarray  # uint16 (H, W) mosaic
    label: int
    index: int  # position in load_digits


def scene(digit: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An 8x8 digit (0..16) -> (H, W, 3) linear RGB in [0, 1] with a random ink and background colour."""
    from scipy.ndimage import zoom

    lum = np.clip(zoom(digit.astype(np.float64) / 16.0, (size[0] / 8, size[1] / 8), order=1), 0, 1)
    ink = rng.uniform(0.55, 1.0, 3)
    background = rng.uniform(0.02, 0.2, 3)
    return background * (1 - lum[..., None]) + ink * lum[..., None]


def optics(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Lens blur: a Gaussian point-spread function per channel."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(rgb, sigma=(sigma, sigma, 0)) if sigma > 0 else rgb


def mosaic(rgb: np.ndarray) -> np.ndarray:
    """Sample an RGGB Bayer mosaic: (H, W, 3) -> (H, W)."""
    h, w, _ = rgb.shape
    rows, cols = np.indices((h, w))
    return np.take_along_axis(rgb, RGGB[rows % 2, cols % 2][..., None], axis=2)[..., 0]


def expose(rgb: np.ndarray, spec: SensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Linear scene -> uint16 raw mosaic: colour mix, gains, mosaic, shot + read noise, black, clip."""
    cam = rgb @ np.asarray(spec.color_matrix).T * np.asarray(spec.gains) * spec.exposure
    span = spec.white_level - spec.black_level
    signal_dn = np.clip(mosaic(cam), 0, None) * span
    electrons = rng.poisson(signal_dn * spec.electrons_per_dn)
    dn = electrons / spec.electrons_per_dn + rng.normal(0.0, spec.read_noise_dn, signal_dn.shape)
    return np.clip(np.rint(dn + spec.black_level), 0, spec.white_level).astype(np.uint16)


def as_shot_neutral(spec: SensorSpec) -> np.ndarray:
    """The camera's response to grey, normalised to green (what the DNG AsShotNeutral tag holds)."""
    g = np.asarray(spec.gains, dtype=np.float64)
    return g / g[1]


def camera_from_xyz(spec: SensorSpec) -> np.ndarray:
    """DNG ColorMatrix1: XYZ (D65) -> camera RGB, before the gains."""
    return np.asarray(spec.color_matrix) @ XYZ_TO_SRGB


def _rationals(values, signed: bool) -> tuple[int, ...]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        f = Fraction(float(v)).limit_denominator(100_000)
        if not signed and f < 0:
            raise ValueError(f"unsigned rational tag value {v} < 0")
        out += [f.numerator, f.denominator]
    return tuple(out)


def write_dng(path: Path, raw: np.ndarray, spec: SensorSpec, model: str = "ChurnOps SimCam") -> None:
    """Write a 16-bit CFA DNG (uncompressed, one strip) with the tags LibRaw needs."""
    import tifffile

    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"raw frame must be a 2-D uint16 array, got {raw.dtype} {raw.shape}")
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, model, True),  # UniqueCameraModel
        (271, "s", 0, "ChurnOps", True),  # Make
        (272, "s", 0, model, True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(RGGB.ravel()), True),  # CFAPattern: R G / G B
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50713, "H", 2, (1, 1), True),  # BlackLevelRepeatDim
        (50714, "I", 1, int(spec.black_level), True),  # BlackLevel
        (50717, "I", 1, int(spec.white_level), True),  # WhiteLevel
        (50721, "2i", 9, _rationals(camera_from_xyz(spec), True), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, _rationals(as_shot_neutral(spec), False), True),  # AsShotNeutral
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, raw, photometric="cfa", subfiletype=0, extratags=tags, metadata=None)


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def render(index: int, contract: ImageContract, seed: int) -> Capture:
    """Capture number `index` of load_digits, deterministic in (seed, index)."""
    d = _digits()
    rng = np.random.default_rng([seed, index])
    size = (contract.image.height, contract.image.width)
    rgb = optics(scene(d.images[index], size, rng), contract.sensor.blur_sigma)
    return Capture(expose(rgb, contract.sensor, rng), int(d.target[index]), index)


def generate(root: Path, contract: ImageContract, seed: int = 42, limit: int | None = None) -> list[Path]:
    """Write the raw-digits data set as `root/<class>/<index>.dng`; returns the files written.

    `limit` takes the first N digits (tests); the full set is 1,797 captures.
    """
    n = len(_digits().target) if limit is None else min(limit, len(_digits().target))
    written = []
    for i in range(n):
        cap = render(i, contract, seed)
        path = Path(root) / contract.classes[cap.label] / f"{i:04d}.dng"
        write_dng(path, cap.raw, contract.sensor)
        written.append(path)
    return written
