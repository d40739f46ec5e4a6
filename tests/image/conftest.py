"""Fixtures of the image track: a small raw-digits folder generated once per session, a small registered CNN."""

from __future__ import annotations

import uuid

import numpy as np
import pytest


@pytest.fixture(scope="session")
def raw_contract():
    from churnops.contract import load_any_contract

    return load_any_contract("raw_digits")


@pytest.fixture(scope="session")
def raw_folder(tmp_path_factory, raw_contract):
    """The first 300 digits as DNG captures (seed 7): every class has at least 25."""
    from churnops.image.sensor import generate

    root = tmp_path_factory.mktemp("raw_digits")
    generate(root, raw_contract, seed=7, limit=300)
    return root


@pytest.fixture(scope="module")
def image_model(moto_endpoint, mlflow_uri, raw_folder, raw_contract, tmp_path_factory):
    """A width-8 CNN (4 epochs) on the raw digits, registered as `raw-digits-serve-<tag>` v1 (champion),
    with its static int8 quantization beside it (`model_int8.onnx` in the run)."""
    pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
    from churnops import pipeline
    from churnops.image import train
    from churnops.image.model import fit
    from churnops.image.quantize import quantize
    from churnops.registry import client
    from churnops.settings import Settings

    tag = uuid.uuid4().hex[:8]
    s = Settings(
        _env_file=None,
        aws_endpoint_url=moto_endpoint,
        mlflow_tracking_uri=mlflow_uri,
        state_dir=tmp_path_factory.mktemp("image-serving-state"),
        dataset="raw_digits",
        model_name=f"raw-digits-serve-{tag}",
        experiment_name=f"raw-digits-serve-{tag}",
        bucket=f"images-{tag}",
        train_threads=1,
        log_flush_interval_s=0.05,
    )
    d = train.prepare(raw_folder, raw_contract, s, synthetic=True)
    idx = np.concatenate([d.idx_train, d.idx_val])
    params = {"lr": 5e-3, "width": 8, "epochs": 4, "strength": 0.3}
    net = fit(d.X[idx], d.y[idx], len(raw_contract.classes), 8, 5e-3, 4, 0.3, seed=1, threads=1)
    ev = train.evaluate(net, d, raw_contract)
    onnx_bytes, diff = train.onnx_gate(net, d, ev, raw_contract, 1e-4)
    int8 = quantize(onnx_bytes, "static", d.X[d.idx_train[:64]])
    _, run_id = pipeline.start_parent_run(s, {"data_source": train.DATA_SOURCE_SYNTHETIC})
    best = train.ImageTrial(0, params, ev["metrics"], 0.0, ev["test_proba"])
    reg = train.log_and_register(
        net, onnx_bytes, diff, d, ev, best, [best], raw_contract, s, run_id, pipeline.Timer(), int8, {"passed": True}
    )
    client(s).set_terminated(run_id)
    return {
        "settings": s,
        "run_id": run_id,
        "version": str(reg["version"]),
        "onnx": onnx_bytes,
        "int8": int8,
        "files": d.files,
    }
