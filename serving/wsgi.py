"""WSGI entry of the API server: `python -m serving.server` runs `serving.wsgi:app` (granian).

Building the app touches no network: the model loads in a background thread. The worker then
waits for it (API_LOAD_WAIT_S, ended at once by a failed load) before its server takes connections,
so a worker that replaces a killed one answers nothing while it loads; its siblings do.
"""

import time

from churnops.settings import get_settings
from serving.app import create_app
from serving.edge import EdgeMiddleware, mark_dead_workers


def wait_for_model(app, timeout_s: float) -> bool:
    """Until the app's model is loaded (True), its first load failed, or `timeout_s` passed."""
    models = app.extensions["churn"].models
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if models.current is not None:
            return True
        if models.last_error:
            return False
        time.sleep(0.02)
    return models.current is not None


_s = get_settings()
app = create_app(_s)
mark_dead_workers()  # the metric files of a worker this one replaces (gunicorn's child_exit did it)
wait_for_model(app, _s.api_load_wait_s)
app.wsgi_app = EdgeMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, _s.max_body_bytes, {"/predict/image": _s.image_max_body_bytes}, drain_s=_s.api_read_timeout_s
)
