"""What every route of the API shares: one `ServingState` per app, on `app.extensions["churn"]`."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from churnops.contract import load_contract
from churnops.image.feedback import ImageFeedback
from churnops.image.uploads import UploadKeeper
from churnops.monitoring.rejections import RejectionCounter
from churnops.redact import redact
from churnops.settings import Settings
from churnops.speed import FastPaths
from churnops.store.base import PredictionStore
from churnops.tasks import task_for
from serving.answers import answers_for
from serving.edge import read_capped
from serving.inference import BadInput, parse_json
from serving.loading import ModelSet
from serving.metrics import get_metrics
from serving.model import ModelManager
from serving.prediction_log import PredictionLog
from serving.shadow import ShadowMirror
from serving.tasks import image_contract

EXTENSION = "churn"  # app.extensions[EXTENSION] is the app's ServingState


class ServingState:
    """Settings, contract, validators, store, prediction log, models and metrics of one app."""

    def __init__(self, settings: Settings, store: PredictionStore, plog: PredictionLog, models: ModelManager):
        self.settings = settings
        # image serving hook (serving/tasks.py): an image contract has no tabular validators
        self.image_contract = image_contract(settings)
        self.contract = load_contract(settings.dataset) if self.image_contract is None else None
        # answers, feedback per task; image serving hook: an image server's feedback is a class index or name
        self.task = answers_for(task_for(self.contract)) if self.contract is not None else ImageFeedback()
        self.store = store
        self.plog = plog
        self.models = models
        self.metrics = get_metrics()
        tabular = self.contract is not None  # image serving hook: no tabular contract on an image server
        self.compiled = self.contract.validator() if tabular else None  # the one validator (churnops.validator)
        self.fast = FastPaths.from_settings(self.contract, settings) if tabular else None  # FAST_PATHS=off: plain
        self.validator = self.fast.record if tabular else None
        self.admin_token = ""  # set by create_app (churnops.admin.admin_token)
        self.scopes: dict[str, str] = {}  # scope tokens (serving/guards.py), set by create_app
        self.hosts: set[str] = set()  # allowed Host headers (serving/guards.py), set by create_app
        # IMAGE_KEEP_UPLOADS: each upload written under its SHA-256 (churnops/image/uploads.py)
        self.upload_keeper: UploadKeeper | None = None
        if settings.image_keep_uploads and self.image_contract is not None:
            self.upload_keeper = UploadKeeper(settings, self.image_contract.name)
        self.shadow: ShadowMirror | None = None  # set by create_app (serving/shadow.py)
        self.rejections: RejectionCounter | None = None  # set by create_app (churnops/monitoring/rejections.py)
        self._children: dict = {}

    def child(self, metric, *labels):
        """`metric.labels(*labels)`, looked up once (labels() costs ~5 us per call)."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def current_models(self) -> ModelSet:
        """The model set serving now; 503 (BadInput) while none is loaded."""
        ms = self.models.current
        if ms is None:
            raise BadInput(
                "model not loaded yet", {"model": redact(self.models.last_error or "loading")}, "not_ready", 503
            )
        return ms

    def read_body(self) -> bytes:
        """The request body, at most MAX_BODY_BYTES (413 past it, chunked uploads too)."""
        limit = self.settings.max_body_bytes
        n = request.content_length
        if n is None:  # chunked upload: all of it, or a 413 past MAX_BODY_BYTES
            return read_capped(request.environ["wsgi.input"], limit)
        if n > limit:
            raise RequestEntityTooLarge()
        # one read of the declared length: werkzeug's chunked readall costs ~3 us per batch row
        return request.environ["wsgi.input"].read(n)

    def body_json(self):
        """The request body as strict JSON (serving.inference.parse_json)."""
        return parse_json(self.read_body())


def serving_state() -> ServingState:
    """The ServingState of the app handling the current request."""
    return current_app.extensions[EXTENSION]


def error_response(status: int, error: str, details: dict | None = None) -> tuple[Response, int]:
    """The API's error body: `{"error", "details"}` with `status`."""
    return jsonify({"error": error, "details": details or {}}), status
