"""Local models of other lines for the /v2 tests (no MLflow): a diabetes regression bundle and a tiny
ONNX image classifier of the raw_digits contract, with what each should answer computed here
(XGBoost's own predictor, numpy), never by the serving code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support.serving import example

IMAGE_CLASSES = [str(i) for i in range(10)]
EMBED = 8


def make_regression_bundle(path: Path):
    """A small XGBoost regressor on the bundled diabetes data, as a bundle; returns (path, model, encoder)."""
    import xgboost as xgb

    from churnops.bundle import export_onnx, write_bundle
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract
    from churnops.datasets_bundled import diabetes
    from churnops.features import FeatureEncoder

    contract = load_contract("diabetes")
    clean = clean_frame(diabetes(), contract)
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    y = clean[contract.target.name].to_numpy(dtype=float)
    model = xgb.XGBRegressor(n_estimators=15, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=0)
    model.fit(X, y)
    meta = {
        "model_name": "diabetes-xgboost",
        "dataset": "diabetes",
        "task": "regression",
        "features": contract.feature_names,
        "contract_fingerprint": contract.fingerprint(),
        "run_id": "localdiabetes",
    }
    write_bundle(path, enc, model, None, meta, export_onnx(model, enc.width))
    return path, model, enc


def image_weights(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(classifier (3*h*w, 10), embedding (3*h*w, EMBED)) weights, seeded."""
    rng = np.random.default_rng(5)
    return (
        rng.normal(0, 0.05, (3 * h * w, len(IMAGE_CLASSES))).astype(np.float32),
        rng.normal(0, 0.05, (3 * h * w, EMBED)).astype(np.float32),
    )


def make_image_model(folder: Path) -> Path:
    """An ONNX model with the image flow's interface (`image` (N, 3, H, W) -> `probabilities`, `embedding`):
    softmax of a seeded linear map of the pixels; plus the `image_meta.json` the loader checks."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from churnops.contract import load_any_contract

    contract = load_any_contract("raw_digits")
    h, w = contract.image.height, contract.image.width
    wc, we = image_weights(h, w)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "wc"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("MatMul", ["flat", "we"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, h, w])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(IMAGE_CLASSES)]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, EMBED]),
        ],
        [numpy_helper.from_array(wc, "wc"), numpy_helper.from_array(we, "we")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = {
        "task": "image_classification",
        "contract_sha256": contract.fingerprint(),
        "classes": IMAGE_CLASSES,
        "model_name": "raw-digits-cnn",
        "dataset": "raw_digits",
        "run_id": "localimage",
    }
    (folder / "image_meta.json").write_text(json.dumps(meta))
    return folder


def image_expected(pixels: np.ndarray) -> np.ndarray:
    """Class probabilities the tiny model gives `pixels` (uint8 [n, H, W, 3]), computed with numpy."""
    n, h, w, _ = pixels.shape
    x = (pixels.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).reshape(n, -1)
    logits = x @ image_weights(h, w)[0]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def churn_rows(n: int) -> list[dict]:
    """`n` distinct valid churn records."""
    return [example(customer_age=30 + i, total_trans_ct=20 + 7 * i, gender="F" if i % 2 else "M") for i in range(n)]
