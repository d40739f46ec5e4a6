"""Image-serving helpers: an image server in-process on given settings, its prediction log running."""

from __future__ import annotations

import uuid


def serve(s, own_store: bool = True):
    """(app, client, store) of an image server on settings `s`, its log running: in a store of its own,
    or (own_store=False) the configured one the flows read."""
    from churnops.model_line import resolved
    from churnops.store.factory import open_store
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    mm = ModelManager(s)
    mm.load_initial()
    store = (
        SQLiteStore(s.state_dir / f"predictions-{uuid.uuid4().hex[:6]}.db") if own_store else open_store(resolved(s))
    )
    app = create_app(s, store=store, models=mm, start_background=False)
    app.extensions["churn"].plog.start()
    return app, app.test_client(), store
