# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Without an NVIDIA GPU, take torch's CPU build (on disk here) instead of a multi-GB CUDA build.
HAS_NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CPU_TORCH ?= torch==2.13.0
# `make gpu-report PY=python3` on a GPU machine without network uses its own Python, no venv to set up.
SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),setup,)

.PHONY: setup setup-reports docs test test-gpu lint format kernels-check kernels-check-old-triton kernels-report gpu-quick gpu-report demo bench bench-kernels clean

# `setup` installs the package with its dev extra (tests, lint, docs, reports); the demo needs only the
# reports extra (`setup-reports`). Each extra has its own marker, so `make demo` then `make test` works.
setup: $(VENV)/.installed-dev
setup-reports: $(VENV)/.installed-reports

$(VENV)/.base: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(HAS_NVIDIA_GPU),1)
	$(PY) -m pip install -q $(CPU_TORCH)
endif
	@touch $@

$(VENV)/.installed-%: $(VENV)/.base
	$(PY) -m pip install -q -e '.[$*]'
	@touch $@

# The tests run in the interpreter, one core each: the tests are shared out over every core one by one as
# workers free up (a file that shares a module fixture marks its tests with one xdist_group, kept together).
test: setup
	$(PY) -m pytest -q -n auto --dist loadgroup

test-gpu: $(SETUP)
	$(PY) -m pytest -q -m gpu

# The documentation site from docs/ (MkDocs): --strict turns a broken link or anchor into a failure.
docs: setup
	$(PY) -m mkdocs build --strict

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Every kernel route compiled without a GPU for Hopper (sm_90, the gate's default suites; writes
# reports/static/sm90_triton<v>.csv) and for Blackwell (sm_100), MI300X (gfx942) and MI355X (gfx950) on the
# smoke suite (every route; reports under build/static/): fails on a compile error, a spill, too much
# shared memory or LDS, too many VGPRs, or a tl.dot without the arch's matrix instruction at a chosen config.
kernels-check: setup
	env -u TRITON_INTERPRET $(PY) -m tritonconv check-kernels --arch sm90
	env -u TRITON_INTERPRET $(PY) -m tritonconv check-kernels --arch sm100,gfx942,gfx950 --suite smoke --out-dir build/static

# The same gate on the GPU image's Triton (3.6), which CI's newest Triton cannot stand in for (3.6 once failed to
# compile kernels 3.9 compiled): that Triton alone, in build/triton<v>/, ahead of the venv's; every route, smoke suite.
OLD_TRITON ?= 3.6.0
OLD_TRITON_DIR := build/triton$(OLD_TRITON)
$(OLD_TRITON_DIR)/.installed:
	$(PY) -m pip install -q --no-deps --target $(OLD_TRITON_DIR) triton==$(OLD_TRITON)
	@touch $@

kernels-check-old-triton: setup $(OLD_TRITON_DIR)/.installed
	env -u TRITON_INTERPRET PYTHONPATH=$(OLD_TRITON_DIR):. $(PY) -m tritonconv check-kernels \
		--arch sm90,sm100,gfx942,gfx950 --suite smoke --out-dir build/static-triton$(OLD_TRITON)

# The committed compile-only reports: all four architectures on the gate's default suites (about 20 min cold);
# `PYTHONPATH=build/triton3.6.0:. make kernels-report` (after `make kernels-check-old-triton`) for Triton 3.6's.
kernels-report: setup
	env -u TRITON_INTERPRET $(PY) -m tritonconv check-kernels --arch sm90,sm100,gfx942,gfx950

# The one command for a short GPU window (one command of at most 10 minutes): every route checked on the
# GPU, ResNet-50 tuned over the cost model's pruned space into autotune/<gpu>.json and benchmarked against
# cuDNN (eager and CUDA graphs), then more suites while time is left, into reports/<gpu>/; resumable, and
# mirrored under $$OUT stage by stage where that is set. DRY_RUN=1: its plan, kernels and estimated device time.
# On a lent GPU (no network): make gpu-quick PY=python3
gpu-quick: $(SETUP)
ifeq ($(DRY_RUN),1)
	env -u TRITON_INTERPRET $(PY) -m tritonconv.tools.bench.quick --dry-run
else
	@test "$(HAS_NVIDIA_GPU)" = 1 || { echo "make gpu-quick needs an NVIDIA GPU; DRY_RUN=1 prints its plan"; exit 2; }
	$(PY) -m tritonconv.tools.bench.quick
endif

# The full report, on the same staged, budgeted, resumable engine as gpu-quick: its stages a-d, then the GPU
# tests, the profile, registers against the driver, Inductor and fp16 (tritonconv/tools/bench/quick/report.py),
# an hour per invocation by default (BUDGET=510 on a lent GPU); run it again until it says no stages are left.
# DRY_RUN=1: the plan. On a GPU without network: make gpu-report PY=python3
gpu-report: $(SETUP)
ifeq ($(DRY_RUN),1)
	env -u TRITON_INTERPRET $(PY) -m tritonconv.tools.bench.quick --report --dry-run
else
	@test "$(HAS_NVIDIA_GPU)" = 1 || { echo "make gpu-report needs an NVIDIA GPU; DRY_RUN=1 prints its plan"; exit 2; }
	$(PY) -m tritonconv.tools.bench.quick --report $(if $(BUDGET),--budget $(BUDGET),)
endif

# The demo tunes then benchmarks a suite: smoke through the interpreter without a GPU, ResNet-50 with
# one (tuning a few configs per layer to keep it short). Its report goes to demo-out/, never reports/.
# Without a GPU it tunes Triton's routes only: torch's CPU kernel would win every layer-pass there, and
# the demo is to run the kernels (through the interpreter); with one, torch's kernel competes as usual.
DEMO_SUITE := $(if $(HAS_NVIDIA_GPU),resnet50,smoke)
DEMO_TUNE := $(if $(HAS_NVIDIA_GPU),--max-candidates 8,--routes triton)

demo: setup-reports
	$(PY) -m tritonconv tune --suite $(DEMO_SUITE) --pass fwd,dgrad,wgrad $(DEMO_TUNE)
	$(PY) -m tritonconv bench --suite $(DEMO_SUITE) --out demo-out/$(DEMO_SUITE).csv

# GPU only. `bench` writes the committed suite reports, reports/<gpu>/<suite>.{csv,png,md}, every
# pass against cuDNN and Inductor; `bench-kernels` runs the per-kernel studies (variants, profiles).
BENCH_SUITES := resnet50 resnext50_32x4d mobilenetv2 convnext_t
bench: setup
	@gpu=$$($(PY) -c "from tritonconv.tuning.fingerprint import device_slug; print(device_slug())"); \
	for suite in $(BENCH_SUITES); do \
		$(PY) -m tritonconv bench --suite $$suite --baseline torch,inductor --out reports/$$gpu/$$suite.csv || exit 1; \
	done

bench-kernels: setup
	$(PY) -m tritonconv.tools.bench.forward
	$(PY) -m tritonconv.tools.bench.variants
	$(PY) -m tritonconv.tools.bench.backward
	$(PY) -m tritonconv.tools.bench.profile
	$(PY) -m tritonconv.tools.bench.epilogue

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo-out
