"""The HTTP API's routes, one Flask Blueprint per concern (registered by serving/app.py's create_app).

- predict.py: `POST /predict`, `/predict/batch`, `/predict/image` (serving/image_http.py)
- feedback.py: `POST /feedback`
- admin.py: `GET /model`, `POST /model/reload`, `GET /model/reload/<id>`, `GET /audit`
- ops.py: `GET /health`, `/ready`, `/metrics`, `/logs`, `/openapi.json`, `/`
- serving/drift.py: `GET /drift/report`, `/drift/metrics`

Every view reads the app's one `ServingState` (state.py) from `current_app.extensions["churn"]`;
no view is a closure over create_app's locals.
"""
