"""WSGI entry for gunicorn: `gunicorn -c python:serving.gunicorn_conf serving.wsgi:app`.

Building the app touches no network: the model loads in a background thread per worker.
"""

from serving.app import create_app

app = create_app()
