# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtlkit-installed
# OpenMP threads that sleep instead of spinning: small models on a shared 2-core machine run far faster.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# PyTorch + torchvision (timm's dependency) at the tested versions; timm comes with the package.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev,solvers]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtlkit bench --suite demo

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .mtlkit-cache
