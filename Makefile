# fedgate: `make demo` runs the federation locally, `make test` passes the tests.
# Both create .venv and install what they need by themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway federation tests bench
	$(BIN)/ruff format --check gateway federation tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/fedgate demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/propagation.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/tls.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
