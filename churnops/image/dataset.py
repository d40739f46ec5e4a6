"""Image data sets in the ImageFolder layout: `<root>/<class>/<file>.{dng,png,jpg,jpeg}`.

The version of a data set is the SHA-256 over every file's relative path and bytes (sorted by
path), so renaming, relabelling (moving between class folders) or changing one pixel changes it.
Raw files (DNG) are read with rawpy (LibRaw) and go through the ISP; PNG/JPG skip it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from churnops.image.contract import ImageContract, IspSpec
from churnops.image.isp import RawFrame, UnsupportedRawError, process

RAW_SUFFIXES = {".dng"}


class ImageDataError(ValueError):
    """A data-set folder or image file that breaks the image contract; the message names it."""


@dataclass(frozen=True)
class ImageFile:
    path: Path
    rel: str  # POSIX path relative to the root, e.g. "3/0007.dng"
    label: int  # index into the contract's classes


def list_images(root: Path, contract: ImageContract) -> list[ImageFile]:
    """Every image under `root/<class>/`, sorted by relative path; refuses unknown classes and files."""
    root = Path(root)
    if not root.is_dir():
        raise ImageDataError(f"image data folder {root} not found (expected <class>/<file> under it)")
    classes = {c: i for i, c in enumerate(contract.classes)}
    files: list[ImageFile] = []
    for p in sorted(root.rglob("*")):
        if p.is_dir() or p.name.startswith("."):
            continue
        rel = p.relative_to(root).as_posix()
        parts = rel.split("/")
        if len(parts) != 2:
            raise ImageDataError(f"{root}: {rel} is not in the <class>/<file> layout")
        if parts[0] not in classes:
            raise ImageDataError(
                f"{root}: folder {parts[0]!r} is not a class of contract {contract.name} {contract.classes}"
            )
        if p.suffix.lower() not in contract.extensions:
            raise ImageDataError(f"{root}: {rel} has extension {p.suffix!r}; expected one of {contract.extensions}")
        files.append(ImageFile(p, rel, classes[parts[0]]))
    counts = np.bincount([f.label for f in files], minlength=len(classes))
    short = [c for c, n in zip(contract.classes, counts) if n < contract.min_images_per_class]
    if short:
        raise ImageDataError(f"{root}: classes {short} have fewer than {contract.min_images_per_class} images")
    return files


def dataset_sha256(files: list[ImageFile]) -> str:
    """SHA-256 over (relative path, byte length, bytes) of every file, in path order."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        data = f.path.read_bytes()
        h.update(f.rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def read_raw(source: Path | bytes, name: str = "raw image") -> RawFrame:
    """Read a DNG with rawpy: Bayer data, per-site black, white, camera WB and colour matrix."""
    import rawpy

    try:
        handle = rawpy.imread(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise ImageDataError(f"{name}: not a readable raw file ({type(exc).__name__}: {exc})") from exc
    try:
        return _frame(handle, name)
    except rawpy.LibRawError as exc:  # the header parsed but the data did not: truncated or corrupt
        raise ImageDataError(f"{name}: truncated or corrupt raw data ({type(exc).__name__}: {exc})") from exc


def _frame(handle, name: str) -> RawFrame:
    """The RawFrame of an opened rawpy handle (closes it); UnsupportedRawError names what is off."""
    with handle as r:
        if r.num_colors != 3:
            raise UnsupportedRawError(f"{name}: {r.num_colors}-colour sensor; only 3-colour Bayer raw is supported")
        desc = r.color_desc.decode()
        pattern = np.asarray(r.raw_pattern)
        if pattern.shape != (2, 2):
            raise UnsupportedRawError(f"{name}: CFA tile {pattern.shape} is not 2x2 Bayer")
        cfa = "".join(desc[i] for i in pattern.ravel())
        if cfa != "RGGB":
            raise UnsupportedRawError(f"{name}: CFA pattern {cfa} not supported (supported: RGGB)")
        bayer = np.array(r.raw_image_visible, dtype=np.uint16)
        if bayer.shape[0] % 2 or bayer.shape[1] % 2:
            raise UnsupportedRawError(f"{name}: odd raw size {bayer.shape}; the Bayer tile needs even sides")
        black = np.asarray(r.black_level_per_channel, dtype=np.float32)[pattern]
        wb = np.asarray(r.camera_whitebalance[:3], dtype=np.float32)
        if not np.all(wb > 0):
            wb = np.ones(3, np.float32)  # no AsShotNeutral: leave the channels as they are
        return RawFrame(
            bayer=bayer,
            cfa=cfa,
            black=black,
            white=float(r.white_level),
            wb=wb / wb[1],
            rgb_cam=np.asarray(r.color_matrix, dtype=np.float32)[:, :3],
        )


def rgb_pixels(im) -> np.ndarray:
    """An opened PIL image -> (H, W, 3) float32 in [0, 1]: the one conversion of PNG/JPEG pixels, used by
    training (`read_standard`, churnops.image.standard) and by the server (serving/image.py) alike."""
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_standard(source: Path | bytes, name: str = "image") -> np.ndarray:
    """PNG/JPG -> (H, W, 3) float32 in [0, 1] (no ISP: these are already display-referred)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return rgb_pixels(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDataError(f"{name}: not a readable PNG/JPEG image ({exc})") from exc


def load_image(path: Path, contract: ImageContract, isp: IspSpec | None = None) -> np.ndarray:
    """One file -> (3, H, W) float32 model input; raw files through the ISP."""
    if path.suffix.lower() in RAW_SUFFIXES:
        rgb = process(read_raw(path, str(path)), isp or contract.isp)
    else:
        rgb = read_standard(path, str(path))
    want = (contract.image.height, contract.image.width)
    if rgb.shape[:2] != want:
        raise ImageDataError(
            f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}; contract {contract.name} expects {want[1]}x{want[0]}"
        )
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def load_arrays(
    files: list[ImageFile], contract: ImageContract, isp: IspSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) float32 inputs and (N,) int64 labels."""
    X = (
        np.stack([load_image(f.path, contract, isp) for f in files])
        if files
        else np.empty((0, 3, contract.image.height, contract.image.width), np.float32)
    )
    return X, np.array([f.label for f in files], dtype=np.int64)


def stratified_split(
    labels: np.ndarray, test_size: float, val_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test), stratified by class, deterministic in the seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=val_size / (1 - test_size), stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)
