"""One data set, one model line: the names a data set's contract gives everything it owns.

`Settings` reads the environment only; it never loads a contract. The names that follow the data
set are resolved here, where a data set is chosen (an entry point, a flow run with its `dataset`
parameter): the registered model name (`model_name_for`), the MLflow experiment, the Prefect
training deployment, and where its prediction log lives (predictions, labels, checkpoints, audit:
the churn line keeps the stack's defaults, any other line its own store under
`<state_dir>/lines/<contract name>/` or MongoDB database `<MONGODB_DB>_<contract name>`, and its own
serving state), so two lines served side by side on one stack never read each other's windows or
labels. `for_dataset` returns the settings of one data set with all of it filled;
`resolved` does the same for settings that may not have been resolved yet (it is a no-op once
they are). One registered model name holds one contract: `check_line` refuses a name whose
versions carry another contract fingerprint (training calls it before the sweep, and
`churnops.registry.register` before every registration).
"""

from __future__ import annotations

from pathlib import Path

from churnops.contract import load_any_contract
from churnops.settings import Settings
from churnops.tracking import client

CHURN_CONTRACT = "bank_churners"
CHURN_MODEL, CHURN_EXPERIMENT, CHURN_DEPLOYMENT = "churn-xgboost", "churn-sweep", "churn-sweep"
TRAIN_FLOW = "train-churn-model"  # the tabular training flow's name (kept: `train-churn-model/churn-sweep`)
IMAGE_TRAIN_DEPLOYMENT = "train-image-model/image-sweep"  # image lines: one deployment, the contract a parameter
FINGERPRINT_TAG = "contract_fingerprint"


class ContractMismatch(ValueError):
    """A model name already holds versions trained with another data contract."""


def model_name_for(contract, s: Settings) -> str:
    """The registered model name of `contract`'s line: MODEL_NAME when set explicitly, else the name
    the contract declares, else `churn-xgboost` for the churn contract and `<name>-xgboost` otherwise."""
    if s.model_name:
        return s.model_name
    if getattr(contract, "model_name", None):
        return contract.model_name
    if contract.name == CHURN_CONTRACT:
        return CHURN_MODEL
    return f"{contract.name.replace('_', '-')}-xgboost"


def experiment_for(contract, s: Settings) -> str:
    """The MLflow experiment of the line: EXPERIMENT_NAME when set, else the contract's own
    (image contracts declare one), `churn-sweep` for churn, `<name>-sweep` for any other."""
    if s.experiment_name:
        return s.experiment_name
    if getattr(contract, "experiment_name", None):
        return contract.experiment_name
    return CHURN_EXPERIMENT if contract.name == CHURN_CONTRACT else f"{contract.name.replace('_', '-')}-sweep"


def deployment_name_for(contract) -> str:
    """The Prefect deployment name of the line's training (`churn-sweep` for churn, else the contract name)."""
    return CHURN_DEPLOYMENT if contract.name == CHURN_CONTRACT else contract.name


def training_deployment_for(contract) -> str:
    """The Prefect deployment that trains the line: `train-churn-model/<line>` for a tabular contract,
    `train-image-model/image-sweep` (its `contract` parameter names the line) for an image contract."""
    if getattr(contract, "task", None) == "image_classification":
        return IMAGE_TRAIN_DEPLOYMENT
    return f"{TRAIN_FLOW}/{deployment_name_for(contract)}"


def for_dataset(s: Settings, dataset: str | None = None, contract=None) -> Settings:
    """`s` for the data set `dataset` (default: `s.dataset`), with the model name, experiment and
    training deployment of its line filled in. Raises the contract loader's error for a bad DATASET."""
    ds = dataset or s.dataset
    contract = contract if contract is not None else load_any_contract(ds)
    update = {
        "dataset": ds,
        "model_name": model_name_for(contract, s),
        "experiment_name": experiment_for(contract, s),
        "training_deployment": s.training_deployment or training_deployment_for(contract),
    }
    return s.model_copy(update=update | line_storage(contract, s))


def line_dir(contract, s: Settings) -> Path | None:
    """The folder of a line's own state (`<state_dir>/lines/<name>`); None for the churn line (the defaults)."""
    return None if contract.name == CHURN_CONTRACT else s.state_dir / "lines" / contract.name


def line_storage(contract, s: Settings) -> dict:
    """The store, spool, outbox and serving-state settings of the line (only those not set explicitly)."""
    folder = line_dir(contract, s)
    if folder is None:
        return {}
    defaults = {
        "prediction_db_path": folder / "predictions.db",
        "spool_dir": folder / "spool",
        "stream_outbox_dir": folder / "outbox",
        "serving_state_file": folder / "serving-model.json",
        "mongodb_db": f"{s.mongodb_db}_{contract.name}",
    }
    return {k: v for k, v in defaults.items() if k not in s.model_fields_set}


STORAGE_FIELDS = frozenset({"prediction_db_path", "spool_dir", "stream_outbox_dir", "serving_state_file", "mongodb_db"})


def resolved(s: Settings) -> Settings:
    """`s` itself when its line is resolved (names and, for a line other than churn, its own storage),
    else `for_dataset(s)`. Names set explicitly (MODEL_NAME, EXPERIMENT_NAME, TRAINING_DEPLOYMENT) do not
    make a line resolved: its store, spool, outbox and serving state still follow the data set."""
    named = s.model_name and s.experiment_name and s.training_deployment
    if named and (s.dataset == CHURN_CONTRACT or STORAGE_FIELDS <= s.model_fields_set):
        return s
    return for_dataset(s)


def fingerprints_of(name: str, s: Settings) -> dict[str, list[str]]:
    """{contract fingerprint: [versions]} of the registered model `name` (versions without the tag left out)."""
    out: dict[str, list[str]] = {}
    for mv in client(s).search_model_versions(f"name = '{name}'"):
        fp = (mv.tags or {}).get(FINGERPRINT_TAG)
        if fp:
            out.setdefault(fp, []).append(str(mv.version))
    return out


def check_line(name: str, fingerprint: str, s: Settings) -> None:
    """Refuse `name` when any of its versions carries another contract fingerprint than `fingerprint`
    (one contract per model name); the error names both fingerprints and the versions."""
    other = {fp: v for fp, v in fingerprints_of(name, s).items() if fp != fingerprint}
    if other:
        theirs = ", ".join(f"{fp[:12]} (v{', v'.join(sorted(v, key=int))})" for fp, v in other.items())
        raise ContractMismatch(
            f"model {name!r} holds versions of another data contract: {theirs}; this run's contract is "
            f"{fingerprint[:12]}. One model name holds one contract: unset MODEL_NAME (the name then follows "
            f"the data set) or choose a name of this data set's own"
        )
