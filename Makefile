# The two commands a newcomer runs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export PYTHONUNBUFFERED := 1
# The venv's tools first: DeepSpeed builds its CPU op with the ninja it finds on PATH, and two different ninjas
# would each rebuild the other's cached build.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

LINT_PATHS := $(wildcard padnet_dist tests bench cluster)

.PHONY: test demo lint format bench clean setup

setup: $(STAMP)

# torch and torchvision first and pinned to the CPU-capable builds this machine class serves from
# local disk; everything else from pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

test: lint
	bash cluster/slurm_local/ensure_packages.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m padnet_dist.demo

bench: $(STAMP)
	for script in bench/model_cost.py bench/loader_throughput.py bench/train_overhead.py bench/checkpoint_block.py bench/scaling.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs/demo .cache/demo
