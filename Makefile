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
	$(BIN)/python -m pip install -q -e ".[dev,hf,duckdb,spark]"
	@# The spark tests (pyspark, local[2]) need Java 17: Debian's package where it is missing.
	command -v java >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless; } \
	  || { echo "need Java 17 for the spark tests: apt-get install openjdk-17-jre-headless"; exit 2; }
	touch $@

DEMO_DIR ?= demo-output

demo: $(BIN)/.installed
	mkdir -p $(DEMO_DIR)
	$(BIN)/fairfix train adult:train --label income --group sex --group race \
	  --out $(DEMO_DIR)/adult-mlp --force
	$(BIN)/fairfix audit adult:test --model $(DEMO_DIR)/adult-mlp \
	  --label income --group sex --group race \
	  --format json --output $(DEMO_DIR)/audit.json --force
	$(BIN)/fairfix audit adult:test --model $(DEMO_DIR)/adult-mlp \
	  --label income --group sex --group race --fail-on "equalized_odds_difference>0.6"

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check fairfix tests benchmarks
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
