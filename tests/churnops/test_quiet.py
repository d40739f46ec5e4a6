"""`make demo` output: no MLflow warnings or download progress bars between the useful lines."""

from __future__ import annotations

import logging
import subprocess
import sys

from churnops.settings import quiet_env


def test_importing_the_pyfunc_model_warns_nothing():
    """mlflow checks `predict`'s type hints when ChurnPyfunc is defined; untyped, it warned in every process."""
    r = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import churnops.bundle"],
        capture_output=True,
        text=True,
        env=quiet_env(),
        timeout=120,
    )
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-2000:]


def test_project_processes_get_no_artifact_progress_bars_nor_mlflow_info_lines():
    code = (
        "import logging; from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as v; "
        "print(v.get() is False, logging.getLogger('mlflow.pyfunc').getEffectiveLevel())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=quiet_env({}), timeout=120)
    assert r.stdout.split() == ["True", str(logging.WARNING)], r.stderr[-2000:]
