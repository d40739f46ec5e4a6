"""bench-image: the image track on the full raw digits, through the real flow and an MLflow server.

Generates the 1,797 raw DNG digits (in a temporary folder), runs `image_train_flow` (the sweep,
refit, ISP sensitivity, ONNX gate, registration) against its own MLflow server and Prefect's test
harness, then times the ISP alone (images/s over the DNG files: read + seven stages) and the
registered model's ONNX export against torch (parity and batch/single-image latency), and the
single-image latency of `POST /predict/image` (the real Flask app with the registered champion
loaded from MLflow and the prediction log writing to SQLite, through Flask's test client: the
server's own time per request, without a socket). Then the registered version's two precisions,
float and int8 (`model_int8.onnx` in the same run, churnops.image.quantize): size, single-image
p50/p99 and batch latency, DNG test accuracy, the int8 gate's report, and the "standard images"
section, accuracy on PNG/JPEG renders of the held-out digits (grey on black, black on white, a
colour map, JPEG quality 75, blur, small scale; bench/bench_standard_images.py, decoded by the
server's decoder; goal >= 0.95 each). Writes bench/results/image.json and prints a summary. Not a test: figures are measured, not asserted. The defaults (4 trials, at most 8 epochs)
keep a run on 2 cores to a few minutes.

    python bench/bench_image.py [--trials 4] [--max-epochs 8] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "image.json"
TARGETS = {
    "test_accuracy": ">= 0.97",
    "onnx_max_abs_diff": "<= 1e-4",
    "standard_images": ">= 0.95 each style",
    "int8_accuracy_drop": "<= 0.005 (pooled: test split, ISP variations, standard images)",
}


def _timeit(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=8)
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-image-"))
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "STATE_DIR": str(tmp / "state"),
        }
    )
    from ops.localservers import start_mlflow, start_moto

    (tmp / "mlflow").mkdir(), (tmp / "moto").mkdir()
    mlf, mlflow_url = start_mlflow(tmp / "mlflow")
    moto, moto_url = start_moto(tmp / "moto")  # the feature store the flow publishes the images to
    os.environ.update({"MLFLOW_TRACKING_URI": mlflow_url, "AWS_ENDPOINT_URL": moto_url})
    import torch

    result: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cpu",
        },
        "n_trials": a.trials,
        "max_epochs": a.max_epochs,
        "targets": TARGETS,
    }
    try:
        from prefect.testing.utilities import prefect_test_harness

        from churnops.settings import get_settings

        get_settings.cache_clear()
        with prefect_test_harness(server_startup_timeout=120):
            from flows.image_train_flow import image_train_flow

            t0 = time.perf_counter()
            out = image_train_flow(n_trials=a.trials, max_epochs=a.max_epochs)
            result["flow_seconds"] = round(time.perf_counter() - t0, 1)
        result |= {
            k: out[k]
            for k in (
                "test_metrics",
                "onnx_max_abs_diff",
                "sweep_seconds",
                "best_params",
                "dataset_sha256",
                "data_source",
                "images",
                "sensitivity",
            )
        }
        result["isp"] = bench_isp(get_settings())
        result["onnx_vs_torch"] = bench_onnx(out)
        result["predict_image_http"] = bench_http(out, a.requests)
        result["quantization_gate"] = {k: v for k, v in out["quantization"].items() if k != "sets"}
        result["precisions"] = bench_precisions(out)
    finally:
        mlf.stop(), moto.stop()
    from table import save  # bench/table.py: the one results table

    save("image", result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "test_metrics",
                    "onnx_max_abs_diff",
                    "sweep_seconds",
                    "flow_seconds",
                    "isp",
                    "onnx_vs_torch",
                    "predict_image_http",
                    "quantization_gate",
                )
            },
            indent=1,
        )
    )
    for name, p in result["precisions"].items():
        std = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in p["standard_images"]["styles"].items())
        print(
            f"{name}: {p['bytes']} bytes, DNG test accuracy {p['dng_test_accuracy']:.4f}, single image p50 "
            f"{p['single_image_ms']['p50']} ms p99 {p['single_image_ms']['p99']} ms, batch "
            f"{p['batch_images_per_s']} images/s; standard images: {std}"
        )
    print("sensitivity: " + ", ".join(f"{r['variation']} {r['accuracy']:.4f}" for r in result["sensitivity"]))
    print(f"wrote {OUT}")


def bench_isp(s) -> dict:
    """Images/s of read (rawpy) + the seven ISP stages over the generated DNG files, one process."""
    from churnops.contract import load_any_contract
    from churnops.image.dataset import list_images, read_raw
    from churnops.image.isp import process

    c = load_any_contract("raw_digits")
    files = list_images(s.state_dir / "images" / f"raw_digits-seed{s.seed}", c)
    t0 = time.perf_counter()
    frames = [read_raw(f.path) for f in files]
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for fr in frames:
        process(fr, c.isp)
    t_isp = time.perf_counter() - t0
    return {
        "images": len(files),
        "read_images_per_s": round(len(files) / t_read, 1),
        "isp_images_per_s": round(len(files) / t_isp, 1),
        "read_plus_isp_images_per_s": round(len(files) / (t_read + t_isp), 1),
        "processes": 1,
    }


def bench_onnx(out: dict) -> dict:
    """Parity and latency of the registered ONNX model against the refit torch net (same weights)."""
    import mlflow
    import torch

    from churnops.contract import load_any_contract
    from churnops.image.dataset import list_images, load_arrays
    from churnops.image.model import DigitCNN, onnx_session
    from churnops.settings import get_settings

    s = get_settings()
    c = load_any_contract("raw_digits")
    files = list_images(s.state_dir / "images" / f"raw_digits-seed{s.seed}", c)
    X, _ = load_arrays(files[:512], c)
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        state = client.download_artifacts(out["run_id"], "cnn_state_dict.pt", tmp)
        net = DigitCNN(len(c.classes), out["best_params"]["width"])
        net.load_state_dict(torch.load(state))
    net.eval()
    sess = onnx_session(mlflow.onnx.load_model(out["model_uri"]).SerializeToString(), threads=1)
    torch.set_num_threads(1)
    with torch.no_grad():
        p_torch = torch.softmax(net(torch.from_numpy(X)), 1).numpy()
        single_torch = _timeit(lambda: net(torch.from_numpy(X[:1])), 200)
        batch_torch = _timeit(lambda: net(torch.from_numpy(X)), 5)
    p_onnx = sess.run(["probabilities"], {"image": X})[0]
    single_onnx = _timeit(lambda: sess.run(["probabilities"], {"image": X[:1]}), 200)
    batch_onnx = _timeit(lambda: sess.run(["probabilities"], {"image": X}), 5)
    ms = lambda v, q: round(float(np.percentile(v, q)) * 1000, 3)  # noqa: E731
    return {
        "images": len(X),
        "threads": 1,
        "max_abs_diff": float(np.abs(p_onnx - p_torch).max()),
        "argmax_agreement": float((p_onnx.argmax(1) == p_torch.argmax(1)).mean()),
        "single_image_ms": {
            "torch_p50": ms(single_torch, 50),
            "torch_p99": ms(single_torch, 99),
            "onnx_p50": ms(single_onnx, 50),
            "onnx_p99": ms(single_onnx, 99),
        },
        "batch_images_per_s": {
            "torch": round(len(X) / min(batch_torch), 1),
            "onnx": round(len(X) / min(batch_onnx), 1),
        },
    }


def bench_precisions(out: dict) -> dict:
    """Float and int8 ONNX of the registered version: bytes, latency (1 thread), DNG test accuracy,
    standard-images accuracy on the held-out digits (the flow's split, rebuilt with the same seed)."""
    import mlflow
    from bench_standard_images import held_out_strokes, standard_section

    from churnops.contract import load_any_contract
    from churnops.image import train
    from churnops.image.model import onnx_session
    from churnops.image.quantize import INT8_ARTIFACT
    from churnops.settings import get_settings

    s = get_settings()
    c = load_any_contract("raw_digits")
    d = train.prepare(s.state_dir / "images" / f"raw_digits-seed{s.seed}", c, s, synthetic=True)
    models = {"float": mlflow.onnx.load_model(out["model_uri"]).SerializeToString()}
    names = {a.path for a in mlflow.MlflowClient(s.mlflow_tracking_uri).list_artifacts(out["run_id"])}
    if INT8_ARTIFACT in names:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{out['run_id']}/{INT8_ARTIFACT}", dst_path=tmp
            )
            models["int8"] = Path(path).read_bytes()
    strokes, y_std = held_out_strokes(d.files, d.idx_test, (c.image.height, c.image.width))
    Xt, yt = d.X[d.idx_test], d.y[d.idx_test]
    X512 = d.X[:512]
    figures = {}
    for name, data in models.items():
        sess = onnx_session(data, threads=1)

        def proba(X, sess=sess):
            return np.concatenate(
                [sess.run(["probabilities"], {"image": X[i : i + 512]})[0] for i in range(0, len(X), 512)]
            )

        single = _timeit(lambda sess=sess: sess.run(["probabilities"], {"image": X512[:1]}), 300)
        batch = _timeit(lambda sess=sess: sess.run(["probabilities"], {"image": X512}), 5)
        figures[name] = {
            "bytes": len(data),
            "dng_test_accuracy": round(float((proba(Xt).argmax(1) == yt).mean()), 4),
            "single_image_ms": {
                "p50": round(float(np.percentile(single, 50)) * 1000, 3),
                "p99": round(float(np.percentile(single, 99)) * 1000, 3),
            },
            "batch_images_per_s": round(len(X512) / min(batch), 1),
            "standard_images": standard_section(proba, strokes, y_std, c),
        }
    if "int8" in figures:
        figures["int8"]["argmax_agreement_test"] = out["quantization"]["argmax_agreement"]
    return figures


def bench_http(out: dict, n: int) -> dict:
    """p50/p99 of single-image `POST /predict/image` (DNG and PNG bodies) through the real app."""
    import io

    from PIL import Image

    from churnops.contract import load_any_contract
    from churnops.image.dataset import list_images, load_image
    from churnops.settings import get_settings
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = get_settings().model_copy(update={"dataset": "raw_digits", "model_name": out["model_name"]})
    c = load_any_contract("raw_digits")
    every = list_images(s.state_dir / "images" / f"raw_digits-seed{s.seed}", c)
    files = every[:: max(1, len(every) // n)][:n]  # spread over the classes
    mm = ModelManager(s)
    mm.load_initial()
    app = create_app(s, store=SQLiteStore(s.state_dir / "bench-predictions.db"), models=mm, start_background=False)
    plog = app.extensions["churn"].plog
    plog.start()
    client = app.test_client()
    dng = [f.path.read_bytes() for f in files]
    png = []
    for f in files:
        buf = io.BytesIO()
        rgb = load_image(f.path, c).transpose(1, 2, 0)
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(buf, "PNG")
        png.append(buf.getvalue())
    figures: dict = {"requests": len(files), "model_version": out["version"], "transport": "flask test client"}
    try:
        for kind, bodies, ctype in (("dng", dng, "image/x-adobe-dng"), ("png", png, "image/png")):
            client.post("/predict/image", data=bodies[0], headers={"Content-Type": ctype})  # warm-up
            times = []
            for body in bodies:
                t0 = time.perf_counter()
                r = client.post("/predict/image", data=body, headers={"Content-Type": ctype})
                times.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(
                        f"POST /predict/image answered {r.status_code}: {r.get_data(as_text=True)[:300]}"
                    )
            figures[kind] = {
                "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
                "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3),
                "mean_body_bytes": round(float(np.mean([len(b) for b in bodies])), 1),
            }
    finally:
        plog.close()
    return figures


if __name__ == "__main__":
    main()
