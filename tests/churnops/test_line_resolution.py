"""A model line's storage follows its data set, whatever names are set explicitly; the image flow
resolves its line the way the tabular flows do (`churnops.model_line.for_dataset`)."""

from __future__ import annotations

from churnops.contract import load_any_contract
from churnops.model_line import resolved
from churnops.settings import Settings
from flows.image_train_flow import image_settings

NAMES = {"model_name": "my-model", "experiment_name": "my-exp", "training_deployment": "train-churn-model/mine"}


def test_explicit_names_keep_the_lines_own_store(pristine_env, tmp_path):
    """MODEL_NAME, EXPERIMENT_NAME and TRAINING_DEPLOYMENT all set: a diabetes line still logs to
    `<state>/lines/diabetes/`, never to the churn line's default store."""
    s = resolved(Settings(_env_file=None, state_dir=tmp_path, dataset="diabetes", **NAMES))
    line = tmp_path / "lines" / "diabetes"
    assert (s.model_name, s.experiment_name, s.training_deployment) == tuple(NAMES.values())
    assert s.prediction_db_path == line / "predictions.db"
    assert (s.spool_dir, s.stream_outbox_dir) == (line / "spool", line / "outbox")
    assert s.serving_state_file == line / "serving-model.json"
    assert s.mongodb_db == "churn_diabetes"
    assert resolved(s) is s  # resolved once, a no-op after


def test_explicit_storage_and_the_churn_line_are_kept(pristine_env, tmp_path):
    own = tmp_path / "mine.db"
    s = resolved(Settings(_env_file=None, state_dir=tmp_path, dataset="diabetes", prediction_db_path=own, **NAMES))
    assert s.prediction_db_path == own and s.spool_dir == tmp_path / "lines" / "diabetes" / "spool"
    churn = Settings(_env_file=None, state_dir=tmp_path, dataset="bank_churners", **NAMES)
    assert resolved(churn) is churn and churn.prediction_db_path is None  # the stack's defaults


def test_image_line_resolves_like_the_tabular_lines(pristine_env, tmp_path):
    """The image flow's settings: the contract's names, the image training deployment and the line's own
    storage, even when DATASET names another data set (the flow's `contract` parameter decides)."""
    s = image_settings(Settings(_env_file=None, state_dir=tmp_path), load_any_contract("raw_digits"), "raw_digits")
    line = tmp_path / "lines" / "raw_digits"
    assert (s.dataset, s.model_name, s.experiment_name) == ("raw_digits", "raw-digits-cnn", "raw-digits-sweep")
    assert s.training_deployment == "train-image-model/image-sweep"
    assert (s.prediction_db_path, s.serving_state_file) == (line / "predictions.db", line / "serving-model.json")
    assert resolved(s) is s
