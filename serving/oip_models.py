"""The models the Open Inference Protocol routes serve (serving/oip.py): the default one plus OIP_MODELS.

`OIP_MODELS` lists, comma-separated, the models served under `/v2/models/<name>` besides the server's
default one (DATASET's line, which `/predict` serves). Each entry is a data set (`diabetes`) or a
registered model name (`diabetes-xgboost`), optionally followed by `@<alias>` (default `champion`),
`:<version>`, or `=<absolute path of a bundle folder>` (offline serving, tests). A model is served under
its registered model name (`churnops.model_line.model_name_for`).

Each extra model is its own line (`churnops.model_line.for_dataset`): its own contract, `ModelManager`
(loaded in the background, following its alias like the default one), prediction store and
`PredictionLog` (`<state_dir>/lines/<contract name>/` for any line but churn's), so its predictions land
where that line's reports, drift checks and retraining trigger read them. The default model's manager
and log are the app's own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from churnops.contract import bundled_datasets, load_any_contract
from churnops.image.feedback import ImageFeedback
from churnops.model_line import CHURN_CONTRACT, for_dataset, model_name_for
from churnops.model_uri import ModelUriError, check_model_uri
from churnops.settings import Settings
from churnops.store.factory import open_store
from churnops.tasks import task_for
from serving.answers import answers_for
from serving.model import ModelManager, clear_shared_state
from serving.prediction_log import PredictionLog, close_at_exit
from serving.shadow import ShadowMirror

log = logging.getLogger(__name__)

IMAGE = "image_classification"
LINE_NAMES = ("model_name", "experiment_name", "training_deployment", "dataset", "run_id", "model_uri")
LINE_PATHS = ("prediction_db_path", "spool_dir", "stream_outbox_dir", "serving_state_file")


class OipConfigError(ValueError):
    """An OIP_MODELS entry names no known data set or model, or an unaccepted version."""


@dataclass(frozen=True)
class ModelEntry:
    """One OIP_MODELS entry, resolved: the data set, the registered model name and what to load."""

    dataset: str
    name: str
    uri: str


@dataclass
class ServedModel:
    """One model served under /v2: its line's settings, contract, loader and prediction log."""

    name: str
    settings: Settings
    contract: Any  # churnops.contract.DatasetContract or churnops.image.contract.ImageContract
    models: ModelManager
    plog: PredictionLog
    validate: Callable[[dict], Any] | None  # one feature object -> RecordResult (tabular only)
    default: bool = False
    shadow: ShadowMirror | None = None  # SHADOW_FRACTION: the champion's answers mirrored to this line's candidate

    @property
    def task(self) -> str:
        return getattr(self.contract, "task", "binary_classification")

    @property
    def is_image(self) -> bool:
        return self.task == IMAGE

    @property
    def ready(self) -> bool:
        return self.models.current is not None

    @property
    def feedback_task(self):
        """What parses this model's /feedback (churnops.tasks, or the image contract's class feedback)."""
        return ImageFeedback() if self.is_image else answers_for(task_for(self.contract))


def bare_settings(s: Settings) -> Settings:
    """`s` without what its data set's line filled in (names, pins, storage), so another line can be
    resolved from it: an extra model never inherits the default line's store, spool or pin. MONGODB_DB
    is the root name again (the default line's `_<contract>` suffix taken off), so a line's own database
    follows it (`churnops.model_line.line_storage`)."""
    keep = {k: getattr(s, k) for k in s.model_fields_set if k not in LINE_NAMES + LINE_PATHS + ("mongodb_db",)}
    root = str(s.mongodb_db)
    own = load_any_contract(s.dataset)
    if own.name != CHURN_CONTRACT and root.endswith(f"_{own.name}"):
        root = root[: -len(own.name) - 1]  # the default line's own database name
    if root != Settings.model_fields["mongodb_db"].default:
        keep["mongodb_db"] = root
    fields_set = set(keep) - {"mongodb_db"}  # line_storage derives a line's database from the root
    return Settings.model_construct(_fields_set=fields_set, **keep)


def known_lines(bare: Settings) -> dict[str, str]:
    """{data set or registered model name: data set} of every shipped contract."""
    out: dict[str, str] = {}
    for ds in bundled_datasets():
        out[model_name_for(load_any_contract(ds), bare)] = ds
        out[ds] = ds
    return out


def parse_entries(text: str, s: Settings) -> list[ModelEntry]:
    """The OIP_MODELS entries of `text`; `OipConfigError` names a bad one and what is accepted."""
    bare = bare_settings(s)
    lines = known_lines(bare)
    out: list[ModelEntry] = []
    for raw in (x.strip() for x in (text or "").split(",")):
        if not raw:
            continue
        key, sep, tail = raw, "", ""
        for mark in ("=", "@", ":"):
            if mark in raw:
                key, sep, tail = (x.strip() for x in raw.partition(mark))
                break
        ds = lines.get(key)
        if ds is None:
            raise OipConfigError(
                f"OIP_MODELS entry {raw!r}: {key!r} is no data set or model name; expected one of {sorted(lines)}"
                " (optionally with @<alias>, :<version> or =<bundle folder>)"
            )
        line = for_dataset(bare, ds)
        name = line.model_name or ds
        uri = {"": f"models:/{name}@champion", "@": f"models:/{name}@{tail}", ":": f"models:/{name}/{tail}"}.get(
            sep, tail
        )
        try:
            check_model_uri(uri, line, "OIP_MODELS", allow_local=True)
        except ModelUriError as exc:
            raise OipConfigError(f"OIP_MODELS entry {raw!r}: {exc.message}") from exc
        out.append(ModelEntry(ds, name, uri))
    return out


def line_settings(s: Settings, entry: ModelEntry) -> Settings:
    """The settings of `entry`'s line: its own model name, storage, serving state, and its URI pinned."""
    bare = bare_settings(s)
    return for_dataset(bare.model_copy(update={"model_uri": entry.uri, "dataset": entry.dataset}), entry.dataset)


def clear_served_state(s: Settings) -> None:
    """Forget a previous server run's reloads (`/admin/reload`) of every model this server serves: the
    default line's and each OIP_MODELS line's (called once by the server before its workers start)."""
    clear_shared_state(s)
    try:
        entries = parse_entries(s.oip_models, s)
    except OipConfigError:
        return  # the app refuses the entry when it starts, naming it
    for entry in entries:
        clear_shared_state(line_settings(s, entry))


def open_log(s: Settings, metrics=None) -> PredictionLog:
    """A prediction log on the store of `s`'s line, with the same bounds as the app's own."""
    return PredictionLog(
        open_store(s),
        s.state_path(s.spool_dir, "spool"),
        s.log_batch_size,
        s.log_flush_interval_s,
        metrics=metrics,
        wake_records=s.log_wake_records,
        queue_max_records=s.log_queue_max_records,
        spool_max_bytes=s.spool_max_bytes,
        retry_max_s=s.log_retry_max_s,
        journal=s.log_journal,
    )


def tabular_validator(contract, s: Settings) -> Callable[[dict], Any]:
    """The contract's compiled validator with the settings' unknown-category policy."""
    compiled = contract.validator()
    return lambda feats: compiled.validate(feats, s.unknown_category)


class ServedModels:
    """The /v2 models by name; extra models are loaded and logged on their own."""

    def __init__(self, default: ServedModel, extras: list[ServedModel]):
        self.default = default
        self.by_name: dict[str, ServedModel] = {default.name: default}
        for m in extras:
            self.by_name.setdefault(m.name, m)

    def get(self, name: str) -> ServedModel | None:
        return self.by_name.get(name)

    def names(self) -> list[str]:
        return list(self.by_name)

    def extras(self) -> list[ServedModel]:
        return [m for m in self.by_name.values() if not m.default]

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.by_name.values())

    def start(self) -> None:
        """Start the extra models' logs and background loaders (the app starts the default's)."""
        for m in self.extras():
            m.plog.start()
            close_at_exit(m.plog)  # flushed at exit with the app's (serving/prediction_log.py)
            if m.models.current is None:
                m.models.start_background()

    def close(self) -> None:
        """Stop the extra models' loaders and flush their logs."""
        for m in self.extras():
            m.models.stop()
            if m.shadow is not None:
                m.shadow.stop()
            try:
                m.plog.close()
            except Exception:
                log.exception("flushing the prediction log of %s failed", m.name)


def build_served_models(state, metrics=None) -> ServedModels:
    """The default model of `state` (serving.app.ServingState) plus the OIP_MODELS of its settings."""
    s = state.settings
    contract = state.contract if state.contract is not None else state.image_contract
    default = ServedModel(
        name=s.model_name or s.dataset,
        settings=s,
        contract=contract,
        models=state.models,
        plog=state.plog,
        validate=state.validator,
        default=True,
        shadow=state.shadow,
    )
    extras = []
    for entry in parse_entries(s.oip_models, s):
        if entry.name == default.name:
            continue  # the default model: /predict's own manager and log
        line = line_settings(s, entry)
        c = load_any_contract(entry.dataset)
        image = getattr(c, "task", None) == IMAGE
        models, plog = ModelManager(line, metrics=metrics), open_log(line, metrics)
        # the line's own candidate (its `challenger`), logged into the line's own store
        shadow = None if image else ShadowMirror(line, plog, metrics, lambda models=models: models.current)
        extras.append(
            ServedModel(
                name=entry.name,
                settings=line,
                contract=c,
                models=models,
                plog=plog,
                validate=None if image else tabular_validator(c, line),
                shadow=shadow,
            )
        )
    return ServedModels(default, extras)
