# mbrec — two commands from a fresh clone: `make run` and `make test`. Tests in tiers (docs/testing.md):
# `make test` (fast), `make test-full` (everything CI runs), `make test-cluster` (a real Slurm), `make lint`.
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default (CI, laptops). On a GPU machine install a CUDA build into $(VENV) first,
# or pass e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mbrec-installed

.PHONY: setup run test test-full test-cluster lint bench ui ui-check clean table1 table1-smoke report

setup: $(STAMP)

# One line while installing; pip's output goes to $(SETUP_LOG), whose end is shown if it fails.
SETUP_LOG := $(VENV)/setup.log
$(STAMP): pyproject.toml
	@printf 'setup: installing mbrec and its dependencies into $(VENV) (log: $(SETUP_LOG)) ... '
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "failed: $(PYTHON) -m venv $(VENV)"; exit 1; }
	@{ $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH); } > $(SETUP_LOG) 2>&1 \
	  && $(BIN)/pip install -e ".[dev]" >> $(SETUP_LOG) 2>&1 \
	  || { echo "failed"; tail -n 25 $(SETUP_LOG); echo "setup failed: the full log is $(SETUP_LOG)"; exit 1; }
	@# the old hydra-optuna-sweeper (optuna < 3) registers the same sampler configs as mbrec_optuna
	@$(BIN)/pip uninstall -y -q hydra-optuna-sweeper >> $(SETUP_LOG) 2>&1 || true
	@touch $@
	@echo "done"

run: $(STAMP)
	$(BIN)/python -m mbrec $(ARGS)

# The fast tier: unit, contract and small end-to-end tests, everything not marked slow (or cluster).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" $(PYTEST_ARGS)

# The cluster extra (hydra-submitit-launcher: hydra/launcher=local_parallel|slurm), if missing.
CLUSTER_EXTRA = $(BIN)/python -c "import hydra_plugins.hydra_submitit_launcher" 2>/dev/null \
	|| { printf 'installing the cluster extra (log: $(SETUP_LOG)) ... '; \
	     $(BIN)/pip install -e ".[dev,cluster]" >> $(SETUP_LOG) 2>&1 && echo done; } \
	|| { echo "failed"; tail -n 25 $(SETUP_LOG); exit 1; }

# Everything but the real-Slurm test: the fast tier, then benchmarks' smoke runs, subprocess sweeps, fault
# injection and the parallel-trials sweep (with the cluster extra). What CI runs.
test-full: $(STAMP)
	@$(CLUSTER_EXTRA)
	$(BIN)/python -m pytest -q -m "not cluster" $(PYTEST_ARGS)

# A sweep run by a real single-node Slurm (started and stopped here; needs root, installs slurm-wlm and
# munge if missing) through the submitit launcher (the cluster extra). docs/sweeps.md "Cluster test".
test-cluster: $(STAMP)
	@$(CLUSTER_EXTRA)
	@start=$$(date +%s); env=$$(scripts/cluster/slurm-up.sh) || { scripts/cluster/slurm-down.sh; exit 1; }; \
	 eval "$$env"; MBREC_REQUIRE_SLURM=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m cluster -rs tests/test_cluster.py $(PYTEST_ARGS); rc=$$?; \
	 scripts/cluster/slurm-down.sh; echo "test-cluster: $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

# ruff, configured in pyproject.toml [tool.ruff].
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts $(ARGS)

# Speed on the Baby interactions: make bench ARGS="--data DIR" (or MBREC_BENCH_DATA=DIR); one script with
# BENCH=benchmarks/bench_threads.py. The data is not in the repository (benchmarks/README.md).
BENCH ?= $(wildcard benchmarks/bench_*.py)
bench: $(STAMP)
	@for f in $(BENCH); do echo "== $$f"; $(BIN)/python $$f $(ARGS) || exit 1; done

# Table 1 for one dataset and backbone: tune every row on validation, then the seeds (docs/sweeps.md "The paper's tables").
DATASET  ?= synthetic
BACKBONE ?= vbpr
table1: $(STAMP)
	$(BIN)/python -m mbrec.sweep table1 --dataset $(DATASET) --backbone $(BACKBONE) $(ARGS)

table1-smoke: $(STAMP)
	$(BIN)/python -m mbrec.sweep table1 --smoke --backbone $(BACKBONE) --seeds 0,1,2 $(ARGS)

# Tables (and figures) from the MLflow runs into reports/: e.g. make report REPORTS="table3 figures" ARGS=--paper
REPORTS ?= table1 table2
report: $(STAMP)
	@for t in $(REPORTS); do $(BIN)/python -m mbrec.report $$t --out reports $(ARGS) || exit 1; done

# The MLflow UI on the project's store, one light server: make ui PORT=5001 ARGS="--host 0.0.0.0"
# (prints, per experiment, the address that opens its runs in the "mbrec: metrics" view; docs/mlflow.md)
PORT ?= 5000
ui: $(STAMP)
	@$(BIN)/python scripts/ui.py --port $(PORT) $(ARGS)

# The UI in headless Chromium: tiny runs into a temporary store, screenshots + page checks in outputs/ui-check/
# (needs chromium; not part of `make test`). ARGS="--tracking-uri sqlite:///mlflow.db" looks at the project's store.
ui-check: $(STAMP)
	$(BIN)/python scripts/ui_check.py $(ARGS)

clean:
	rm -rf outputs multirun/[!.]* .cache mlruns mlflow.db
