"""Image sizes read from the file's header, before any pixel is decoded.

A DNG is a TIFF: its image file directories (IFDs) name each image's width, height, samples per
pixel and bits per sample. `tiff_images` walks them (the IFD chain and SubIFDs, each at most once,
at most `MAX_IFDS`) with `struct` only, so a header that claims 20000x20000 costs a few bytes of
reading, never the gigabytes LibRaw would allocate to unpack it. `png_size` reads a PNG's size from
its IHDR chunk the same way (JPEG sizes come from PIL, which reads them lazily from the SOF marker).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_IFDS = 64
MAX_ENTRIES = 4096  # entries in one IFD: a real DNG has a few dozen
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
NEW_SUBFILE_TYPE, WIDTH, LENGTH, BITS, SAMPLES, SUB_IFDS = 254, 256, 257, 258, 277, 330


class HeaderError(ValueError):
    """The header cannot be read (truncated, looping, not a TIFF)."""


@dataclass(frozen=True)
class TiffImage:
    """One IFD that describes an image."""

    width: int
    height: int
    samples: int
    bits: int
    subfile_type: int  # NewSubfileType: bit 0 set = a reduced-resolution preview

    @property
    def full_resolution(self) -> bool:
        return not self.subfile_type & 1


def _values(data: bytes, order: str, typ: int, count: int, field: bytes) -> list[int]:
    """The integer values of one IFD entry (inline or at its offset)."""
    size = TYPE_SIZES.get(typ)
    if size is None or typ in (2, 5, 10, 11, 12) or count > 1 << 16:  # not an integer tag we read
        return []
    n = size * count
    if n <= 4:
        raw = field[:n]
    else:
        (off,) = struct.unpack(order + "I", field)
        if off + n > len(data):
            raise HeaderError(f"a tag's values at offset {off} run past the {len(data)} bytes")
        raw = data[off : off + n]
    fmt = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 13: "I"}[typ]
    return list(struct.unpack(f"{order}{count}{fmt}", raw))


def tiff_images(data: bytes) -> list[TiffImage]:
    """Every image the TIFF/DNG header describes (IFD chain and SubIFDs); HeaderError when unreadable."""
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        raise HeaderError("not a classic TIFF header (II*\\0 or MM\\0*)")
    order = "<" if data[:2] == b"II" else ">"
    (first,) = struct.unpack(order + "I", data[4:8])
    todo, seen, out = [first], set(), []
    while todo:
        off = todo.pop()
        if off == 0 or off in seen:
            continue
        seen.add(off)
        if len(seen) > MAX_IFDS:
            raise HeaderError(f"more than {MAX_IFDS} image file directories")
        if off + 2 > len(data):
            raise HeaderError(f"an image file directory at offset {off} is past the {len(data)} bytes")
        (n,) = struct.unpack(order + "H", data[off : off + 2])
        end = off + 2 + 12 * n
        if n > MAX_ENTRIES or end + 4 > len(data):
            raise HeaderError(f"the image file directory at offset {off} ({n} entries) runs past the data")
        tags: dict[int, list[int]] = {}
        for i in range(n):
            e = off + 2 + 12 * i
            tag, typ, count = struct.unpack(order + "HHI", data[e : e + 8])
            if tag in (NEW_SUBFILE_TYPE, WIDTH, LENGTH, BITS, SAMPLES, SUB_IFDS):
                tags[tag] = _values(data, order, typ, count, data[e + 8 : e + 12])
        todo.extend(tags.get(SUB_IFDS, []))
        todo.append(struct.unpack(order + "I", data[end : end + 4])[0])
        if tags.get(WIDTH) and tags.get(LENGTH):
            out.append(
                TiffImage(
                    width=int(tags[WIDTH][0]),
                    height=int(tags[LENGTH][0]),
                    samples=int((tags.get(SAMPLES) or [1])[0]),
                    bits=max(tags.get(BITS) or [1]),
                    subfile_type=int((tags.get(NEW_SUBFILE_TYPE) or [0])[0]),
                )
            )
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None
