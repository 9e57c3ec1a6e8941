# The two commands of the README. Both create or update .venv and install the project
# editable; the install is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
# Test processes (pytest-xdist); each file runs whole in one process, so its fixtures are built once.
TEST_WORKERS ?= 2

.PHONY: run test test-fast lint format bench bench-scale real-photos clean

run: $(VENV)/.installed
	$(PY) -m landmark_tl.train $(ARGS)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# the tests not marked slow (no end-to-end training runs, processes or launchers)
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check landmark_tl tests benchmarks hydra_plugins
	$(VENV)/bin/ruff format --check landmark_tl tests benchmarks hydra_plugins

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format landmark_tl tests benchmarks hydra_plugins
	$(VENV)/bin/ruff check --fix landmark_tl tests benchmarks hydra_plugins

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

bench: $(VENV)/.installed
	$(PY) benchmarks/speed.py

bench-scale: $(VENV)/.installed
	$(PY) benchmarks/scale.py $(ARGS)

# The real-photo benchmark: Fashion-MNIST as a two-level tree, 5 splits (docs/real_photos.md).
real-photos: $(VENV)/.installed
	$(PY) benchmarks/real_photos.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
