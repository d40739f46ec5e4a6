"""The image signal processor: seven deterministic stages from a Bayer mosaic to display RGB.

1 black level -> 2 white balance -> 3 demosaic -> 4 colour correction -> 5 gamma ->
6 denoise -> 7 sharpen (plus an exposure gain in stops between 2 and 3, 0 by default, used by
the sensitivity analysis). Each stage is a small pure function of float32 arrays; `process` runs
them with the parameters of the contract's `isp` section. Only RGGB mosaics are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from churnops.image.contract import CFA_PATTERNS, IspSpec

_CHANNEL = {"R": 0, "G": 1, "B": 2}


class UnsupportedRawError(ValueError):
    """A raw file the ISP cannot process (CFA layout, colour count, geometry)."""


@dataclass(frozen=True)
class RawFrame:
    """What the ISP needs from a raw file (read by `dataset.read_raw`)."""

    bayer: np.ndarray  # uint16 (H, W)
    cfa: str  # "RGGB": colour of sites (0,0) (0,1) (1,0) (1,1)
    black: np.ndarray  # float (2, 2): black level of each site of the tile
    white: float
    wb: np.ndarray  # (3,) camera white-balance multipliers R, G, B (1 / AsShotNeutral)
    rgb_cam: np.ndarray  # (3, 3) camera RGB -> linear sRGB


def channel_index(cfa: str) -> np.ndarray:
    """`"RGGB"` -> [[0, 1], [1, 2]] (channel of each site of the 2x2 tile)."""
    if cfa not in CFA_PATTERNS:
        raise UnsupportedRawError(f"CFA pattern {cfa} not supported (supported: {', '.join(CFA_PATTERNS)})")
    return np.array([_CHANNEL[c] for c in cfa]).reshape(2, 2)


def site_map(shape: tuple[int, int], tile: np.ndarray) -> np.ndarray:
    """Tile a 2x2 array over an (H, W) frame."""
    rows, cols = np.indices(shape)
    return tile[rows % 2, cols % 2]


# ---- the stages ------------------------------------------------------------------------------------------


def black_level(bayer: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    """1. Subtract the per-site black level and scale to [0, 1] of the sensor's range."""
    b = site_map(bayer.shape, np.asarray(black, dtype=np.float32))
    return np.clip((bayer.astype(np.float32) - b) / (np.float32(white) - b), 0.0, None)


def white_balance(mosaic: np.ndarray, cfa: str, multipliers: np.ndarray) -> np.ndarray:
    """2. Multiply each site by its channel's gain (normalised so the smallest is 1), clip at 1."""
    m = np.asarray(multipliers, dtype=np.float32)
    m = m / m.min()
    return np.clip(mosaic * site_map(mosaic.shape, m[channel_index(cfa)]), 0.0, 1.0)


def gray_world(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """White-balance multipliers that make the frame's channel means equal (green = 1)."""
    ch = site_map(mosaic.shape, channel_index(cfa))
    means = np.array([mosaic[ch == c].mean() for c in range(3)], dtype=np.float64)
    return (means[1] / np.maximum(means, 1e-6)).astype(np.float32)


def exposure(mosaic: np.ndarray, stops: float) -> np.ndarray:
    """Digital gain of 2**stops (clipped at 1); identity at 0."""
    return mosaic if stops == 0 else np.clip(mosaic * np.float32(2.0**stops), 0.0, 1.0)


def demosaic(mosaic: np.ndarray, cfa: str, method: str = "bilinear") -> np.ndarray:
    """3. (H, W) mosaic -> (H, W, 3): bilinear (normalised convolution; exact at borders) or nearest."""
    from scipy.ndimage import convolve

    ch = site_map(mosaic.shape, channel_index(cfa))
    if method == "nearest":
        h, w = mosaic.shape
        out = np.empty((h, w, 3), np.float32)
        for c in range(3):
            # each 2x2 tile takes the tile's sample(s) of channel c (green: the mean of both)
            tile = np.where(ch == c, mosaic, 0.0).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
            count = (ch == c).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
            out[..., c] = np.repeat(np.repeat(tile / count, 2, axis=0), 2, axis=1)
        return out
    if method != "bilinear":
        raise ValueError(f"isp.demosaic: unknown method {method!r} (bilinear | nearest)")
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
    out = np.empty(mosaic.shape + (3,), np.float32)
    for c in range(3):
        mask = (ch == c).astype(np.float32)
        num = convolve(mosaic * mask, k, mode="constant")
        den = convolve(mask, k, mode="constant")
        out[..., c] = np.where(mask > 0, mosaic, num / den)
    return out


def color_correction(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """4. Camera RGB -> linear sRGB with a 3x3 matrix, clipped to [0, 1]."""
    return np.clip(rgb @ np.asarray(matrix, dtype=np.float32).T, 0.0, 1.0)


@lru_cache(maxsize=32)
def _toe(gamma: float, slope: float) -> tuple[float, float]:
    """Breakpoint b and offset a of V = (1+a) L**(1/gamma) - a (L >= b), V = slope L (L < b)."""
    from scipy.optimize import brentq

    p = 1.0 / gamma
    if slope <= 0:
        return 0.0, 0.0
    if slope * 1.0 <= 1.0:  # a toe this shallow never meets the power curve's slope
        raise ValueError(f"isp.toe_slope {slope} must be 0 or above 1")
    # slope continuity gives a from b; value continuity fixes b
    a_of = lambda b: slope * b ** (1 - p) / p - 1  # noqa: E731
    b = brentq(lambda b: slope * b - ((1 + a_of(b)) * b**p - a_of(b)), 1e-9, 0.999)
    return float(b), float(a_of(b))


def gamma_curve(rgb: np.ndarray, gamma: float = 2.222, toe_slope: float = 4.5) -> np.ndarray:
    """5. Encode linear light: power 1/gamma with a linear toe (BT.709 at 2.222 / 4.5)."""
    b, a = _toe(gamma, toe_slope)
    x = np.clip(rgb, 0.0, 1.0)
    powered = (1 + a) * np.power(x, 1.0 / gamma) - a
    return np.where(x < b, toe_slope * x, powered).astype(np.float32) if b > 0 else powered.astype(np.float32)


def denoise(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """6. Gaussian smoothing of each channel (sigma in pixels; 0 = off)."""
    from scipy.ndimage import gaussian_filter

    return rgb if sigma <= 0 else gaussian_filter(rgb, sigma=(sigma, sigma, 0), mode="nearest")


def sharpen(rgb: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """7. Unsharp mask: rgb + amount * (rgb - blur(rgb)), clipped to [0, 1]; 0 = off."""
    from scipy.ndimage import gaussian_filter

    if amount <= 0:
        return rgb
    blur = gaussian_filter(rgb, sigma=(sigma, sigma, 0), mode="nearest")
    return np.clip(rgb + np.float32(amount) * (rgb - blur), 0.0, 1.0)


# ---- the pipeline ------------------------------------------------------------------------------------------


def wb_multipliers(frame: RawFrame, mosaic: np.ndarray, spec: IspSpec) -> np.ndarray:
    """The multipliers `spec.white_balance` asks for."""
    wb = spec.white_balance
    if wb == "camera":
        return frame.wb
    if wb == "gray_world":
        return gray_world(mosaic, frame.cfa)
    if wb == "none":
        return np.ones(3, np.float32)
    return np.asarray(wb, dtype=np.float32)


def process(frame: RawFrame, spec: IspSpec) -> np.ndarray:
    """Run the seven stages; returns (H, W, 3) float32 display RGB in [0, 1]."""
    x = black_level(frame.bayer, frame.black, frame.white)
    x = white_balance(x, frame.cfa, wb_multipliers(frame, x, spec))
    x = exposure(x, spec.exposure_stops)
    rgb = demosaic(x, frame.cfa, spec.demosaic)
    if spec.color_correction == "camera":
        rgb = color_correction(rgb, frame.rgb_cam)
    rgb = gamma_curve(rgb, spec.gamma, spec.toe_slope)
    rgb = denoise(rgb, spec.denoise_sigma)
    return sharpen(rgb, spec.sharpen_amount, spec.sharpen_sigma)
