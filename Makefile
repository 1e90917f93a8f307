# fairfix: `make demo` runs the main job on the embedded Adult data, `make test` the test suite.
# Both create (or reuse) a virtual environment in .venv and install what they need.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# On these machines torch==2.13.0 is a CPU build found on local disk; installing the
# pin first keeps pip from pulling a multi-GB CUDA build for the `torch>=2.2` range.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,hf]"
	touch $@

DEMO_DIR ?= demo-output

# The whole job on embedded data: train the coloured-digits CNN, audit it, fit the detector, correct
# it under the no-loss guard, audit the bundle and print the before/after table (recipes/digits_color.yaml).
demo: $(BIN)/.installed
	$(BIN)/fairfix run recipes/digits_color.yaml --out $(DEMO_DIR)/digits_color --force

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check fairfix tests benchmarks
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
