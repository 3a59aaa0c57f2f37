# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Without an NVIDIA GPU, take torch's CPU build (on disk here) instead of a multi-GB CUDA build.
HAS_NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CPU_TORCH ?= torch==2.13.0

.PHONY: setup test test-gpu lint format demo bench bench-kernels clean

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

# The demo tunes then benchmarks a suite: smoke through the interpreter without a GPU, ResNet-50 with
# one (tuning a few configs per layer to keep it short). Its report goes to demo-out/, never reports/.
DEMO_SUITE := $(if $(HAS_NVIDIA_GPU),resnet50,smoke)
DEMO_TUNE := $(if $(HAS_NVIDIA_GPU),--max-candidates 8,)

demo: setup
	$(PY) -m tritonconv.cli tune --suite $(DEMO_SUITE) --pass fwd,dgrad,wgrad $(DEMO_TUNE)
	$(PY) -m tritonconv.cli bench --suite $(DEMO_SUITE) --out demo-out/$(DEMO_SUITE).csv

# GPU only. `bench` writes the committed suite reports, reports/<gpu>/<suite>.{csv,png,md}, every
# pass against cuDNN and Inductor; `bench-kernels` runs the per-kernel studies (variants, profiles).
BENCH_SUITES := resnet50 resnext50_32x4d mobilenetv2 convnext_t
bench: setup
	@gpu=$$($(PY) -c "from tritonconv.tuning.fingerprint import device_slug; print(device_slug())"); \
	for suite in $(BENCH_SUITES); do \
		$(PY) -m tritonconv.cli bench --suite $$suite --baseline torch,inductor --out reports/$$gpu/$$suite.csv || exit 1; \
	done

bench-kernels: setup
	$(PY) -m tritonconv.bench.forward
	$(PY) -m tritonconv.bench.variants
	$(PY) -m tritonconv.bench.backward
	$(PY) -m tritonconv.bench.profile
	$(PY) -m tritonconv.bench.epilogue

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo-out
