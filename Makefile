# The two commands: `make reproduce` (every claim, quick profile, then the report) and
# `make test` (the test suite). Both create .venv on first use and install into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
EXTRAS ?= dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install reproduce test test-slow bench gpu-wheels lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on this machine, never a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Two worker processes: the quick profile of every claim shares this 2-core machine's cores.
REPRO_FLAGS ?= --backend process --workers 2

reproduce: $(STAMP)
	$(VENV)/bin/dltheory reproduce --profile $(PROFILE) $(REPRO_FLAGS) --readme README.md

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The tools bench/curvature.py compares against, beside (not in) the venv's packages: pip's
# dependency resolution would replace the pinned torch. Offline, the benchmark says which
# tools are missing and compares without them.
BENCH_TOOLS := $(VENV)/bench-tools

$(BENCH_TOOLS)/.installed: bench/tools.txt | $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
	    --target $(BENCH_TOOLS) -r bench/tools.txt \
	  && touch $@ || echo "bench: comparison tools not installed (see above); curvature runs without them"

bench: $(STAMP) $(BENCH_TOOLS)/.installed
	PYTHONPATH=$(abspath $(BENCH_TOOLS)) $(PY) bench/all.py

# Wheels for the prepared GPU check (bench/gpu.sh): what the device machine's image lacks —
# cvxpy and the modules it imports — at this venv's versions, for its CPython 3.12, in .whl/
# (ignored through .git/info/exclude; the device call carries it).
GPU_WHEELS := cvxpy clarabel qdldl sparsediffpy
gpu-wheels: $(STAMP)
	grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --python-version 3.12 --implementation cp --platform any \
	    $(foreach n,17 24 27 28,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64 \
	    -d .whl $$($(PY) -c "import importlib.metadata as m; \
	        print(' '.join(f'{p}=={m.version(p)}' for p in '$(GPU_WHEELS)'.split()))")

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) dltheory-results .pytest_cache
