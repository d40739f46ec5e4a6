"""The int8 image model: its gate, its place beside the float model, and serving it on request.

The module's model is tests/image/conftest.py's `image_model` (a small CNN registered with its
static int8 quantization). Expected answers come from ONNX sessions opened here on the bytes the
fixture produced, never from the serving code.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("onnxruntime", reason="the image extra is not installed (pip install -e .[image])")

from churnops.image.dataset import load_arrays  # noqa: E402
from churnops.image.quantize import INT8_ARTIFACT, QuantizationGateError, gate, quantize  # noqa: E402


@pytest.fixture(scope="module")
def labelled(image_model, raw_contract):
    """(X, y) of the fixture's 300 raw digits."""
    return load_arrays(image_model["files"], raw_contract)


def proba(onnx_bytes: bytes, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": np.ascontiguousarray(X, np.float32)})[0]


def test_int8_model_is_smaller_and_agrees_and_passes_a_gate(image_model, labelled):
    X, y = labelled
    report = gate(image_model["onnx"], image_model["int8"], {"test": (X, y)}, max_drop=0.02, min_agreement=0.95)
    want_float = float((proba(image_model["onnx"], X).argmax(1) == y).mean())
    want_int8 = float((proba(image_model["int8"], X).argmax(1) == y).mean())
    assert report["passed"] and report["accuracy_float"] == pytest.approx(want_float)
    assert report["accuracy_int8"] == pytest.approx(want_int8)
    assert report["accuracy_drop"] == pytest.approx(want_float - want_int8)
    assert report["bytes_int8"] == len(image_model["int8"]) < len(image_model["onnx"])
    assert report["argmax_agreement"] >= 0.95


def test_a_broken_quantization_fails_the_gate(image_model, labelled):
    """Calibrated on blank frames, the activation ranges are wrong: the gate refuses the int8 model."""
    X, y = labelled
    broken = quantize(image_model["onnx"], "static", np.full((32, 3, 32, 32), 0.5, np.float32))
    with pytest.raises(QuantizationGateError, match="int8 model refused: accuracy drop") as info:
        gate(image_model["onnx"], broken, {"test": (X, y)})
    assert not info.value.report["passed"] and info.value.report["accuracy_drop"] > 0.005


def test_the_gate_refuses_disagreement_even_without_an_accuracy_drop(image_model, labelled):
    X, y = labelled
    float_bytes = image_model["onnx"]
    with pytest.raises(QuantizationGateError, match="argmax agreement on the test split"):
        # the float model scored against itself on shuffled labels: no drop, but an impossible agreement floor
        gate(float_bytes, float_bytes, {"test": (X, np.roll(y, 1))}, max_drop=0.0, min_agreement=1.01)


def test_the_int8_model_is_logged_beside_the_float_one(image_model):
    from churnops.registry import client

    s = image_model["settings"]
    c = client(s)
    mv = c.get_model_version(s.model_name, image_model["version"])
    assert mv.tags["int8_artifact"] == INT8_ARTIFACT and mv.run_id == image_model["run_id"]
    names = {a.path for a in c.list_artifacts(image_model["run_id"])}
    assert {INT8_ARTIFACT, "quantization.json", "image_meta.json"} <= names


def png(x: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(x.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_serving_with_int8_answers_and_says_so(image_model, labelled):
    from PIL import Image

    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = image_model["settings"].model_copy(update={"image_model_precision": "int8"})
    X, _ = labelled
    mm = ModelManager(s)
    mm.load_initial()
    app = create_app(s, store=SQLiteStore(s.state_dir / "int8.db"), models=mm, start_background=False)
    body = png(X[3])
    r = app.test_client().post("/predict/image", data=body, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()
    x = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32) / 255
    want = proba(image_model["int8"], x.transpose(2, 0, 1)[None])[0]
    assert out["precision"] == "int8" and out["model_version"] == image_model["version"]
    assert np.allclose([out["probabilities"][str(i)] for i in range(10)], want, atol=1e-6)


def test_int8_refused_at_load_when_the_version_has_none(image_model, tmp_path, raw_contract):
    """A model folder with only the float ONNX: IMAGE_MODEL_PRECISION=int8 refuses it, naming why; float loads."""
    from serving.image import load_image_model
    from serving.model import ModelLoadError

    (tmp_path / "model.onnx").write_bytes(image_model["onnx"])
    meta = {"task": "image_classification", "classes": raw_contract.classes, "dataset": "raw_digits"}
    (tmp_path / "image_meta.json").write_text(json.dumps(meta | {"contract_sha256": raw_contract.fingerprint()}))
    s = image_model["settings"]
    assert load_image_model(str(tmp_path), "champion", s, raw_contract).bundle.precision == "float"
    int8 = s.model_copy(update={"image_model_precision": "int8"})
    with pytest.raises(ModelLoadError, match="IMAGE_MODEL_PRECISION=int8 but .* has no int8 model"):
        load_image_model(str(tmp_path), "champion", int8, raw_contract)
    (tmp_path / INT8_ARTIFACT).write_bytes(image_model["int8"])
    loaded = load_image_model(str(tmp_path), "champion", int8, raw_contract)
    assert loaded.bundle.precision == "int8"
    p, _ = loaded.bundle.predict(np.zeros((1, 3, 32, 32), np.float32))
    assert np.allclose(p, proba(image_model["int8"], np.zeros((1, 3, 32, 32))), atol=1e-6)
