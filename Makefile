# ChurnOps: the whole lifecycle on one laptop. `make demo` then `make test`; `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

env ?= local
export ENV := $(env)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STACK := $(BIN)/churnops-stack

.PHONY: help demo test run_tests up down status init_aws apply-model-train-flow train pin \
        setup-model-serve start-serve stop-serve apply-prediction-reporting report simulate \
        retrain-check collect-labels rollback promote reset_all lint bench bench-train bench-serve bench-monitor bench-loop venv system-deps

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-28s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 2-3 minutes)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project (done by demo/test when missing)

system-deps: ## optional, root + apt only: nginx (reports; a Python server is the fallback) and wrk (bench-serve load)
	@for pkg in nginx:nginx-light wrk:wrk; do bin=$${pkg%%:*}; deb=$${pkg##*:}; \
	  if command -v $$bin >/dev/null; then echo "$$bin present"; \
	  elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq $$deb >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$deb >/dev/null 2>&1)) \
	    && echo "$$bin installed" || echo "$$bin not installed (optional)"; \
	  else echo "$$bin absent (optional)"; fi; done

demo: $(STAMP) ## the whole lifecycle on the embedded stack: up, data, deployments, sweep, pin, serve
	@$(MAKE) --no-print-directory up
	@$(MAKE) --no-print-directory init_aws
	@$(MAKE) --no-print-directory apply-model-train-flow
	@$(MAKE) --no-print-directory train
	@$(MAKE) --no-print-directory pin
	@if $(BIN)/python -c "import serving.gunicorn_conf" 2>/dev/null; then $(MAKE) --no-print-directory start-serve; fi
	@if $(BIN)/python -c "import flows.report_flow" 2>/dev/null; then $(MAKE) --no-print-directory apply-prediction-reporting; fi
	@echo ""
	@echo "== demo done =="
	@$(BIN)/python -c "from churnops.settings import get_settings; s = get_settings(); \
	  print(f'  MLflow   {s.mlflow_tracking_uri}   (experiment {s.experiment_name}, model {s.model_name})'); \
	  print(f'  Prefect  {s.prefect_api_url.removesuffix(\"/api\")}   (deployments train-churn-model/churn-sweep ...)'); \
	  print(f'  S3/Kinesis (moto)  {s.aws_endpoint_url}'); \
	  print(f'  API      {s.api_url}'); print(f'  Reports  http://{s.reports_host}:{s.reports_port}')"
	@echo "  stop with: make down"

test: $(STAMP) ## run the whole test suite (bootstraps .venv)
	$(BIN)/python -m pytest -q

run_tests: test ## alias of test

up: $(STAMP) ## start the embedded stack (moto, MLflow, Prefect server + worker) under supervisord
	@$(STACK) up

down: ## stop the embedded stack
	@test -x $(STACK) && $(STACK) down || echo "nothing to stop"

status: ## show the stack's processes and health
	@$(STACK) status

init_aws: $(STAMP) ## bucket, streams, and a cleaned SHA-256-versioned snapshot (DATA=path|s3://|https://; none = synthetic)
	@$(BIN)/churnops-init-aws

apply-model-train-flow: $(STAMP) ## register the scheduled training deployment (every TRAIN_INTERVAL_HOURS, default 6)
	@$(BIN)/churnops-deploy train

train: $(STAMP) ## run the hyperopt sweep now and wait (progress bar per trial)
	@$(BIN)/churnops-train

pin: $(STAMP) ## write the champion's RUN_ID into .env.local
	@$(BIN)/churnops-pin

setup-model-serve: $(STAMP) ## stack up, pin the champion if nothing is pinned, start API + consumer
	@$(MAKE) --no-print-directory up
	@grep -q '^RUN_ID=.\+' .env.$(env) 2>/dev/null || $(MAKE) --no-print-directory pin
	@$(MAKE) --no-print-directory start-serve

start-serve: $(STAMP) ## (re)start the HTTP API on 9696 and the Kinesis consumer on the pinned model
	@$(STACK) start api consumer

stop-serve: ## stop the HTTP API and the Kinesis consumer
	@$(STACK) stop api consumer

apply-prediction-reporting: $(STAMP) ## register the report flow (every 3 h) and the retrain trigger
	@$(BIN)/churnops-deploy report

report: $(STAMP) ## build a drift/quality report of the logged predictions now
	@$(BIN)/churnops-report

simulate: $(STAMP) ## send business traffic over HTTP and Kinesis for a bounded time (SIMULATE_SECONDS)
	@$(BIN)/churnops-simulate

collect-labels: $(STAMP) ## join /feedback outcomes to logged features -> a new snapshot (LABEL_POLICY append|sliding|replace)
	@$(BIN)/churnops-collect-labels

retrain-check: $(STAMP) ## evaluate the retraining trigger now (drift / realized AUC, cooldown)
	@$(BIN)/churnops-retrain

rollback: $(STAMP) ## REASON="..." [VERSION=n]: move champion back (to alias previous, or version n), audited; re-pin RUN_ID
	@VERSION="$(VERSION)" REASON="$(REASON)" $(BIN)/churnops-rollback

promote: $(STAMP) ## VERSION=n REASON="...": make version n the champion by hand (old one -> alias previous), audited; re-pin RUN_ID
	@VERSION="$(VERSION)" REASON="$(REASON)" $(BIN)/churnops-promote

reset_all: ## stop everything and delete all local state (.stack: MLflow db, Prefect db, logs, reports)
	@$(MAKE) --no-print-directory down || true
	rm -rf .stack

lint: $(STAMP) ## ruff
	$(BIN)/ruff check churnops flows serving simulators reporting bench tests

bench: bench-train bench-serve bench-monitor bench-loop ## all benchmarks -> bench/results/*.json

bench-train: $(STAMP) ## 50-trial sweep on ../shared/data/bank_churners.csv -> bench/results/train.json
	$(BIN)/python bench/bench_train.py

bench-serve: $(STAMP) ## serving latency/throughput -> bench/results/serve.json
	$(BIN)/python bench/bench_serve.py

bench-loop: $(STAMP) ## drift -> labels -> retrain -> rules -> promotion -> serving, on the real file -> bench/results/loop.json
	$(BIN)/python bench/bench_loop.py

bench-monitor: $(STAMP) ## report and drift-statistics timings -> bench/results/monitor.json
	$(BIN)/python bench/bench_monitor.py
