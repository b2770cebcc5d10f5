# The two commands of the quick start, `make demo` and `make test`; `make lint` (ruff, mypy and the
# import layers, as CI runs them) and `make gpu-check` for a machine with a CUDA device. Each creates
# .venv when it is missing and installs the package with pinned dependencies: the demo needs the
# package alone, the others also its dev extra (pytest, ruff, mypy, import-linter) and ONNX export.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint gpu-check install clean

$(CORE): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e .
	touch $(CORE)

$(DEV): $(CORE)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,export]"
	touch $(DEV)

install: $(DEV)

demo: $(CORE)
	$(BIN)/crossvit-mtl demo

# the suite on TEST_WORKERS pytest-xdist workers (one per core of the 2-core CI machine), handed
# one test at a time, the heavy ones first; each worker and the processes it starts get
# cores / workers threads (tests/conftest.py)
TEST_WORKERS ?= 2

test: $(DEV)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 1

# lint and types on the library, the layer contract of pyproject's [tool.importlinter]
lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# the CUDA tests and the bench on the GPU: writes gpu-check/gpu_check.json and gpu_check.md
gpu-check: $(DEV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,export,bench]"
	$(BIN)/python benchmarks/gpu_check.py --out gpu-check

clean:
	rm -rf $(VENV) runs data/synth data/synth96 gpu-check
