"""What the prediction log keeps of an image, and the training reference keeps of its images: never the pixels.

`summary` is the ONE function that turns a model input and its CNN embedding into the logged image
summary (serving logs it for every prediction, training logs it for the reference sample, so both
sides of an image-drift comparison are computed the same way): SHA-256, byte size, content type,
width/height, per-channel means and standard deviations of the model input, the embedding's
mean/std/norm and a fixed 16-number random projection of it, and a tiny thumbnail (a 16x16 PNG,
base64: a derivative for the drift report's sample strip, not the image).
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np

EMBED_DIMS = 16  # logged projection of the CNN embedding (what image drift compares)
EMBED_SEED = 20_261_127  # fixed: the projection is the same in every process and release
THUMB_SIDE = 16  # pixels a side of the logged thumbnail


@lru_cache(maxsize=4)
def projection(dim: int) -> np.ndarray:
    """A fixed (dim, 16) Gaussian random projection (seeded), scaled to keep distances on average."""
    rng = np.random.default_rng([EMBED_SEED, dim])
    return (rng.standard_normal((dim, EMBED_DIMS)) / np.sqrt(EMBED_DIMS)).astype(np.float64)


def thumbnail(x: np.ndarray, side: int = THUMB_SIDE) -> str:
    """(3, H, W) model input in [0, 1] -> a `side` x `side` PNG as base64 text (box-filtered)."""
    from PIL import Image

    rgb = np.round(np.clip(np.asarray(x, dtype=np.float64), 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
    im = Image.fromarray(rgb).resize((side, side), Image.Resampling.BOX)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def summary(img, embedding: np.ndarray) -> dict:
    """The logged summary of one decoded image (`serving.image.DecodedImage` fields) and its embedding."""
    z = np.asarray(embedding, dtype=np.float64)
    flat = img.x.reshape(3, -1).astype(np.float64)
    r = lambda v: [round(float(a), 6) for a in v]  # noqa: E731
    return {
        "sha256": img.sha256,
        "bytes": img.nbytes,
        "content_type": img.content_type,
        "width": img.width,
        "height": img.height,
        "channel_means": r(flat.mean(1)),
        "channel_stds": r(flat.std(1)),
        "embedding": {
            "dim": int(z.size),
            "mean": round(float(z.mean()), 6),
            "std": round(float(z.std()), 6),
            "norm": round(float(np.linalg.norm(z)), 6),
            "projection": r(z @ projection(z.size)),
        },
        "thumbnail_png": thumbnail(img.x),
    }
