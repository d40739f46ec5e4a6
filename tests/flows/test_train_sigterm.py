"""SIGTERM ends `make train` (the `churnops-train` entry it runs) during the sweep: it exits at once with
a clear message and status 143, its MLflow run is FAILED, and nothing is registered."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest

from ops.localservers import BIN

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_sigterm_during_the_sweep_ends_make_train_registering_nothing(stack_env, prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from churnops.registry import client
    from ops.provision import ensure_bucket, init_aws

    name = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ) | {
        "MODEL_NAME": name,
        "EXPERIMENT_NAME": name,
        "DATASET": "bank_churners",
        "BUCKET": "sigterm-feature-store",
        "STATE_DIR": str(tmp_path / "state"),
        "SYNTHETIC_ROWS": "1500",
        "N_TRIALS": "5000",  # far more than it can finish: SIGTERM lands in the sweep
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    env.pop("DATA", None)
    s = stack_env.model_copy(update={"bucket": env["BUCKET"], "synthetic_rows": 1500, "dataset": "bank_churners"})
    ensure_bucket(s)
    init_aws(s)  # the synthetic churn snapshot of this bucket
    c = client(stack_env)
    output = tmp_path / "train.log"  # a file, not a pipe: a full pipe would block the child mid-sweep
    with output.open("w") as sink:
        proc = subprocess.Popen([str(BIN / "churnops-train")], env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600  # a wait for the sweep to start, not an assertion on speed
        while "sweep trials" not in output.read_text(errors="replace") and time.monotonic() < deadline:
            assert proc.poll() is None, output.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # inside the sweep (its progress bar is out)
        assert proc.poll() is None, output.read_text(errors="replace")[-3000:]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=180)  # generous on a loaded machine; it ends within seconds
        except subprocess.TimeoutExpired:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = output.read_text(errors="replace")
    assert proc.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in out, out[-3000:]
    assert "Crash detected! Execution was aborted by a termination signal" in out  # the flow run: crashed
    runs = c.search_runs([c.get_experiment_by_name(name).experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"  # not left RUNNING
    assert c.search_model_versions(f"name = '{name}'") == []  # nothing registered, not even half
