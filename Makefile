# Two commands from a fresh clone: `make demo` and `make test`. Each sets up .venv first (idempotent).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# torch first, pinned to a CPU build: a bare `torch` requirement pulls several GB of CUDA
# wheels. Our dev machines keep torch 2.13.0+cpu in pip's find-links; elsewhere add PyTorch's
# CPU index: make TORCH_INDEX=https://download.pytorch.org/whl/cpu demo
# On a GPU machine an installed CUDA torch is kept (pyproject asks only torch>=2.3).
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## a real small search on the embedded benchmark (about 9 minutes on 2 cores, first run)
	$(BIN)/raystilts demo

test: $(BIN)/.installed  ## the whole test suite, Ray end-to-end tests included (what CI runs)
	$(BIN)/pytest -m "slow or not slow"

test-fast: $(BIN)/.installed  ## unit tests only (no Ray end-to-end)
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check raystilts tests benchmarks
	$(BIN)/mypy raystilts

bench: $(BIN)/.installed  ## chain effects over seeds; analysis scaling vs mlflow.search_runs; search efficiency vs grid and random
	$(BIN)/python benchmarks/chain_effects.py
	$(BIN)/python benchmarks/analysis_scaling.py
	$(BIN)/python benchmarks/search_efficiency.py

clean:
	rm -rf $(VENV) raystilts_runs .pytest_cache
