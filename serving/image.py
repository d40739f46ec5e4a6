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
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
from churnops.image.quantize import INT8_ARTIFACT, REPORT_ARTIFACT
from churnops.image.summary import EMBED_DIMS, EMBED_SEED, summary  # noqa: F401  (the one summary function)
from churnops.redact import redact
from churnops.registry import client
from serving.inference import BadInput


class ImageModelError(RuntimeError):
    """The image model named cannot be loaded or is not a model of the served contract."""


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


# ---- the model ---------------------------------------------------------------------------------------


class ImageBundle:
    """The ONNX CNN and its metadata; quacks like `churnops.bundle.Bundle` where serving describes models."""

    runtime = batch_runtime = "onnx"
    native_min_rows = 0
    threshold = None  # a class is the argmax, there is no decision threshold

    def __init__(self, onnx_model: bytes | str, meta: dict, precision: str = "float"):
        """`onnx_model`: the bytes, or the path of model.onnx (MLflow keeps the weights beside it as external data);
        `precision`: float, or int8 for the quantized model (what answers report)."""
        from churnops.image.model import onnx_session

        self.meta = meta
        self.precision = precision
        self.classes = [str(c) for c in meta["classes"]]
        self.session = onnx_session(onnx_model, threads=1)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) -> (probabilities (N, classes), embedding (N, D)), float32."""
        p, z = self.session.run(["probabilities", "embedding"], {"image": np.ascontiguousarray(X, dtype=np.float32)})
        return p, z


def _run_of(uri: str, s) -> str:
    """The MLflow run behind `runs:/<id>/...` or a registered `models:/<name>@<alias>` / `models:/<name>/<v>`."""
    if uri.startswith("runs:/"):
        return uri[len("runs:/") :].split("/", 1)[0]
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        c = client(s)
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = c.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            mv = c.get_model_version(name, version)
        else:
            raise ImageModelError(f"{uri}: name a registered version or alias (models:/<name>@<alias>)")
        if not mv.run_id:
            raise ImageModelError(f"{uri}: the registered version has no run (image_meta.json lives in the run)")
        return str(mv.run_id)
    raise ImageModelError(f"{uri}: expected runs:/, models:/ or a local folder")


def int8_model_file(uri: str, run_id: str, local: Path | None, dst: Path, s) -> Path:
    """The int8 ONNX file of the model `uri` (`model_int8.onnx` in its run, or in its local folder), for
    IMAGE_MODEL_PRECISION=int8; ModelLoadError naming the version when it has none."""
    from serving.model import ModelLoadError

    missing = (
        f"IMAGE_MODEL_PRECISION=int8 but {uri} has no int8 model ({INT8_ARTIFACT} in run {run_id or local}): its "
        f"quantization was off or failed its gate (see {REPORT_ARTIFACT} in the run); retrain with "
        f"IMAGE_QUANTIZATION=static, or serve IMAGE_MODEL_PRECISION=float"
    )
    if local is not None:
        found = sorted(local.rglob(INT8_ARTIFACT))
        if not found:
            raise ModelLoadError(missing)
        return found[0]
    import mlflow

    try:
        names = {a.path for a in mlflow.MlflowClient(s.mlflow_tracking_uri).list_artifacts(run_id)}
        if INT8_ARTIFACT not in names:
            raise ModelLoadError(missing)
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{INT8_ARTIFACT}", dst_path=str(dst))
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot download the int8 model of {uri}: {type(exc).__name__}: {redact(exc)[:300]}"
        ) from exc


def load_image_model(uri: str, route: str, s, contract, cache_dir: Path | None = None):
    """Download and check the image model `uri`; returns a `serving.model.LoadedModel` (ModelLoadError on failure)."""
    from serving.model import LoadedModel, ModelLoadError, _registry_info

    local = Path(uri.removeprefix("file://")) if "://" not in uri or uri.startswith("file://") else None
    tmp = None
    try:
        if local is not None and local.exists():
            root, run_id = local, ""
            meta_path = next(iter(sorted(local.rglob("image_meta.json"))), None)
        else:
            import mlflow

            mlflow.set_tracking_uri(s.mlflow_tracking_uri)
            mlflow.set_registry_uri(s.mlflow_tracking_uri)
            base = cache_dir or (s.state_dir / "model-cache")
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="image-model-", dir=base))
            try:
                run_id = _run_of(uri, s)
                root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "model")))
                try:
                    meta_path = Path(
                        mlflow.artifacts.download_artifacts(
                            artifact_uri=f"runs:/{run_id}/image_meta.json", dst_path=str(tmp / "meta")
                        )
                    )
                except Exception:
                    meta_path = None
            except ImageModelError as exc:
                raise ModelLoadError(str(exc)) from exc
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot download image model {uri} from {redact(s.mlflow_tracking_uri)}: "
                    f"{type(exc).__name__}: {redact(exc)[:300]}"
                ) from exc
        onnx_files = sorted(p for p in root.rglob("*.onnx") if p.name != INT8_ARTIFACT)  # the float model
        if meta_path is None or not onnx_files:
            raise ModelLoadError(
                f"{uri} is not an image model (no ONNX file and image_meta.json): DATASET={s.dataset} serves "
                f"image models registered by the image flow (make demo-image)"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("task") != "image_classification" or meta.get("contract_sha256") != contract.fingerprint():
            raise ModelLoadError(
                f"model {uri} was trained with data contract {meta.get('dataset')!r} "
                f"(fingerprint {str(meta.get('contract_sha256'))[:12]}), this server serves {contract.name!r} "
                f"(fingerprint {contract.fingerprint()[:12]}, DATASET={s.dataset}): pin a model of this contract"
            )
        model_file, precision = onnx_files[0], s.image_model_precision
        if precision == "int8":
            is_local = local is not None and local.exists()
            dst = root if is_local else (tmp / "int8")
            model_file = int8_model_file(uri, run_id, local if is_local else None, dst, s)
        try:
            bundle = ImageBundle(str(model_file), meta, precision)  # read whole before the folder goes
            p, _ = bundle.predict(np.zeros((1, 3, contract.image.height, contract.image.width), np.float32))
        except Exception as exc:
            raise ModelLoadError(f"cannot load the image model of {uri}: {type(exc).__name__}: {redact(exc)}") from exc
        if p.shape != (1, len(contract.classes)) or not np.isfinite(p).all():
            raise ModelLoadError(f"image model {uri} returned shape {p.shape} on a smoke-test image")
        run_id = run_id or str(meta.get("run_id") or "")
        version, aliases = (None, []) if local is not None and local.exists() else _registry_info(s, uri, run_id)
        return LoadedModel(bundle=bundle, uri=uri, run_id=run_id, version=version, aliases=aliases, route=route)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- prediction, answer, log record ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePrediction:
    model: object  # serving.model.LoadedModel
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
