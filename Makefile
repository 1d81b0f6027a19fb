# Two commands on a fresh clone (README): `make figures` (main job) and `make test` (CI: .ci/run).
# Each creates .venv on first use and installs the project into it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
PROFILE ?= default
CORES ?= all
# pytest processes (pytest-xdist) for the unit and claim tests: CI's 2 cores
TEST_WORKERS ?= 2
export PATH := $(BIN):$(PATH)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: figures test lint unit smoke claims rehearsal bench lab clean

$(VENV)/.installed: pyproject.toml
	@echo "make: creating $(VENV) and installing eoslab with torch, the notebook stack and the test tools (a few minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e ".[test]"
	touch $@

# Recovers on its own after a kill: under a lock that no second `make figures` can take, Snakemake's lock is
# removed only if no Snakemake works in this folder any more (eoslab.snakelock; beside a live one, e.g. `make smoke`,
# it stays and Snakemake says the folder is locked), and incomplete jobs rerun (a killed run resumes).
figures: $(VENV)/.installed  ## every figure of the profile (default: embedded data)
	@mkdir -p .snakemake
	flock --nonblock --conflict-exit-code 75 .snakemake/make-figures.lock sh -c \
	  '{ ! python -m eoslab.snakelock || snakemake --unlock --config profile=$(PROFILE) > /dev/null; } && \
	   snakemake --cores $(CORES) all --config profile=$(PROFILE) --rerun-incomplete'

test: lint unit smoke claims rehearsal  ## what CI runs

lint: $(VENV)/.installed
	ruff check .
	ruff format --check .

unit: $(VENV)/.installed
	pytest -n $(TEST_WORKERS) -m "not claims"

smoke: $(VENV)/.installed  ## the whole DAG on reduced data
	snakemake --cores 2 all --config profile=smoke --quiet rules

claims: $(VENV)/.installed  ## the papers' claims, asserted on the smoke outputs
	pytest -n $(TEST_WORKERS) -m claims

rehearsal: $(VENV)/.installed  ## the paper DAG, every size shrunk, on CIFAR-10/MNIST-format files it writes itself
	python -m eoslab.rehearsal data
	snakemake --cores 2 all --config profile=rehearsal --quiet rules
	python -m eoslab.rehearsal check

bench: $(VENV)/.installed  ## eoslab against PyHessian, hessian-eigenthings, SciPy (~15 min)
	python benchmarks/sharpness_vs_peers.py

lab: $(VENV)/.installed  ## JupyterLab on the notebooks (run by hand, they write to results/explore/)
	jupyter lab notebooks/

clean:  ## every output of the DAG: runs, figures/<profile>/, executed notebooks, logs
	rm -rf data/runs results logs .snakemake $(filter-out figures/README.md,$(wildcard figures/*))
