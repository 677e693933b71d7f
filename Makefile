# Two commands from a fresh clone: `make demo` and `make test`. Each sets up .venv first (idempotent).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# torch first, pinned to the CPU build that this machine keeps on disk: a bare `torch`
# requirement would pull several GB of CUDA wheels. On a GPU cluster, pip keeps the CUDA torch
# that is already installed (pyproject asks only torch>=2.3). Override: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-all lint typecheck bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## a real small search on the embedded benchmark (about 6-9 minutes on 2 cores)
	$(BIN)/raystilts demo

test: $(BIN)/.installed  ## the whole test suite, Ray end-to-end tests included (what CI runs)
	$(BIN)/pytest -m "slow or not slow"

test-fast: $(BIN)/.installed  ## unit tests only (no Ray end-to-end)
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check raystilts tests benchmarks
	$(BIN)/mypy raystilts

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/chain_effects.py

clean:
	rm -rf $(VENV) raystilts_runs .pytest_cache
