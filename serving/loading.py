"""Model loading for every model line the servers serve: THE place a model is downloaded and loaded.

    load_model(uri, route, settings) -> LoadedModel

`uri` is `runs:/<id>/model`, `models:/<name>@<alias>` or `models:/<name>/<version>` (downloaded
from MLflow into a temporary folder under `<state_dir>/model-cache`, removed once loaded), or a
local folder. What is loaded follows the served data set (serving/tasks.py):

- a tabular contract: the training flow's bundle (`churnops.bundle.Bundle`: the ONNX model, else
  the native XGBoost booster; the pyfunc wrapper is only MLflow's packaging of the same bundle),
  refused unless trained with the served contract, smoke-tested on one all-missing row;
- an image contract: the image flow's ONNX CNN plus the run's `image_meta.json` (`ImageBundle`),
  refused unless its contract fingerprint is the served one's, smoke-tested on a blank image.

Either way the result is a `LoadedModel` whose `bundle` is a `ServedBundle` (what /model describes);
a `ModelSet` is what a server answers with (champion, optional canary challenger, `pick` by
request id). Building sets, reloads and following aliases are serving/model.py's; decoding images
is serving/image.py's (neither is imported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from churnops.bundle import Bundle
from churnops.contract import load_contract
from churnops.image.quantize import INT8_ARTIFACT, REPORT_ARTIFACT
from churnops.redact import redact
from churnops.registry import client, pin_problem
from churnops.settings import Settings, get_settings
from churnops.speed import enabled as speed_enabled
from serving.tasks import image_contract

log = logging.getLogger(__name__)


class ServedBundle(Protocol):
    """What serving needs of any loaded model (tabular `churnops.bundle.Bundle`, `ImageBundle`)."""

    meta: dict
    runtime: str
    batch_runtime: str
    native_min_rows: int

    @property
    def threshold(self) -> Any: ...


class ModelLoadError(RuntimeError):
    """The model named could not be downloaded or loaded."""


class ImageModelError(RuntimeError):
    """The image model named cannot be loaded or is not a model of the served contract."""


@dataclass
class LoadedModel:
    bundle: ServedBundle  # churnops.bundle.Bundle or ImageBundle
    uri: str
    run_id: str
    version: str | None
    aliases: list[str]
    route: str
    loaded_at: float = field(default_factory=time.time)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def describe(self) -> dict:
        meta = self.bundle.meta
        return {
            "route": self.route,
            "uri": self.uri,
            "run_id": self.run_id,
            "version": self.version,
            "aliases": self.aliases,
            "threshold": self.threshold,
            "runtime": self.bundle.runtime,
            "batch_runtime": self.bundle.batch_runtime,
            "native_batch_min_rows": self.bundle.native_min_rows,
            "test_metrics": meta.get("test_metrics", {}),
            "model_name": meta.get("model_name"),
            "dataset": meta.get("dataset"),
            "loaded_at": self.loaded_at,
        }


def route_fraction(request_id: str) -> float:
    """sha256(request_id) as a number in [0, 1)."""
    return int.from_bytes(hashlib.sha256(str(request_id).encode()).digest()[:8], "big") / 2.0**64


@dataclass(frozen=True)
class ModelSet:
    champion: LoadedModel
    challenger: LoadedModel | None = None
    canary_fraction: float = 0.0
    generation: int = 0

    def pick(self, request_id: str) -> LoadedModel:
        if (
            self.challenger is not None
            and self.canary_fraction > 0
            and route_fraction(request_id) < self.canary_fraction
        ):
            return self.challenger
        return self.champion

    def models(self) -> list[LoadedModel]:
        return [m for m in (self.champion, self.challenger) if m is not None]

    def describe(self) -> dict:
        return {
            "champion": self.champion.describe(),
            "challenger": self.challenger.describe() if self.challenger else None,
            "canary_fraction": self.canary_fraction if self.challenger else 0.0,
            "generation": self.generation,
        }


# ---- loading ------------------------------------------------------------------------------------


def find_bundle(root: Path) -> Path:
    for cand in (root / "artifacts" / "bundle", root / "bundle", root):
        if (cand / "meta.json").exists():
            return cand
    hits = sorted(root.rglob("meta.json"))
    if hits:
        return hits[0].parent
    raise ModelLoadError(f"no model bundle (meta.json) inside the downloaded artifacts at {root}")


def registry_info(s: Settings, uri: str, run_id: str) -> tuple[str | None, list[str]]:
    """(version, aliases) of the registered version behind `uri` / `run_id`, best effort."""
    try:
        c = client(s)
        if uri.startswith("models:/"):
            rest = uri[len("models:/") :]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = c.get_model_version_by_alias(name, alias)
            else:
                name, version = rest.split("/", 1)
                mv = c.get_model_version(name, version)
            return str(mv.version), sorted(getattr(mv, "aliases", []) or [])
        versions = c.search_model_versions(f"run_id='{run_id}'")
        versions = [v for v in versions if v.name == s.model_name] or list(versions)
        if versions:
            mv = max(versions, key=lambda v: int(v.version))
            full = c.get_model_version(mv.name, mv.version)
            return str(full.version), sorted(getattr(full, "aliases", []) or [])
    except Exception as exc:  # registry info is descriptive only
        log.warning("no registry info for %s: %s", uri, redact(exc))
    return None, []


def load_model(uri: str, route: str, settings: Settings | None = None, cache_dir: Path | None = None) -> LoadedModel:
    """Download `uri` (runs:/, models:/, or a local folder) and load the model of the served line:
    the image CNN when DATASET names an image contract (serving/tasks.py), else the tabular bundle."""
    s = settings or get_settings()
    contract = image_contract(s)
    if contract is not None:
        return load_image_model(uri, route, s, contract, cache_dir)
    return load_tabular_model(uri, route, s, cache_dir)


def local_folder(uri: str) -> Path | None:
    """The existing local folder a model uri names (a path or file://); None for a registry or run uri."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    local = Path(uri.removeprefix("file://"))
    return local if local.exists() else None


def mlflow_download(uri: str, dst: Path) -> str:
    """The local path of artifact `uri` downloaded into `dst` (the tracking URI already set)."""
    import mlflow

    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))


@contextmanager
def download_folder(s: Settings, cache_dir: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh folder under the model cache (`<state_dir>/model-cache`) for a download from the
    server's MLflow (tracking and registry URIs set), removed afterwards: a model is read whole first."""
    import mlflow

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    base = cache_dir or (s.state_dir / "model-cache")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tabular_model(uri: str, route: str, s: Settings, cache_dir: Path | None = None) -> LoadedModel:
    """A tabular bundle (`churnops.bundle.Bundle`: ONNX preferred, else the native booster; 1 thread),
    checked against the served contract and smoke-tested on one all-missing row."""
    local = local_folder(uri)
    with ExitStack() as stack:
        if local is not None:
            root = local
        else:
            tmp = stack.enter_context(download_folder(s, cache_dir, "model-"))
            try:
                root = Path(mlflow_download(uri, tmp))
            except Exception as exc:
                problem = pin_problem(s) if uri == f"runs:/{s.run_id}/model" else None
                if problem:
                    raise ModelLoadError(f"cannot download {uri}: {redact(problem)}") from exc
                raise ModelLoadError(
                    f"cannot download {uri} from {redact(s.mlflow_tracking_uri)}: "
                    f"{type(exc).__name__}: {redact(exc)[:300]}"
                ) from exc
        bdir = find_bundle(root)
        try:
            bundle = Bundle.load(
                bdir,
                prefer_onnx=True,
                threads=1,
                native_min_rows=s.native_batch_min_rows,
                compiled_trees=s.compiled_trees and speed_enabled(s),  # FAST_PATHS=off: XGBoost's predictor
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load the model bundle of {uri}: {type(exc).__name__}: {redact(exc)}") from exc
        check_contract(bundle.meta, uri, s)
        # smoke test: one all-missing row must give a probability
        p = bundle.predict_matrix(np.zeros((1, bundle.encoder.width), dtype=np.float32))
        if p.shape != (1,) or not np.isfinite(p).all():
            raise ModelLoadError(f"model {uri} returned {p!r} on a smoke-test row")
        run_id = str(bundle.meta.get("run_id") or "")
        if not run_id and uri.startswith("runs:/"):
            run_id = uri.split("/")[1]
        version, aliases = (None, []) if local is not None else registry_info(s, uri, run_id)
        return LoadedModel(bundle=bundle, uri=uri, run_id=run_id, version=version, aliases=aliases, route=route)


def check_contract(meta: dict, uri: str, s: Settings) -> None:
    """Refuse a model trained with another data contract than the one this server validates with."""
    fp = meta.get("contract_fingerprint")
    if not fp:  # models registered before models carried their contract
        return
    served = load_contract(s.dataset)
    if fp != served.fingerprint():
        raise ModelLoadError(
            f"model {uri} was trained with data contract {meta.get('dataset')!r} (fingerprint {fp[:12]}), "
            f"this server validates requests with {served.name!r} (fingerprint {served.fingerprint()[:12]}, "
            f"DATASET={s.dataset}): serve it with that contract, or pin a model of this one"
        )


# ---- image models (the ONNX CNN the image flow registers) ---------------------------------------------------------------------------------------


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


def run_of(uri: str, s) -> str:
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
        return Path(mlflow_download(f"runs:/{run_id}/{INT8_ARTIFACT}", dst))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot download the int8 model of {uri}: {type(exc).__name__}: {redact(exc)[:300]}"
        ) from exc


def load_image_model(uri: str, route: str, s: Settings, contract, cache_dir: Path | None = None) -> LoadedModel:
    """Download and check the image model `uri` of `contract`; ModelLoadError names what is wrong."""
    local = local_folder(uri)
    with ExitStack() as stack:
        if local is not None:
            root, run_id = local, ""
            meta_path = next(iter(sorted(local.rglob("image_meta.json"))), None)
        else:
            tmp = stack.enter_context(download_folder(s, cache_dir, "image-model-"))
            try:
                run_id = run_of(uri, s)
                root = Path(mlflow_download(uri, tmp / "model"))
                try:
                    meta_path = Path(mlflow_download(f"runs:/{run_id}/image_meta.json", tmp / "meta"))
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
            model_file = int8_model_file(uri, run_id, local, root if local is not None else tmp / "int8", s)
        try:
            bundle = ImageBundle(str(model_file), meta, precision)  # read whole before the folder goes
            p, _ = bundle.predict(np.zeros((1, 3, contract.image.height, contract.image.width), np.float32))
        except Exception as exc:
            raise ModelLoadError(f"cannot load the image model of {uri}: {type(exc).__name__}: {redact(exc)}") from exc
        if p.shape != (1, len(contract.classes)) or not np.isfinite(p).all():
            raise ModelLoadError(f"image model {uri} returned shape {p.shape} on a smoke-test image")
        run_id = run_id or str(meta.get("run_id") or "")
        version, aliases = (None, []) if local is not None else registry_info(s, uri, run_id)
        return LoadedModel(bundle=bundle, uri=uri, run_id=run_id, version=version, aliases=aliases, route=route)
