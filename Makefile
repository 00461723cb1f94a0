# switchboard — the two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra
AZURITE_DIR ?= .azurite

AZURITE_BLOB_PORT ?= 10000
AZURITE_QUEUE_PORT ?= 10001
AZURITE_TABLE_PORT ?= 10002
TWILIO_FAKE_PORT ?= 4010

PHONY_EXTRA := twilio-fake-start twilio-fake-stop twilio-fake-fail
.PHONY: $(PHONY_EXTRA) run test install install-dev install-infra node azurite-start azurite-stop bench soak clean twilio-spec

$(VENV)/.installed-runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# checkov pins many packages of its own, so it lives in a separate venv.
$(INFRA_VENV)/.installed: requirements-infra.txt
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r requirements-infra.txt
	touch $@

# npm: `make run` needs only package.json's dependencies (Azurite); `make test` also the devDependencies (Prism, the
# Kusto parser). Both install from package-lock.json. A full install counts for `make run` too (npm ci would
# otherwise remove what the tests need).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@ node_modules/.installed-run

node_modules/.installed-run: package.json package-lock.json
	@if [ node_modules/.installed -nt package.json ] && [ node_modules/.installed -nt package-lock.json ]; then :; \
	else npm ci --omit=dev --no-audit --no-fund --loglevel=error; fi
	touch $@

install: $(VENV)/.installed-runtime node_modules/.installed-run
install-dev: $(VENV)/.installed-dev node_modules/.installed
install-infra: $(INFRA_VENV)/.installed
node: node_modules/.installed

local.settings.json:
	cp local.settings.json.example local.settings.json
	@echo "Created local.settings.json from local.settings.json.example (edit it to add your Twilio credentials)."

## make run: the app on http://localhost:7071/api/... with Azurite (data in .azurite/) and the offline Twilio fake on
## :4010: `func start` when Core Tools are installed, else the built-in local host (devhost/run.py says which).
## LOCAL_HTTP_PORT, AZURITE_{BLOB,QUEUE,TABLE}_PORT and TWILIO_FAKE_PORT move them. Ctrl-C stops everything it started.
run: install local.settings.json
	@$(PY) -m devhost.run

azurite-start: node_modules/.installed-run
	@mkdir -p $(AZURITE_DIR)
	@if [ -f $(AZURITE_DIR)/pid ] && kill -0 $$(cat $(AZURITE_DIR)/pid) 2>/dev/null; then echo "Azurite already running (pid $$(cat $(AZURITE_DIR)/pid))"; else \
	  nohup node_modules/.bin/azurite --silent --disableTelemetry --skipApiVersionCheck --location $(AZURITE_DIR) \
	    --blobHost 127.0.0.1 --blobPort $(AZURITE_BLOB_PORT) --queueHost 127.0.0.1 --queuePort $(AZURITE_QUEUE_PORT) \
	    --tableHost 127.0.0.1 --tablePort $(AZURITE_TABLE_PORT) >$(AZURITE_DIR)/azurite.log 2>&1 & echo $$! > $(AZURITE_DIR)/pid; \
	  echo "Azurite started (blob $(AZURITE_BLOB_PORT), queue $(AZURITE_QUEUE_PORT), table $(AZURITE_TABLE_PORT); data in $(AZURITE_DIR)/)"; fi

azurite-stop:
	@if [ -f $(AZURITE_DIR)/pid ]; then kill $$(cat $(AZURITE_DIR)/pid) 2>/dev/null || true; rm -f $(AZURITE_DIR)/pid; echo "Azurite stopped"; fi

# The offline Twilio for local runs (TWILIO_API_BASE_URL=http://127.0.0.1:4010 in local.settings.json.example;
# devhost/twilio_fake.py). make run starts its own; these are for running it alone.
twilio-fake-start: install local.settings.json
	@mkdir -p $(AZURITE_DIR)
	@if [ -f $(AZURITE_DIR)/twilio-fake.pid ] && kill -0 $$(cat $(AZURITE_DIR)/twilio-fake.pid) 2>/dev/null; then echo "Twilio fake already running"; else \
	  nohup $(PY) -m devhost.twilio_fake --port $(TWILIO_FAKE_PORT) >$(AZURITE_DIR)/twilio-fake.log 2>&1 & echo $$! > $(AZURITE_DIR)/twilio-fake.pid; \
	  echo "Offline Twilio fake on http://127.0.0.1:$(TWILIO_FAKE_PORT) (log: $(AZURITE_DIR)/twilio-fake.log)"; fi

twilio-fake-stop:
	@if [ -f $(AZURITE_DIR)/twilio-fake.pid ]; then kill $$(cat $(AZURITE_DIR)/twilio-fake.pid) 2>/dev/null || true; rm -f $(AZURITE_DIR)/twilio-fake.pid; fi

## make twilio-fake-fail FAULT=21610 [COUNT=2]: the running local fake answers the next send(s) with that Twilio error
## (FAULT=clear: none pending). `$(PY) -m devhost.twilio_fake fail --help` lists the faults and what each does.
twilio-fake-fail:
	@if [ "$(FAULT)" = clear ]; then $(PY) -m devhost.twilio_fake clear; \
	else $(PY) -m devhost.twilio_fake fail $(or $(FAULT),$(error FAULT= is required, e.g. FAULT=21610)) --count $(or $(COUNT),1); fi

## make test: install everything, start the local peers inside the tests, run the whole suite.
test: install-dev install-infra twilio-spec
	$(VENV)/bin/ruff check shared function_app.py tests bench devhost
	$(PY) -m pytest

## make twilio-spec: Twilio's OpenAPI spec for the contract tests. $$TWILIO_OAI_SPEC or ../shared/twilio-oai/ are used
## as they are; only when neither exists (and not in CI) is it downloaded once into .cache/ (never committed).
TWILIO_SPEC_SHARED := $(abspath $(CURDIR)/../shared/twilio-oai/twilio_api_v2010.json)
TWILIO_SPEC_CACHE := .cache/twilio-oai/twilio_api_v2010.json
TWILIO_SPEC_URL := https://raw.githubusercontent.com/twilio/twilio-oai/main/spec/json/twilio_api_v2010.json
twilio-spec:
	@if [ -n "$$TWILIO_OAI_SPEC" ] && [ -f "$$TWILIO_OAI_SPEC" ]; then echo "Twilio spec: $$TWILIO_OAI_SPEC"; \
	elif [ -f "$(TWILIO_SPEC_SHARED)" ]; then echo "Twilio spec: $(TWILIO_SPEC_SHARED)"; \
	elif [ -f "$(TWILIO_SPEC_CACHE)" ]; then echo "Twilio spec: $(TWILIO_SPEC_CACHE)"; \
	elif [ -n "$$CI" ]; then echo "Twilio spec not found: CI must provide it (TWILIO_OAI_SPEC or ../shared/twilio-oai/)" >&2; exit 1; \
	else mkdir -p $(dir $(TWILIO_SPEC_CACHE)) && curl -fsSL --retry 3 -o $(TWILIO_SPEC_CACHE).part $(TWILIO_SPEC_URL) \
	  && mv $(TWILIO_SPEC_CACHE).part $(TWILIO_SPEC_CACHE) && echo "Twilio spec downloaded to $(TWILIO_SPEC_CACHE)"; fi

bench: install-dev
	$(PY) -m bench

soak: install-dev
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules $(AZURITE_DIR) .pytest_cache .hypothesis
