"""Image content types, told from the leading bytes or a Content-Type header, and a decoded image
(the model input with what is known of its file): shared by the servers (`serving.image`) and the
image monitoring reference (`churnops.image.monitor`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DNG, PNG, JPEG = "image/x-adobe-dng", "image/png", "image/jpeg"
CONTENT_TYPES = (DNG, PNG, JPEG)
ALIASES = {"image/dng": DNG, "image/x-dng": DNG, "image/jpg": JPEG, "image/pjpeg": JPEG}


def sniff(data: bytes) -> str | None:
    """The content type the leading bytes show (DNG is TIFF-based), or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return DNG
    return None


def content_type_of(header: str | None) -> str | None:
    """`image/png; charset=x` -> `image/png` (aliases mapped); None when absent."""
    if not header:
        return None
    base = header.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base) or None


@dataclass(frozen=True)
class DecodedImage:
    x: np.ndarray  # (3, H, W) float32 in [0, 1]: the model input (ISP output for DNG)
    content_type: str
    sha256: str
    nbytes: int
    width: int
    height: int
