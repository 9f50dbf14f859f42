# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint format bench clean install

install: $(STAMP)

# Reinstall only when the dependency description changes.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: any other torch spec downloads a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[pipeline,dev,demo]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/weightmapper migrate configs/example.yaml

test: $(STAMP)
	$(BIN)/ruff check src flows tests bench
	$(BIN)/ruff format --check src flows tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src flows tests bench
	$(BIN)/ruff format --check src flows tests bench

format: $(STAMP)
	$(BIN)/ruff format src flows tests bench
	$(BIN)/ruff check --fix src flows tests bench

# Benchmarks print tables; they never assert. The large ones (checkpoint_io, convert,
# pipeline) write gigabytes to a temp dir: run them one by one with --help first.
bench: $(STAMP)
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/accuracy.py --heldout
	$(BIN)/python bench/speed.py --sizes 1k,10k
	$(BIN)/python bench/cli_startup.py

clean:
	rm -rf $(VENV) .weightmapper .demo .pytest_cache .ruff_cache
