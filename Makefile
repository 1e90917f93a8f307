# fairfix: `make demo` runs the whole job on embedded data (coloured digits, then Adult), `make test` the test suite.
# Both create (or reuse) a virtual environment in .venv and install what they need.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# On these machines torch==2.13.0 is a CPU build found on local disk; installing the
# pin first keeps pip from pulling a multi-GB CUDA build for the `torch>=2.2` range.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=
# WordNet 3.0's noun data (Debian's wordnet-base), read by the text shortcut task.
WORDNET ?= /usr/share/wordnet/data.noun

.PHONY: demo test chromium lint bench clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,hf,duckdb,spark,mlflow]"
	@# The spark tests (pyspark, local[2]) need Java 17: Debian's package where it is missing.
	command -v java >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless; } \
	  || { echo "need Java 17 for the spark tests: apt-get install openjdk-17-jre-headless"; exit 2; }
	@# The text shortcut task (recipes/text_shortcut.yaml) reads WordNet 3.0's noun glosses: Debian's package where missing.
	test -f $(WORDNET) || { apt-get update -q && apt-get install -y -q --no-install-recommends wordnet-base; } \
	  || { echo "need WordNet 3.0 for the text shortcut task: apt-get install wordnet-base"; exit 2; }
	touch $@

DEMO_DIR ?= demo-output

# The whole job on embedded data: train the coloured-digits CNN, audit it, fit the detector, correct
# it under the no-loss guard, audit the bundle and print the before/after table (recipes/digits_color.yaml:
# the task where the correction shows); then the same job on the bundled Adult data (recipes/adult.yaml).
# It ends with the digits run's HTML report and the commands to try next.
DIGITS := $(DEMO_DIR)/digits_color
demo: $(BIN)/.installed
	mkdir -p $(DEMO_DIR)
	$(BIN)/fairfix run recipes/digits_color.yaml --out $(DIGITS) --force
	$(BIN)/fairfix run recipes/adult.yaml --out $(DEMO_DIR)/adult --force
	$(BIN)/fairfix report $(DIGITS)/compare.json --html $(DIGITS)/report.html --force
	@echo
	@echo "Next, try:"
	@echo "  open $(DIGITS)/report.html    # the before/after report of the digits run (any browser)"
	@echo "  $(BIN)/fairfix predict digits_color:test --model $(DIGITS)/bundle --keep label --keep colour -o $(DIGITS)/predictions.csv --force"
	@echo "  $(BIN)/fairfix audit $(DIGITS)/predictions.csv --label label --group colour --pred pred --fail-on 'worst_group_accuracy<0.8'"

# The HTML report's headless-Chromium tests need /usr/bin/chromium: install Debian's package
# where the machine allows it (apt-get, root); otherwise say so -- those two tests then skip.
CHROMIUM ?= /usr/bin/chromium

# Lint (ruff, mypy: the configuration in pyproject.toml) first, then the suite.
test: $(BIN)/.installed lint chromium
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: $(CHROMIUM) is missing and apt-get is not available: the headless-Chromium tests will be skipped"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "make test: $(CHROMIUM) is missing and installing it needs root (apt-get install chromium): the headless-Chromium tests will be skipped"; \
	else \
	  echo "make test: installing chromium (apt-get) for the HTML report tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "make test: apt-get install chromium failed: the headless-Chromium tests will be skipped"; \
	fi

lint: $(BIN)/.installed
	$(BIN)/ruff check fairfix tests benchmarks
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
