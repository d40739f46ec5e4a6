"""Registered models a test owns: a copy of a trained version under a fresh, unique name.

A test that moves an alias (promote, rollback, approve, a second training run) works on a model of
its own, so no test depends on another's versions or aliases; the session's `churn-test` model is
written only by the `trained` fixture.
"""

from __future__ import annotations

import uuid


def unique_name(prefix: str) -> str:
    """`prefix` and 8 random hex digits: a registered-model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_copy(s, source_name: str, version: str, name: str, aliases: tuple[str, ...] = ("champion",)) -> str:
    """Register version `version` of `source_name` (its artifacts, run and tags) as the next version of
    `name` (created when missing) and point `aliases` at it; returns the new version. A registry call,
    no artifacts copied: milliseconds."""
    from mlflow.exceptions import MlflowException

    from churnops.registry import client

    c = client(s)
    src = c.get_model_version(source_name, version)
    try:
        c.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # MLflow 3: the source is the logged model (`models:/m-<id>`), whose id the registry wants with it
    model_id = src.model_id or (src.source.removeprefix("models:/") if src.source.startswith("models:/m-") else None)
    mv = c.create_model_version(name, src.source, run_id=src.run_id, tags=dict(src.tags), model_id=model_id)
    for alias in aliases:
        c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)
