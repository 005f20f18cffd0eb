# mbrec — two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default (CI, laptops). On a GPU machine install a CUDA build into $(VENV) first,
# or pass e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mbrec-installed

.PHONY: setup run test bench ui clean table1 table1-smoke report

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	@touch $@

run: $(STAMP)
	$(BIN)/python -m mbrec $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Speed on the Baby interactions: make bench ARGS="--data DIR" (or MBREC_BENCH_DATA=DIR); one script with
# BENCH=benchmarks/bench_threads.py. The data is not in the repository (benchmarks/README.md).
BENCH ?= $(wildcard benchmarks/bench_*.py)
bench: $(STAMP)
	@for f in $(BENCH); do echo "== $$f"; $(BIN)/python $$f $(ARGS) || exit 1; done

# Table 1 for one dataset and backbone: tune every row on validation, then the seeds (README "Sweeps").
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

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs multirun/[!.]* .cache mlruns mlflow.db
