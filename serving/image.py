"""Image classification serving core: decode and check one image, load the ONNX CNN, predict, summarise.

Shared by `POST /predict/image` (serving/image_http.py) and the stream's `image_uri` records
(serving/image_stream.py). Every problem with an input raises `BadInput` naming it (a 4xx, or a
dead letter with its `reason` as reason_code):

- empty body (400 empty_body); bytes that are no DNG/PNG/JPEG (422 not_an_image); bytes of another
  format than the declared Content-Type (415 content_type_mismatch);
- a DNG LibRaw cannot read to the end (422 unreadable_image), a CFA layout the ISP does not
  demosaic (422 unsupported_raw), a size other than the contract's (422 wrong_size; every format is
  refused from its header, before the pixels are decoded: a DNG from its TIFF tags
  (churnops.image.header) before LibRaw unpacks anything).

The model is what the image flow registers (churnops/image/train.py): an MLflow ONNX model
(`image` (N, 3, H, W) -> `probabilities`, `embedding`) plus the run's `image_meta.json`; it is
refused unless its contract fingerprint is the served contract's. A log record carries an image
summary in place of `features` (SHA-256, byte size, width/height, per-channel means and standard
deviations of the model input, the embedding's mean/std/norm and a fixed 16-number random
projection of it, a 16x16 thumbnail; `churnops.image.summary`), never the pixels.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass

import numpy as np

from churnops.image.dataset import ImageDataError, read_raw, rgb_pixels
from churnops.image.formats import (  # noqa: F401  (CONTENT_TYPES, content_type_of: the image routes' names)
    CONTENT_TYPES,
    DNG,
    JPEG,
    PNG,
    DecodedImage,
    content_type_of,
    sniff,
)
from churnops.image.header import HeaderError, png_size, tiff_images
from churnops.image.isp import UnsupportedRawError, process
from churnops.image.summary import EMBED_DIMS, EMBED_SEED, summary  # noqa: F401  (the one summary function)
from serving.inference import BadInput
from serving.loading import LoadedModel, load_image_model  # noqa: F401  (load_image_model: re-exported, its old home)

# ---- decoding ----------------------------------------------------------------------------------------


def _wrong_size(contract, name: str, width: int, height: int) -> BadInput:
    want_w, want_h = contract.image.width, contract.image.height
    return BadInput(
        "wrong image size",
        {name: f"image is {width}x{height}; contract {contract.name} expects {want_w}x{want_h} (width x height)"},
        "wrong_size",
        422,
    )


def check_raw_header(data: bytes, contract, name: str) -> None:
    """Refuse a DNG from its TIFF tags before LibRaw sees it: every image it describes must fit the
    contract's size (a header claiming 20000x20000 would make LibRaw allocate gigabytes), its
    full-resolution image must be that size, samples and bits within what a raw frame has."""
    want_w, want_h = contract.image.width, contract.image.height
    try:
        images = tiff_images(data)
    except HeaderError as exc:
        raise BadInput(
            "unreadable DNG image",
            {name: f"truncated or corrupt raw data (TIFF header: {exc})"},
            "unreadable_image",
            422,
        ) from exc
    if not images:
        raise BadInput(
            "unreadable DNG image", {name: "the TIFF header names no image width and height"}, "unreadable_image", 422
        )
    for im in images:
        if im.width * im.height > want_w * want_h or im.width > want_w or im.height > want_h:
            raise BadInput(
                "image too large",
                {
                    name: f"header claims an image of {im.width}x{im.height}; contract {contract.name} expects "
                    f"{want_w}x{want_h} (width x height): refused before decoding"
                },
                "wrong_size",
                422,
            )
        if not 1 <= im.samples <= 4 or not 1 <= im.bits <= 32:
            raise BadInput(
                "unsupported raw image",
                {name: f"{im.samples} samples of {im.bits} bits per pixel: expected 1-4 samples of at most 32 bits"},
                "unsupported_raw",
                422,
            )
    full = [im for im in images if im.full_resolution] or images
    main = max(full, key=lambda im: im.width * im.height)
    if (main.width, main.height) != (want_w, want_h):
        raise _wrong_size(contract, name, main.width, main.height)


def _raw_rgb(data: bytes, contract, name: str) -> np.ndarray:
    check_raw_header(data, contract, name)  # sizes from the tags: nothing decoded yet
    try:
        frame = read_raw(data, name)
    except UnsupportedRawError as exc:
        raise BadInput("unsupported raw image", {name: str(exc)}, "unsupported_raw", 422) from exc
    except ImageDataError as exc:
        raise BadInput("unreadable DNG image", {name: str(exc)}, "unreadable_image", 422) from exc
    h, w = frame.bayer.shape
    if (h, w) != (contract.image.height, contract.image.width):
        raise _wrong_size(contract, name, w, h)
    try:
        return process(frame, contract.isp)
    except UnsupportedRawError as exc:
        raise BadInput("unsupported raw image", {name: str(exc)}, "unsupported_raw", 422) from exc


def _standard_rgb(data: bytes, ctype: str, contract, name: str) -> np.ndarray:
    from PIL import Image

    label = "PNG" if ctype == PNG else "JPEG"
    size = png_size(data) if ctype == PNG else None
    if size is not None and size != (contract.image.width, contract.image.height):
        raise _wrong_size(contract, name, *size)  # from the IHDR chunk, before PIL opens it
    try:
        with Image.open(io.BytesIO(data), formats=[label]) as im:
            w, h = im.size
            if (h, w) != (contract.image.height, contract.image.width):
                raise _wrong_size(contract, name, w, h)  # before the pixels are decoded
            return rgb_pixels(im)  # the conversion training uses (churnops.image.standard)
    except BadInput:
        raise
    except Exception as exc:  # truncated data, bad chunks, decompression bombs: the file's fault
        raise BadInput(
            f"unreadable {label} image",
            {name: f"not a readable {label} image ({type(exc).__name__}: {exc})"[:300]},
            "unreadable_image",
            422,
        ) from exc


def decode(data: bytes, declared: str | None, contract, name: str = "body") -> DecodedImage:
    """Bytes (of the declared content type, or sniffed when None) -> the model input; BadInput names the problem."""
    if not data:
        raise BadInput(
            "empty body", {name: "expected the bytes of a DNG, PNG or JPEG image, got 0 bytes"}, "empty_body", 400
        )
    found = sniff(data)
    if declared is not None and declared not in CONTENT_TYPES:
        raise BadInput(
            "unsupported content type",
            {name: f"content type {declared!r} is not one of {', '.join(CONTENT_TYPES)}"},
            "unsupported_media_type",
            415,
        )
    if found is None:
        what = declared or "DNG, PNG or JPEG"
        raise BadInput(
            "not an image",
            {name: f"{len(data)} bytes that are not a {what} image (starts {data[:8]!r})"},
            "not_an_image",
            422,
        )
    if declared is not None and declared != found:
        raise BadInput(
            "content type does not match the image",
            {name: f"declared {declared} but the bytes are {found}"},
            "content_type_mismatch",
            415,
        )
    rgb = _raw_rgb(data, contract, name) if found == DNG else _standard_rgb(data, found, contract, name)
    if rgb.shape != (contract.image.height, contract.image.width, 3):
        raise _wrong_size(contract, name, rgb.shape[1], rgb.shape[0])
    return DecodedImage(
        x=np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32),
        content_type=found,
        sha256=hashlib.sha256(data).hexdigest(),
        nbytes=len(data),
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
    )


# ---- prediction, answer, log record ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePrediction:
    model: LoadedModel
    proba: np.ndarray  # (classes,)
    embedding: np.ndarray  # (D,)

    @property
    def index(self) -> int:
        return int(self.proba.argmax())

    @property
    def label(self) -> str:
        return self.model.bundle.classes[self.index]


def predict(ms, request_id: str, img: DecodedImage) -> ImagePrediction:
    """The model the request routes to (canary by request_id), on one image."""
    m = ms.pick(request_id)
    p, z = m.bundle.predict(img.x[None])
    return ImagePrediction(m, p[0], z[0])


def answer(pred: ImagePrediction, request_id: str) -> dict:
    m = pred.model
    return {
        "request_id": request_id,
        "class": pred.label,
        "class_index": pred.index,
        "probability": float(pred.proba[pred.index]),
        "probabilities": {c: float(v) for c, v in zip(m.bundle.classes, pred.proba.tolist())},
        "model_name": m.bundle.meta.get("model_name"),
        "model_version": m.version,
        "model_run_id": m.run_id,
        "route": m.route,
        "precision": getattr(m.bundle, "precision", "float"),
    }


def log_entry(
    _id: str,
    request_id: str,
    pred: ImagePrediction,
    img: DecodedImage,
    source: str,
    latency_ms: float,
    ts=None,
    **extra,
) -> dict:
    """A prediction-log record like the tabular ones (decision = class index), `features` = the image summary."""
    m = pred.model
    return {
        "_id": _id,
        "ts": ts if ts is not None else time.time(),
        "request_id": request_id,
        "source": source,
        "model_run_id": m.run_id,
        "model_version": m.version,
        "route": m.route,
        "task": "image_classification",
        "features": summary(img, pred.embedding),
        "probability": float(pred.proba[pred.index]),
        "decision": pred.index,
        "predicted_class": pred.label,
        "latency_ms": round(latency_ms, 3),
        **extra,
    }
