# The two commands of the README, `make demo` and `make test`, and `make bench` (bench/README.md).
# Each bootstraps .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

# `make demo PORT=9090` when 8080 is taken.
demo: $(VENV)/.installed
	$(BIN)/cancel-gateway demo $(if $(PORT),--port $(PORT))

check: $(VENV)/.installed-dev
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/vulture gateway bench vulture_whitelist.py --min-confidence 60 \
		--ignore-names model_config --ignore-decorators "@field_validator,@model_validator"

# The tests that open no socket and start no process (markers in pyproject.toml): seconds.
unit: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not e2e and not socket and not process"

# What CI runs (.ci/run): the checks, then every test.
test: check
	$(BIN)/pytest

# The benchmark (bench/README.md): `make bench`, or `make bench BENCH_ARGS='--quick'`,
# `BENCH_ARGS='--only c64 --duration 20'`. Installs wrk from Debian's packages when missing,
# and py-spy in the venv for `--profile`.
bench: $(VENV)/.installed
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(if $(findstring --profile,$(BENCH_ARGS)),test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
