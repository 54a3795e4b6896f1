# The README's two commands: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit venv bench clean wheel docs

venv: $(STAMP)

# torch is pinned for tests only (constraints-test.txt): the CPU build lies on the CI disk,
# while a loose pin would pull a multi-GB CUDA build. The package extras stay open.
$(STAMP): pyproject.toml constraints-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-test.txt -e '.[ray,dev,torch,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check plait plait_ray tests examples bench

types: $(STAMP)
	$(VENV)/bin/pyright plait plait_ray

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# pytest exits 5 when it collects nothing; make treats any non-zero exit as failure.
test: lint types
	$(PY) -m pytest -q -p no:cacheprovider tests

# The API reference and guides (docs/), built offline into ./site; every code block in them
# and in README.md runs in the test suite (tests/docs).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# This project's wheel (distribution plait-pipelines) for cluster nodes: the Docker image, the
# launcher's file_mounts, or a job's runtime_env pip (see cluster/README.md). Order-only on the
# venv: building a wheel never reinstalls it.
WHEEL_DIR ?= dist
wheel: | $(STAMP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
