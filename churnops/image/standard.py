"""Standard images (PNG/JPEG) of digits: fixed renders for measuring, random renders for training.

A digit is a stroke map: (H, W) float in [0, 1], 1 where the ink is. It comes from one of
scikit-learn's 8x8 digits (`digit_strokes`, the bench's held-out digits) or from any model input
(`strokes_of`: the luminance of an ISP output or a decoded image, stretched to [0, 1]; what
training and the training-time metric use, so a folder of real images works the same way).

`STYLES` are the renders the standard-images accuracy is measured on (grey on black, black on
white, a colour map, JPEG quality 75, blur, small scale). `random_render` is the training
augmentation: scale and position, blur, ink/background colour or a random colour map (contrast
and polarity random, so inversion is included), then a PNG or JPEG file. Every render is encoded
and decoded back through `churnops.image.dataset.read_standard`, the conversion the server applies
to a PNG/JPEG upload (serving/image.py), so train and serve see the same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from churnops.image.dataset import read_standard

# a few stops of matplotlib's viridis (the bench's colour map; training never sees it, it draws its own maps)
VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.230, 0.322, 0.546],
        [0.128, 0.567, 0.551],
        [0.369, 0.789, 0.383],
        [0.993, 0.906, 0.144],
    ],
    np.float32,
)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Style:
    """One fixed render: colours (ink, background) or a colour map, blur, scale, file format."""

    description: str
    ink: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    colormap: np.ndarray | None = None
    blur_sigma: float = 0.0
    scale: float = 1.0
    fmt: str = "PNG"
    quality: int = 95


STYLES: dict[str, Style] = {
    "grey_on_black": Style("white ink on black, PNG"),
    "black_on_white": Style("black ink on white, PNG", ink=(0.0, 0.0, 0.0), background=(1.0, 1.0, 1.0)),
    "colormap": Style("viridis colour map, PNG", colormap=VIRIDIS),
    "jpeg_q75": Style("black ink on white, JPEG quality 75", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), fmt="JPEG", quality=75),
    "blur": Style("white ink on black, Gaussian blur sigma 1.2 px, PNG", blur_sigma=1.2),
    "small_scale": Style("white ink on black, digit at 60% size, centred, PNG", scale=0.6),
}


# ---- stroke maps --------------------------------------------------------------------------------------


def digit_strokes(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An 8x8 scikit-learn digit (0..16) -> (H, W) strokes in [0, 1], upscaled bilinearly (as the sensor does)."""
    from scipy.ndimage import zoom

    d = np.asarray(digit, dtype=np.float64) / 16.0
    return np.clip(zoom(d, (size[0] / d.shape[0], size[1] / d.shape[1]), order=1), 0, 1).astype(np.float32)


def strokes_of(x: np.ndarray) -> np.ndarray:
    """A model input (3, H, W) or a batch (N, 3, H, W) -> strokes: luminance stretched from its 2nd to
    98th percentile onto [0, 1] (ink brighter than the background, as the raw captures have it)."""
    lum = np.tensordot(LUMA, np.asarray(x, dtype=np.float32), axes=([0], [-3]))  # (H, W) or (N, H, W)
    lo = np.percentile(lum, 2, axis=(-2, -1), keepdims=True)
    hi = np.percentile(lum, 98, axis=(-2, -1), keepdims=True)
    return np.clip((lum - lo) / np.maximum(hi - lo, 1e-3), 0, 1).astype(np.float32)


def rescale(strokes: np.ndarray, factor: float, dy: float = 0.5, dx: float = 0.5) -> np.ndarray:
    """The strokes shrunk by `factor` (<= 1) and placed at (dy, dx) of the free margin (0.5 = centred)."""
    from scipy.ndimage import zoom

    if factor >= 1.0:
        return strokes
    h, w = strokes.shape
    small = np.clip(zoom(strokes, factor, order=1), 0, 1)
    sh, sw = small.shape
    out = np.zeros_like(strokes)
    y0, x0 = int(round(dy * (h - sh))), int(round(dx * (w - sw)))
    out[y0 : y0 + sh, x0 : x0 + sw] = small
    return out


def blur(strokes: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return strokes if sigma <= 0 else gaussian_filter(strokes, sigma, mode="constant")


def colorize(strokes: np.ndarray, ink, background) -> np.ndarray:
    """(H, W) strokes -> (H, W, 3): background where 0, ink where 1, linear between."""
    s = strokes[..., None]
    return (np.asarray(background, np.float32) * (1 - s) + np.asarray(ink, np.float32) * s).astype(np.float32)


def apply_colormap(strokes: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """(H, W) strokes -> (H, W, 3) through a piecewise-linear colour map of evenly spaced stops (K, 3)."""
    stops = np.asarray(stops, np.float32)
    grid = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(strokes, grid, stops[:, c]) for c in range(3)], axis=-1).astype(np.float32)


# ---- files --------------------------------------------------------------------------------------------


def encode(rgb: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """(H, W, 3) floats in [0, 1] -> the bytes of a PNG or JPEG file (8-bit sRGB)."""
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    im.save(buf, fmt, **({"quality": int(quality)} if fmt == "JPEG" else {}))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (3, H, W) float32 model input, the server's conversion (`read_standard`)."""
    return np.ascontiguousarray(read_standard(data).transpose(2, 0, 1), dtype=np.float32)


def render(strokes: np.ndarray, style: Style) -> bytes:
    """The file of one fixed style."""
    s = blur(rescale(strokes, style.scale), style.blur_sigma)
    rgb = apply_colormap(s, style.colormap) if style.colormap is not None else colorize(s, style.ink, style.background)
    return encode(rgb, style.fmt, style.quality)


def render_set(strokes: Sequence[np.ndarray], style: Style) -> np.ndarray:
    """(N, 3, H, W) model inputs of the strokes rendered in one style, through encode + decode."""
    return np.stack([decode(render(s, style)) for s in strokes])


# ---- training augmentation ------------------------------------------------------------------------------


def random_colors(rng: np.random.Generator, min_contrast: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(ink, background) RGB whose luminances differ by at least `min_contrast` (either way round)."""
    while True:
        ink, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if abs(float(LUMA @ ink) - float(LUMA @ bg)) >= min_contrast:
            return ink, bg


def random_colormap(rng: np.random.Generator) -> np.ndarray:
    """3-5 random colour stops whose luminance rises (or falls) monotonically by at least 0.3."""
    k = int(rng.integers(3, 6))
    while True:
        stops = rng.uniform(0, 1, (k, 3))
        lum = stops @ LUMA
        order = np.argsort(lum)
        stops = stops[order][:: 1 if rng.random() < 0.5 else -1]
        if np.ptp(lum) >= 0.3:
            return stops.astype(np.float32)


def random_render(strokes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random standard image of the strokes as a model input (3, H, W): scale and position, blur,
    colours or a colour map (contrast and polarity random), PNG or JPEG (quality 40-95)."""
    s = strokes
    if rng.random() < 0.6:
        s = rescale(s, float(rng.uniform(0.45, 1.0)), float(rng.random()), float(rng.random()))
    if rng.random() < 0.4:
        s = blur(s, float(rng.uniform(0.3, 1.6)))
    if rng.random() < 0.7:
        rgb = colorize(s, *random_colors(rng))
    else:
        rgb = apply_colormap(s, random_colormap(rng))
    if rng.random() < 0.5:
        return decode(encode(rgb, "PNG"))
    return decode(encode(rgb, "JPEG", int(rng.integers(40, 96))))


def mix_batch(X: np.ndarray, strokes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of the batch X (N, 3, H, W) with `fraction` of its rows replaced by random renders of their strokes."""
    if fraction <= 0 or len(X) == 0:
        return X
    out = np.array(X, dtype=np.float32, copy=True)
    for i in np.flatnonzero(rng.random(len(X)) < fraction):
        out[i] = random_render(strokes[i], rng)
    return out


# ---- measuring --------------------------------------------------------------------------------------------


def standard_accuracy(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    strokes: Sequence[np.ndarray],
    labels: np.ndarray,
    styles: dict[str, Style] | None = None,
) -> dict[str, float]:
    """{style: accuracy} of the model on the strokes rendered in each style."""
    y = np.asarray(labels)
    out = {}
    for name, style in (styles or STYLES).items():
        out[name] = float((predict_proba(render_set(strokes, style)).argmax(1) == y).mean()) if len(y) else float("nan")
    return out
