# ChurnOps: the whole lifecycle on one laptop. `make demo` then `make test`; `make help` lists all.
# RUNTIME=embedded (default: supervisord, no Docker) or RUNTIME=docker (the two compose files).
SHELL := /bin/bash
.DEFAULT_GOAL := help

env ?= local
export ENV := $(env)
RUNTIME ?= embedded
ifeq ($(filter $(RUNTIME),embedded docker),)
$(error RUNTIME must be embedded or docker, got '$(RUNTIME)')
endif
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STACK := $(BIN)/churnops-stack
PY_DIRS := churnops flows serving simulators reporting ops bench tests

# ---- Docker runtime: both compose files in one project; secrets from the environment (env=cloud)
# or generated once per machine into .stack/docker/secrets.env (env=local, never committed)
DOCKER_SECRETS ?= .stack/docker/secrets.env
SECRET_VARS := ADMIN_TOKEN GRAFANA_ADMIN_PASSWORD POSTGRES_PASSWORD MONGO_PASSWORD
DC := docker compose -p churnops --env-file .env.$(env) --env-file $(DOCKER_SECRETS) \
      -f docker-compose-registry.yml -f docker-compose-serve.yml
# init-aws runs at every start: it re-creates what LocalStack lost (bucket, streams, snapshot)
REGISTRY_SERVICES := localstack postgres mlflow prefect-server prefect-worker init-aws
SERVE_SERVICES := mongo api consumer-0 consumer-1 simulate-http simulate-kinesis prometheus grafana nginx
SERVING := api consumer-0 consumer-1
# commands that write RUN_ID into the host's .env.<env> run as the host user with that file mounted
DC_PIN := $(DC) run --rm --no-deps --user "$$(id -u):$$(id -g)" -v "$(CURDIR)/.env.$(env):/app/.env.pin" \
          -e ENV_FILE=/app/.env.pin -e VERSION -e REASON prefect-worker
# the commit the image is built from (the `mlflow` service's build argument; runs record it)
export GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
ifeq ($(RUNTIME),docker)
DEPS := docker-env
# down, status, logs, stop-serve: the compose files need the secrets too (after reset_all as well)
STOP_DEPS := docker-env
else
DEPS := $(STAMP)
STOP_DEPS :=
endif

.PHONY: help demo test run_tests up down status logs setup-model-registry init_aws apply-model-train-flow train \
        pin setup-model-serve start-serve stop-serve apply-prediction-reporting report simulate retrain-check \
        rollback promote collect-labels replay-quarantine reset_all compose-smoke lint test-code test-data test-model bench bench-train bench-serve bench-monitor bench-faults bench-servers bench-loop bench-image bench-peers bench-table demo-image venv system-deps docker-env docs docs-serve

help: ## list the targets (RUNTIME=embedded|docker and env=local|cloud switch the stack targets)
	@echo "usage: make <target> [env=local|cloud] [RUNTIME=embedded|docker]"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-28s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 2-3 minutes)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test,lint,image,postgres,docs]"
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project (done by demo/test when missing)

system-deps: ## optional, root + apt only: nginx (reports + buffering proxy in front of the API), prometheus (scrapes the API), prometheus-alertmanager (routes alerts), wrk (bench-serve load), postgresql + curl (compose-smoke)
	@for pkg in nginx:nginx-light prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager wrk:wrk pg_ctlcluster:postgresql psql:postgresql-client curl:curl; do bin=$${pkg%%:*}; deb=$${pkg##*:}; \
	  if command -v $$bin >/dev/null; then echo "$$bin present"; \
	  elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq $$deb >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$deb >/dev/null 2>&1)) \
	    && echo "$$bin installed" || echo "$$bin not installed (optional)"; \
	  else echo "$$bin absent (optional)"; fi; done

ifeq ($(RUNTIME),docker)
demo: docker-env ## the whole lifecycle: up, data, deployments, sweep, pin, serve (docker: every service, no host venv)
	@$(MAKE) --no-print-directory setup-model-registry
	@$(MAKE) --no-print-directory init_aws
	@$(MAKE) --no-print-directory apply-model-train-flow
	@$(MAKE) --no-print-directory train
	@$(MAKE) --no-print-directory pin
	@$(MAKE) --no-print-directory setup-model-serve
	@$(MAKE) --no-print-directory apply-prediction-reporting
	@echo "== demo done == API http://127.0.0.1:9696  MLflow http://127.0.0.1:5051  Prefect http://127.0.0.1:4200  reports http://127.0.0.1:8888  Grafana http://127.0.0.1:3000; stop with: make down RUNTIME=docker"
else
demo: $(STAMP)
	@$(MAKE) --no-print-directory up
	@$(MAKE) --no-print-directory init_aws
	@$(MAKE) --no-print-directory apply-model-train-flow
	@$(MAKE) --no-print-directory train
	@$(MAKE) --no-print-directory pin
	@if $(BIN)/python -c "import serving.server" 2>/dev/null; then $(MAKE) --no-print-directory start-serve; fi
	@if $(BIN)/python -c "import flows.report_flow" 2>/dev/null; then $(MAKE) --no-print-directory apply-prediction-reporting; fi
	@echo ""
	@echo "== demo done =="
	@$(BIN)/python -c "from churnops.settings import get_settings; from churnops.model_line import for_dataset; from churnops.redact import redact; s = for_dataset(get_settings()); \
	  print(f'  MLflow   {redact(s.mlflow_tracking_uri)}   (experiment {s.experiment_name}, model {s.model_name})'); \
	  print(f'  Prefect  {s.prefect_api_url.removesuffix(\"/api\")}   (deployments {s.training_deployment} ...)'); \
	  print(f'  S3/Kinesis (moto)  {s.aws_endpoint_url}'); \
	  print(f'  API      {s.api_url}'); print(f'  Reports  http://{s.reports_host}:{s.reports_port}')"
	@echo "  stop with: make down"
endif

IMAGE_DATASET ?= raw_digits
IMAGE_MODEL ?= raw-digits-cnn
demo-image: $(STAMP) ## image track: stack up, raw DNG digits -> ISP -> CNN sweep -> rules -> registry -> served on /predict/image
	@$(MAKE) --no-print-directory up
	@$(MAKE) --no-print-directory apply-model-train-flow
	@$(BIN)/python -c "from ops.entry import image_train; image_train()"
	@$(MAKE) --no-print-directory start-serve DATASET=$(IMAGE_DATASET) MODEL_URI=models:/$(IMAGE_MODEL)@champion
	@echo ""
	@echo "== demo-image done =="
	@DATASET=$(IMAGE_DATASET) $(BIN)/python -c "from flows.image_train_flow import demo_done; demo_done()"
	@echo "  stop with: make down"

test: $(STAMP) ## run the whole test suite (bootstraps .venv)
	$(BIN)/python -m pytest -q

run_tests: test ## alias of test

test-code: $(STAMP) ## only the code tests (units and real-server integration)
	$(BIN)/python -m pytest -q -m code

test-data: $(STAMP) ## only the data tests (data sets against their contracts)
	$(BIN)/python -m pytest -q -m data

test-model: $(STAMP) ## only the model-behaviour tests on a freshly trained model (invariance, direction, known cases)
	$(BIN)/python -m pytest -q -m model

up: $(DEPS) ## start the stack: embedded = moto, MLflow, Prefect server + worker (supervisord); docker = registry side
ifeq ($(RUNTIME),docker)
	$(DC) up -d --build --wait $(REGISTRY_SERVICES)
else
	@$(STACK) up
endif

down: $(STOP_DEPS) ## stop the stack (state kept); embedded: waits until every process has exited (SIGKILL after STACK_STOP_TIMEOUT_S)
ifeq ($(RUNTIME),docker)
	$(DC) down
else
	@if [ -x $(STACK) ]; then $(STACK) down; else echo "nothing to stop"; fi
endif

status: $(STOP_DEPS) ## show the stack's processes / containers and their health
ifeq ($(RUNTIME),docker)
	$(DC) ps
else
	@$(STACK) status
endif

logs: $(STOP_DEPS) ## recent log lines of every service (svc=NAME for one)
ifeq ($(RUNTIME),docker)
	$(DC) logs --tail 100 $(svc)
else
	@tail -n 100 $(if $(svc),.stack/logs/$(svc).log,.stack/logs/*.log)
endif

setup-model-registry: $(DEPS) ## the registry side: storage, MLflow, Prefect server + worker (= up)
ifeq ($(RUNTIME),docker)
	$(DC) build
	$(DC) up -d --wait $(REGISTRY_SERVICES)
else
	@$(STACK) up
endif

init_aws: $(DEPS) ## bucket, streams, and a cleaned SHA-256-versioned snapshot (DATA=path|s3://|https://; none = synthetic)
ifeq ($(RUNTIME),docker)
	$(DC) run --rm init-aws
else
	@$(BIN)/churnops-init-aws
endif

apply-model-train-flow: $(DEPS) ## register DATASET's scheduled training deployment (train-churn-model/<dataset>; churn: churn-sweep)
ifeq ($(RUNTIME),docker)
	$(DC) run --rm prefect-worker churnops-deploy train
else
	@$(BIN)/churnops-deploy train
endif

train: $(DEPS) ## run the hyperopt sweep now and wait (progress bar per trial)
ifeq ($(RUNTIME),docker)
	$(DC) run --rm prefect-worker churnops-train
else
	@$(BIN)/churnops-train
endif

pin: $(DEPS) ## write the champion's RUN_ID into .env.local
ifeq ($(RUNTIME),docker)
	$(DC_PIN) churnops-pin
else
	@$(BIN)/churnops-pin
endif

setup-model-serve: $(DEPS) ## stack up, pin the champion if nothing is pinned, start API + consumer (docker: + Mongo, simulators, Prometheus, Grafana, Nginx)
	@$(MAKE) --no-print-directory up
	@grep -q '^RUN_ID=.\+' .env.$(env) 2>/dev/null || $(MAKE) --no-print-directory pin
ifeq ($(RUNTIME),docker)
	$(DC) up -d --wait $(SERVE_SERVICES)
else
	@$(MAKE) --no-print-directory start-serve
endif

start-serve: $(DEPS) ## (re)start the HTTP API on 9696 and the Kinesis consumer(s); returns once /ready says ready
ifeq ($(RUNTIME),docker)
	$(DC) up -d --no-deps --force-recreate --wait $(SERVING)
	$(DC) exec -T api python -m ops.ready --url http://127.0.0.1:9696
else
	@$(STACK) start api consumer
	@$(BIN)/python -m ops.ready
endif

stop-serve: $(STOP_DEPS) ## stop the HTTP API and the Kinesis consumer(s)
ifeq ($(RUNTIME),docker)
	$(DC) stop $(SERVING)
else
	@$(STACK) stop api consumer
endif

apply-prediction-reporting: $(DEPS) ## register the report flow (every 3 h) and the retrain trigger
ifeq ($(RUNTIME),docker)
	$(DC) run --rm prefect-worker churnops-deploy report
else
	@$(BIN)/churnops-deploy report
endif

report: $(DEPS) ## build a drift/quality report of the logged predictions now
ifeq ($(RUNTIME),docker)
	$(DC) run --rm prefect-worker churnops-report
else
	@$(BIN)/churnops-report
endif

simulate: $(DEPS) ## send business traffic over HTTP and Kinesis for a bounded time (SIMULATE_SECONDS)
ifeq ($(RUNTIME),docker)
	$(DC) run --rm --no-deps simulate-http churnops-simulate --allow-remote
else
	@$(BIN)/churnops-simulate
endif

collect-labels: $(DEPS) ## join /feedback outcomes to logged features -> a new snapshot (LABEL_POLICY append|sliding|replace)
ifeq ($(RUNTIME),docker)
	$(DC) run --rm prefect-worker churnops-collect-labels
else
	@$(BIN)/churnops-collect-labels
endif

replay-quarantine: $(STAMP) ## offer the prediction log's quarantined records to the store again (those still refused stay)
	$(BIN)/python -m ops.replay_quarantine

retrain-check: $(STAMP) ## evaluate the retraining trigger now (drift / realized AUC, cooldown)
	@$(BIN)/churnops-retrain

rollback: $(DEPS) ## REASON="..." [VERSION=n]: move champion back (to alias previous, or version n), audited; re-pin RUN_ID
ifeq ($(RUNTIME),docker)
	@VERSION="$(VERSION)" REASON="$(REASON)" $(DC_PIN) churnops-rollback
else
	@VERSION="$(VERSION)" REASON="$(REASON)" $(BIN)/churnops-rollback
endif

promote: $(DEPS) ## VERSION=n REASON="...": make version n the champion by hand (old one -> alias previous), audited; re-pin RUN_ID
ifeq ($(RUNTIME),docker)
	@VERSION="$(VERSION)" REASON="$(REASON)" $(DC_PIN) churnops-promote
else
	@VERSION="$(VERSION)" REASON="$(REASON)" $(BIN)/churnops-promote
endif

reset_all: ## stop everything and delete all local state (embedded: .stack; docker: containers, volumes, secrets)
ifeq ($(RUNTIME),docker)
	$(DC) down -v --remove-orphans
	rm -rf .stack/docker
else
	@if [ -x $(STACK) ]; then $(STACK) reset; else rm -rf .stack; fi
endif

# RUNTIME=docker prerequisite: the docker CLI, and the secrets (env=cloud: from the environment;
# env=local: generated once, kept as long as the volumes that were initialised with them)
docker-env:
	@command -v docker >/dev/null || { echo "ERROR: RUNTIME=docker needs docker with the compose plugin" >&2; exit 2; }
	@if [ "$(env)" = cloud ]; then \
	  missing=""; for v in $(SECRET_VARS); do [ -n "$${!v}" ] || missing="$$missing $$v"; done; \
	  if [ -n "$$missing" ]; then echo "ERROR: env=cloud needs$$missing in the environment (from your secret store)" >&2; exit 2; fi; \
	  mkdir -p $(dir $(DOCKER_SECRETS)); : > $(DOCKER_SECRETS); \
	else \
	  mkdir -p $(dir $(DOCKER_SECRETS)); umask 077; touch $(DOCKER_SECRETS); \
	  for v in $(SECRET_VARS); do grep -q "^$$v=." $(DOCKER_SECRETS) || \
	    echo "$$v=$$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >> $(DOCKER_SECRETS); done; \
	fi

lint: $(STAMP) ## ruff check + format check, import layers (lint-imports, ops.importcheck), hadolint, actionlint, compose schema
	@rc=0; \
	$(BIN)/ruff check $(PY_DIRS) || rc=1; \
	$(BIN)/ruff format --check $(PY_DIRS) || rc=1; \
	$(BIN)/lint-imports --no-cache || rc=1; \
	$(BIN)/python -m ops.importcheck || rc=1; \
	$(BIN)/hadolint Dockerfile && echo "hadolint: Dockerfile ok" || rc=1; \
	$(BIN)/actionlint .github/workflows/*.yml && echo "actionlint: workflows ok" || rc=1; \
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose-registry.yml docker-compose-serve.yml || rc=1; \
	exit $$rc

docs: $(STAMP) ## build the documentation site (mkdocs.yml, docs/) strictly into site/: a broken link or anchor fails
	@NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP) ## serve the documentation site on http://127.0.0.1:8000, rebuilt on every edit
	@NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

compose-smoke: $(STAMP) ## the compose files' own services here without Docker (root: network namespaces): the README's Docker sequence + smoke checks
	$(BIN)/python -m ops.composerun smoke

bench: bench-train bench-serve bench-servers bench-monitor bench-faults bench-loop bench-image bench-peers ## all benchmarks -> bench/results/*.json, then the one table (also written into docs/benchmarks.md)
	$(BIN)/python bench/table.py

bench-table: $(STAMP) ## print the one table of bench/results/*.json and write it into docs/benchmarks.md (+ the footprint table into docs/development.md)
	$(BIN)/python bench/table.py --readme

bench-train: $(STAMP) ## 50-trial sweep on ../shared/data/bank_churners.csv -> bench/results/train.json
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-serve: $(STAMP) ## serving latency/throughput -> bench/results/serve.json
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-servers: $(STAMP) ## granian vs gunicorn gthread vs the former keep-alive worker, client faults, ceiling -> bench/results/servers.json
	$(BIN)/python bench/bench_servers.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-loop: $(STAMP) ## drift -> labels -> retrain -> rules -> promotion -> serving, on the real file -> bench/results/loop.json
	$(BIN)/python bench/bench_loop.py
	$(BIN)/python bench/bench_cbpe_nannyml.py  # NannyML in bench/.venv-nannyml, created on demand
	$(BIN)/python bench/table.py --readme >/dev/null

bench-monitor: $(STAMP) ## report and drift-statistics timings -> bench/results/monitor.json
	$(BIN)/python bench/bench_monitor.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-faults: $(STAMP) ## worker/consumer SIGKILL, store down, MLflow down: failures and losses -> bench/results/faults.json
	$(BIN)/python bench/bench_faults.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-image: $(STAMP) ## raw-digits CNN: accuracy, ISP throughput, ONNX parity/speed, ISP sensitivity, standard images (PNG/JPEG), float vs int8 -> bench/results/image.json
	$(BIN)/python bench/bench_image.py
	$(BIN)/python bench/table.py --readme >/dev/null

bench-peers: $(STAMP) ## our API vs BentoML and MLServer (own venvs under bench/, made on first run), same booster, wrk -> bench/results/peers.json
	$(BIN)/python bench/bench_peers.py
	$(BIN)/python bench/table.py --readme >/dev/null
