# syntax=docker/dockerfile:1
# One image for every Python service of ChurnOps (MLflow, Prefect server and worker, API, stream
# consumer, simulators, init). Each compose service runs one of the project's console scripts
# (churnops-api, churnops-consumer, ...), the same ones the embedded stack runs.
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t churnops:local .   # default: no torch
#   docker build --build-arg WITH_TORCH=1 -t churnops:torch .   # image track: CPU torch at the pin
#                                                               # of pyproject.toml's `image` extra
# rawpy and tifffile (the image track's raw decoding and DNG writing) are always installed.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtual environment with the pinned dependencies, then the project --------------
FROM ${PYTHON_IMAGE} AS build
ARG WITH_TORCH=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# dependencies first (their layer is reused until pyproject.toml changes)
COPY pyproject.toml README.md ./
# (the `image` extra without torch: rawpy + tifffile; torch, at its pin, only with WITH_TORCH=1)
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; o = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + o['postgres'] + [d for d in o['image'] if not d.startswith('torch')]))" > /tmp/requirements.txt \
 && python -c "import tomllib; o = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; \
print(next(d for d in o['image'] if d.startswith('torch==')))" > /tmp/torch.txt \
 && pip install -r /tmp/requirements.txt \
 && if [ -n "$WITH_TORCH" ]; then \
      pip install --index-url https://download.pytorch.org/whl/cpu -r /tmp/torch.txt; fi
COPY churnops/ churnops/
COPY flows/ flows/
COPY serving/ serving/
COPY simulators/ simulators/
COPY reporting/ reporting/
COPY ops/ ops/
COPY monitoring/ monitoring/
COPY nginx/ nginx/
# editable: the project root stays /app, where Prefect deployments find flows/ (from_source)
RUN pip install --no-deps -e .

# ---- runtime: the venv and the code, a non-root user, no compilers --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# the commit the image was built from: training runs record it as their `git_commit` tag
ARG GIT_COMMIT=unknown
# libgomp1: OpenMP runtime that XGBoost's wheel links against (a shared library, not a build tool);
# not pinned to a Debian revision (bookworm's point releases replace it; the base image tag pins the suite)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 churn \
 && useradd --system --uid 10001 --gid churn --home-dir /data --no-create-home churn \
 && mkdir -p /data /reports /serving \
 && chown churn:churn /data /reports /serving
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STATE_DIR=/data \
    REPORTS_DIR=/reports \
    SERVING_STATE_DIR=/serving \
    GIT_COMMIT=${GIT_COMMIT} \
    ENV_FILE="" \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 9696
# no image-wide HEALTHCHECK: each compose service checks its own server with `churnops-health`
CMD ["churnops-api"]
