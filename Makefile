# Two entry points: `make demo` (train + evaluate a DQN on CartPole) and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a CPU wheel of exactly this version is provided locally.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/qlearn train CartPole-v1 --preset cartpole --run-dir runs/demo-cartpole
	$(BIN)/qlearn eval runs/demo-cartpole --episodes 20

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# One BLAS/OpenMP thread per test worker: on 2 cores, oversubscription made small solves 20x slower.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
