# Every target installs what it needs: `make test` works on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Lambda's runtime is python3.12; pyenv keeps one even when it is not the selected version.
PYTHON312 ?= $(shell for candidate in $$(command -v python3.12) $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12; do \
	"$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$candidate"; break; }; done)
export SAM_CLI_TELEMETRY := 0
# Independent prerequisites (the project venv, the checkov venv, npm) install side by side.
MAKEFLAGS += --jobs=2
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)

STATE_FILE ?= .local-stack.json
BUILD_DIR ?= .aws-sam/build
SCENARIO ?= default
PAIRS ?= 200
SLOTS ?= 3
GENERATION_SECONDS ?= 15

.PHONY: help
help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt constraints.txt layers/common/requirements.txt pyproject.toml
	@test -n "$(PYTHON312)" || { echo "python3.12 not found (pyenv install 3.12 or apt-get install python3.12)"; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@# The `lipsync` command line (.venv/bin/lipsync), editable; its dependencies are pinned above.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --silent --no-audit --no-fund
	touch $@

.PHONY: install
install: $(BIN)/.installed node_modules/.installed  ## Create .venv and install the pinned tools

# Tools that pin their own dependencies (conflicting with constraints.txt) live in venvs of their own:
# checkov (make lint) in .venv-checkov, MiniStack (make deploy-test; it pins botocore exactly) in
# .venv-ministack, each from requirements-<tool>.txt.
CHECKOV_VENV := .venv-checkov
MINISTACK_VENV := .venv-ministack
.venv-%/.installed: requirements-%.txt
	@test -n "$(PYTHON312)" || { echo "python3.12 not found (pyenv install 3.12 or apt-get install python3.12)"; exit 1; }
	test -x .venv-$*/bin/python || $(PYTHON312) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

.PHONY: lint
lint: install $(CHECKOV_VENV)/.installed  ## ruff, mypy, bandit, sam validate --lint, cfn-lint, checkov, asl-validator
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# Every handler is a module named app, so each is checked on its own.
	for handler in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$handler || exit 1; done
	$(BIN)/bandit -c pyproject.toml -r layers functions local cli --quiet
	$(BIN)/sam validate --lint
	$(BIN)/cfn-lint template.yaml
	@# Skips: .checkov.yaml (a kind of resource, with the reason) and the template's Metadata (one resource).
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml --file template.yaml
	asl-validator --json-path statemachine/job_lifecycle.asl.json

.PHONY: test
test: lint $(MINISTACK_VENV)/.installed  ## Everything: linters, unit, integration, end-to-end and sam deploy tests, then sam local in Docker
	@# Two workers; unit tests first, with no one-machine stack: their in-process moto resets backends
	@# a stack shares. The sam deploy test (MiniStack, no moto; mostly waiting) runs beside them.
	@# Docker, the Lambda image and the build are prepared meanwhile (mostly downloads and disk).
	local/lambda_image/sam_local.sh --alongside \
		'$(PY) -m pytest -n 2 --dist loadfile tests/unit tests/deploy && $(PY) -m pytest -n 2 --dist loadfile tests/integration tests/e2e tests/cli'

.PHONY: unit
unit: install  ## Unit tests only (no network)
	$(PY) -m pytest tests/unit

.PHONY: deploy-test
deploy-test: install $(MINISTACK_VENV)/.installed  ## sam build + a real sam deploy into MiniStack, a pair through the deployed stack, sam delete
	$(PY) -m pytest tests/deploy

.PHONY: build
build: install  ## sam build, then ship compiled bytecode in the artifacts
	$(BIN)/sam build --build-dir $(BUILD_DIR) --cache-dir $(BUILD_DIR).cache
	@# SAM ships no bytecode; without it every cold start recompiles (about +0.6 s).
	$(PY) -m compileall -q --invalidation-mode unchecked-hash $(BUILD_DIR)

.PHONY: sam-local
sam-local: install  ## sam local invoke/start-api in Docker (installed and started if missing) against the stack on Docker's bridge
	local/lambda_image/sam_local.sh

.PHONY: local-stack
local-stack: install  ## Run the one-machine stack (moto + sync.so emulator) until Ctrl-C
	$(PY) -m local.stack --state-file $(STATE_FILE)

.PHONY: demo
demo: install  ## The whole pipeline end to end on one machine (SCENARIO=lost-webhook: polling; SCENARIO=bulk: the queue)
	$(PY) -m local.demo --scenario $(SCENARIO)

.PHONY: bench
bench: install  ## Cold-import times, layer size, transitions and API calls per job, cost per 1,000 jobs
	$(PY) -m tests.bench

.PHONY: load
load: install  ## 10,000 queued jobs; then PAIRS pairs (200) on a SLOTS-slot plan (3): completion, POSTs per job, slot use, drain, latency
	$(PY) -m pytest tests/load -q
	$(PY) -m local.load --pairs $(PAIRS) --slots $(SLOTS) --generation-seconds $(GENERATION_SECONDS)

.PHONY: format
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: clean
clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache $(STATE_FILE)
