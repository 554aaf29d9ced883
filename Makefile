# Two commands for a fresh machine: `make demo` and `make test`; both run `make setup` first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast demo reproduce bench clean-data cluster-up cluster-down cluster-status

setup: $(STAMP)

# Idempotent: re-runs pip only when pyproject.toml changes. Registries only, nothing else downloaded.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/python workflows/demo.py

# The paper's ablation on the synthetic tasks (docs/reproduce.md); ARGS=--full for more seeds.
reproduce: setup
	$(BIN)/python workflows/reproduce.py $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.model_speed
	$(BIN)/python -m benchmarks.data_speed
	$(BIN)/python -m benchmarks.infer_speed

clean-data:
	rm -rf data/demo data/ablation

# The cluster stack on this machine (infra/local/cluster): Postgres, an S3 server, MLflow with logins,
# a Ray head and three worker nodes. Installs Debian's postgresql when it is missing.
cluster-up: setup
	bash infra/local/cluster/install_postgres.sh
	$(BIN)/python infra/local/cluster/stack.py up

cluster-down:
	$(BIN)/python infra/local/cluster/stack.py down

cluster-status:
	$(BIN)/python infra/local/cluster/stack.py status
