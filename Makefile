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

# -qq: pip's errors still show; its notices about the machine's own index settings do not
$(BIN)/.installed: pyproject.toml
	@echo "raystilts: setting up $(VENV) (CPU torch first, then raystilts[dev]; minutes, once)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -qq "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@$(BIN)/python -m pip install -qq -e ".[dev]"
	@touch $@
	@echo "raystilts: $(VENV) ready"

demo: $(BIN)/.installed  ## a real small search on the embedded benchmark (about 20 minutes on 2 cores the first time)
	$(BIN)/raystilts demo

test: $(BIN)/.installed  ## the whole test suite, Ray end-to-end tests included (what CI runs)
	$(BIN)/pytest -m "slow or not slow"

test-fast: $(BIN)/.installed  ## unit tests only (no Ray end-to-end)
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check raystilts tests benchmarks
	$(BIN)/mypy raystilts

bench: $(BIN)/.installed  ## every benchmark at full size (search_efficiency and throughput take the longest)
	$(BIN)/python benchmarks/chain_effects.py
	$(BIN)/python benchmarks/analysis_scaling.py
	$(BIN)/python benchmarks/search_efficiency.py
	$(BIN)/python benchmarks/transfer_tables.py --table ../shared/data/transfer/*.csv
	$(BIN)/python benchmarks/cluster_sim.py
	$(BIN)/python benchmarks/throughput.py

# Every script in benchmarks/ at its tiny --smoke size (seconds to a minute each), so that a
# benchmark cannot rot silently; a loop over the folder, so a new script is covered the day it
# lands. All run; the failures are listed at the end and make the target fail. A script that
# hangs (a trial waiting forever for CPUs) is killed after BENCH_SMOKE_TIMEOUT s and fails.
BENCH_SMOKE_TIMEOUT ?= 900
.PHONY: bench-smoke
bench-smoke: $(BIN)/.installed  ## CI: every benchmarks/*.py --smoke must exit 0
	@failed=""; for script in benchmarks/*.py; do \
	  echo "== $$script --smoke"; start=$$(date +%s); \
	  timeout $(BENCH_SMOKE_TIMEOUT) $(BIN)/python $$script --smoke || failed="$$failed $$script"; \
	  echo "== $$script: $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench-smoke failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) raystilts_runs .pytest_cache
