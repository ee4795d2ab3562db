# Everything builds its own environment from nothing: python3 and make are all a machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint typecheck unit sandbox demo bench bench-scaling clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest

test: lint typecheck unit

# Benchmarks are not part of `make test`: see README "Benchmarks". BENCH_ARGS passes options.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# 100k and 1M events side by side (memory must stay flat), with py-spy profiles; ~10 minutes.
bench-scaling: $(BIN)/.installed
	$(BIN)/python -m bench.run --events 100000 1000000 --profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
