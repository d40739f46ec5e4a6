"""Lineage tags every training run carries: data, config, code, seed, package versions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata

from churnops.settings import PROJECT_ROOT

PACKAGES = ("xgboost", "scikit-learn", "hyperopt", "mlflow", "prefect", "numpy", "pandas", "onnxruntime")


def git_commit() -> str:
    """The checkout's commit (`-dirty` when changed); GIT_COMMIT (the image's build argument) without a checkout."""
    baked = os.environ.get("GIT_COMMIT", "").strip()
    if baked and baked != "unknown" and not (PROJECT_ROOT / ".git").exists():
        return baked
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(config: dict) -> str:
    """SHA-256 of the training config (sorted JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def lineage_tags(dataset_sha: str, config: dict, seed: int, synthetic: bool, source: str) -> dict[str, str]:
    tags = {
        "dataset_sha256": dataset_sha,
        "data_source": "synthetic" if synthetic else "real",
        "data_uri": source,
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "seed": str(seed),
    }
    tags.update({f"pkg.{k}": v for k, v in package_versions().items()})
    return tags
