# The README's two commands: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit venv bench clean

venv: $(STAMP)

# torch is pinned for tests only (constraints-test.txt): the CPU build lies on the CI disk,
# while a loose pin would pull a multi-GB CUDA build. The package extras stay open.
$(STAMP): pyproject.toml constraints-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-test.txt -e '.[ray,dev,torch]'
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

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
