# brainfm: every entry point bootstraps its own virtual environment (.venv) on first use.
#   make demo    run the whole workflow on the embedded phantom cohort (config/config.yaml)
#   make test    run the test suite (fast set; includes the tiny end-to-end demo DAG)
#   make test-cluster  start a one-host SLURM cluster (root; installs Debian's slurm-wlm, munge,
#                      mariadb when missing), run the cluster tests through profiles/slurm, stop it
#   make plan    before a paper run: datasets and weights found or missing, jobs per rule, SLURM
#                submissions after grouping, projected disk and GPU-hours (PLAN_CONFIG=config/paper.yaml)
# Other targets: test-slow, paper-dryrun, lint, bench, report, clean.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
CORES    ?= 2
# The tested set of versions; set CONSTRAINTS= to resolve freely (e.g. on macOS or another CUDA).
CONSTRAINTS ?= constraints.txt
PIP_C    := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
# rules call the `brainfm` CLI: put the project venv first on PATH for Snakemake and its jobs
export PATH := $(abspath $(BIN)):$(PATH)
SMK      := $(BIN)/snakemake --workflow-profile profiles/default --cores $(CORES)
STAMP    := $(VENV)/.installed
PLAN_CONFIG ?= config/paper.yaml

.PHONY: venv demo test test-slow test-cluster paper-dryrun plan lint bench report clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision must come from one install command (see README, "Installation").
	$(BIN)/pip install -q $(PIP_C) torch torchvision
	$(BIN)/pip install -q $(PIP_C) -e '.[test]'
	touch $(STAMP)

# `brainfm preload` imports torch, timm, pandas... once and forks every brainfm step from it (local runs only)
demo: $(STAMP)
	$(BIN)/brainfm preload -- $(SMK) --configfile config/config.yaml
	$(SMK) --configfile config/config.yaml --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" -n $(CORES) --dist loadgroup

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not cluster"

test-cluster: $(STAMP)
	BRAINFM_REQUIRE_SLURM=1 bash tests/cluster/with_slurm.sh $(BIN)/python -m pytest -q -m cluster tests/cluster

paper-dryrun: $(STAMP)
	$(SMK) --configfile config/paper.yaml -n

plan: $(STAMP)
	$(BIN)/brainfm plan --config $(PLAN_CONFIG)

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/config.yaml

bench: $(STAMP)
	$(BIN)/brainfm bench --out results/bench

report: $(STAMP)
	$(SMK) --configfile config/config.yaml --report results/report.html

clean:
	rm -rf results/* .snakemake
