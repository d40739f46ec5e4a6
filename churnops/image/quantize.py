"""Int8 quantization of the image CNN's ONNX export, and the gate it must pass to be registered.

`quantize` runs onnxruntime's pre-processing (shape inference, graph optimisation) and then either
static quantization (QDQ format, int8 weights per channel, uint8 activations whose ranges come
from a calibration reader over training images) or dynamic quantization (int8 weights, activation
ranges computed per call). `gate` scores the float and the int8 model on the same labelled sets
(the test split, the test split under each ISP variation, its standard-image renders) and passes
only when the pooled accuracy drops by at most `max_drop` (0.005 = half a point) and the argmax
agrees with the float model on at least `min_agreement` of the test split. The flow logs the int8
model as `model_int8.onnx` in the float model's run (churnops/image/train.py), so one registered
version carries both; the servers load it when `IMAGE_MODEL_PRECISION=int8`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

INT8_ARTIFACT = "model_int8.onnx"  # artifact path in the run of the registered version
REPORT_ARTIFACT = "quantization.json"
METHODS = ("static", "dynamic")
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]  # the per-image standardisation stays in float


class QuantizationGateError(RuntimeError):
    """The int8 model answers too differently from the float one; `report` holds the figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class Calibration:
    """onnxruntime's CalibrationDataReader protocol (`get_next`) over (N, 3, H, W) images, in batches."""

    def __init__(self, X: np.ndarray, batch_size: int = 32):
        self.batches = [
            {"image": np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32)}
            for i in range(0, len(X), batch_size)
        ]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]


def quantize(onnx_bytes: bytes, method: str = "static", calibration: np.ndarray | None = None) -> bytes:
    """The int8 model of `onnx_bytes` (static needs `calibration` images)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"quantization method {method!r}: expected one of {METHODS}")
    if method == "static" and (calibration is None or not len(calibration)):
        raise ValueError("static quantization needs calibration images")
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre))
        if method == "dynamic":
            quantize_dynamic(pre, out, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)
        else:
            quantize_static(
                pre,
                out,
                Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        return out.read_bytes()


def _proba(session, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    from churnops.image.model import onnx_proba

    return np.concatenate([onnx_proba(session, X[i : i + batch_size]) for i in range(0, len(X), batch_size)])


def gate(
    float_bytes: bytes,
    int8_bytes: bytes,
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    max_drop: float = 0.005,
    min_agreement: float = 0.99,
    parity_set: str = "test",
) -> dict:
    """Score both models on every labelled set; the report, or QuantizationGateError carrying it.

    `sets` = {name: (X, y)}; the accuracy drop is judged on all of them pooled, the argmax agreement
    on `parity_set`."""
    from churnops.image.model import onnx_session

    f, q = onnx_session(float_bytes), onnx_session(int8_bytes)
    per_set, right_f, right_q, n = {}, 0, 0, 0
    for name, (X, y) in sets.items():
        pf, pq = _proba(f, X).argmax(1), _proba(q, X).argmax(1)
        per_set[name] = {
            "n": int(len(y)),
            "accuracy_float": float((pf == y).mean()),
            "accuracy_int8": float((pq == y).mean()),
            "argmax_agreement": float((pf == pq).mean()),
        }
        right_f, right_q, n = right_f + int((pf == y).sum()), right_q + int((pq == y).sum()), n + len(y)
    acc_f, acc_q = right_f / max(n, 1), right_q / max(n, 1)
    agreement = per_set[parity_set]["argmax_agreement"]
    report = {
        "n": n,
        "accuracy_float": acc_f,
        "accuracy_int8": acc_q,
        "accuracy_drop": acc_f - acc_q,
        "argmax_agreement": agreement,
        "max_drop": max_drop,
        "min_agreement": min_agreement,
        "bytes_float": len(float_bytes),
        "bytes_int8": len(int8_bytes),
        "sets": per_set,
    }
    problems = []
    if not acc_f - acc_q <= max_drop:
        problems.append(f"accuracy drop {acc_f - acc_q:.4f} > {max_drop} ({acc_f:.4f} -> {acc_q:.4f}, {n} images)")
    if not agreement >= min_agreement:
        problems.append(f"argmax agreement on the {parity_set} split {agreement:.4f} < {min_agreement}")
    report["passed"] = not problems
    if problems:
        report["failure"] = "; ".join(problems)
        raise QuantizationGateError("int8 model refused: " + report["failure"], report)
    return report
