# Two commands for a fresh machine: `make demo` and `make test`; both run `make setup` first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test-deps docs test test-fast demo reproduce serve bench clean-data cluster-up cluster-down cluster-status

MODEL ?= models:/cast-ssv2@champion
PORT ?= 5001

setup: $(STAMP)

# Idempotent: re-runs pip only when pyproject.toml changes. Registries only, nothing else downloaded.
$(STAMP): pyproject.toml
	bash infra/local/install_ffmpeg.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,docs]'
	touch $(STAMP)

# The docs site (docs/, mkdocs.yml) into build/site. --strict: a broken link, anchor or a page missing
# from the docs folder fails the build. Offline: pinned packages, no remote inventories.
docs: setup
	$(BIN)/mkdocs build --strict --quiet -d build/site

# What the tests run beside Python: Debian's ffmpeg (the fidelity tests' reference decoder) and
# PostgreSQL's server binaries (the cluster tests start their own server); each installed only when missing.
test-deps:
	bash infra/local/install_ffmpeg.sh
	bash infra/local/cluster/install_postgres.sh

test: docs test-deps
	$(BIN)/python -m pytest -q

test-fast: docs test-deps
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/python workflows/demo.py

# MLflow's scoring server on a registered model (make demo registers models:/cast-ssv2@champion).
serve: setup
	$(BIN)/python workflows/serve.py $(MODEL) --port $(PORT)

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
