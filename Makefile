# wapipe: every entry point a newcomer needs. `make help` lists them.
# Everything is installed by these targets on a fresh clone: the virtualenv and
# pinned Python packages here, the Kafka jars by `wapipe kafka up` (Maven),
# Prometheus and promtool from Debian's package (`make prometheus`).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
QUIX_VENV  := .wapipe/bench-quix
QUIX_STAMP := $(QUIX_VENV)/.installed
FAUST_VENV  := .wapipe/bench-faust
FAUST_STAMP := $(FAUST_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint prometheus unit soak kafka-up kafka-down bench-ingest bench-e2e bench-pipeline bench-processors bench-rules bench-state lock clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv with the pinned dependencies

run: install  ## start Kafka, topics and the ingester in the foreground (Ctrl-C stops all)
	$(BIN)/wapipe run

test: install lint prometheus  ## lint, type-check and run the whole test suite against a real broker
	$(BIN)/pytest

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

prometheus:  ## install Prometheus and promtool (Debian's package) if missing
	bash deploy/prometheus/install-prometheus.sh

unit: install  ## only the fast tests that need no broker
	$(BIN)/pytest -m "not kafka and not soak"

SOAK_SECONDS ?= 1800
SOAK_RATE    ?= 100
soak: install  ## the pipeline for 30 min under steady load: memory, lag, p99, exact results (SOAK_SECONDS=, SOAK_RATE=)
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_RATE=$(SOAK_RATE) $(BIN)/pytest -m soak -s -p no:cacheprovider tests/reliability/test_soak.py

kafka-up: install  ## start the local broker in the background
	$(BIN)/wapipe kafka up

kafka-down: install  ## stop the local broker
	$(BIN)/wapipe kafka down

bench-ingest: install  ## ingester vs bare aiohttp under wrk (installs wrk with apt if missing)
	bash bench/ingest/run.sh

bench-e2e: install  ## p50/p99 from the ingester's 200 to message_state, replies and alerts, the simulator at 1,000 webhooks/s
	$(BIN)/python bench/e2e/bench_e2e.py

bench-pipeline: install  ## receipts written straight to the raw topic, through `wapipe run`, to message_state (receipts/s)
	$(BIN)/python bench/e2e/bench_pipeline.py

bench-processors: install $(QUIX_STAMP) $(FAUST_STAMP)  ## every worker's events/s vs the librdkafka ceiling, the engine's floor, Quix Streams and faust's floor
	$(BIN)/python bench/processors/bench_processors.py

bench-rules: install  ## the funnel's rules alone: microseconds per receipt vs the bare JSON parse (no Kafka)
	$(BIN)/python bench/processors/bench_rules.py

MESSAGES ?= 500000
bench-state: install  ## the funnel's restore: changelog records/s vs librdkafka reading it (MESSAGES=5000000: the target's size)
	$(BIN)/python bench/processors/bench_state.py --messages $(MESSAGES)

# The Quix Streams peer runs in a virtualenv of its own: its pins conflict with ours.
$(QUIX_STAMP): bench/processors/quix-requirements.txt
	rm -rf $(QUIX_VENV)
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# faust's floor runs in a virtualenv of its own too: faust-streaming is the engine the
# processors left, no longer one of the pipeline's dependencies.
$(FAUST_STAMP): bench/processors/faust-requirements.txt
	rm -rf $(FAUST_VENV)
	$(PYTHON) -m venv $(FAUST_VENV)
	$(FAUST_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

lock: install  ## re-pin the whole dependency tree into constraints.txt
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean:  ## remove the virtualenv and local state (broker data, spool)
	rm -rf $(VENV) .wapipe
