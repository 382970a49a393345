# Laneway developer entry points. Every target does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

# Pins every transitive dependency at what the venv holds now.
lock: install
	@{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^laneway'; } > constraints.tmp
	@mv constraints.tmp constraints.txt

.PHONY: lock install test lint unit integration demo controlplane controlplane-stop controlplane-binaries \
        bench kind-e2e images clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

controlplane-binaries:
	@tests/controlplane/build.sh >/dev/null

lint: install
	$(BIN)/ruff check .

# The whole suite: unit, integration against a real API server, and end to end.
test: install controlplane-binaries lint
	$(BIN)/pytest -p no:cacheprovider tests

unit: install
	$(BIN)/pytest -p no:cacheprovider tests/unit

demo: install
	$(BIN)/laneway demo

# Starts etcd, kube-apiserver and kube-controller-manager in the background; the last line printed
# is the kubeconfig path.
controlplane: install controlplane-binaries
	@$(BIN)/python -m tests.controlplane start

controlplane-stop: install
	@$(BIN)/python -m tests.controlplane stop

bench: install
	$(BIN)/python bench/run.py

images:
	docker build -t laneway:dev -f Dockerfile .

kind-e2e:
	scripts/kind-e2e.sh

clean:
	rm -rf $(VENV) build *.egg-info laneway-eval
