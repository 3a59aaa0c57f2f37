# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Without an NVIDIA GPU, take torch's CPU build (on disk here) instead of a multi-GB CUDA build.
HAS_NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CPU_TORCH ?= torch==2.13.0

.PHONY: setup test test-gpu lint format demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(HAS_NVIDIA_GPU),1)
	$(PY) -m pip install -q $(CPU_TORCH)
endif
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

test: setup
	$(PY) -m pytest -q

test-gpu: setup
	$(PY) -m pytest -q -m gpu

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: setup
	$(PY) -m tritonconv.cli tune --suite smoke
	$(PY) -m tritonconv.demo

bench: setup
	$(PY) -m tritonconv.bench.forward
	$(PY) -m tritonconv.bench.variants
	$(PY) -m tritonconv.bench.backward
	$(PY) -m tritonconv.bench.profile

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
