# The two commands of the quick start, `make demo` and `make test`, and `make gpu-check` for a
# machine with a CUDA device. Each creates .venv when it is missing and installs the package with
# pinned dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test gpu-check install clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossvit-mtl demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the CUDA tests and the bench on the GPU: writes gpu-check/gpu_check.json and gpu_check.md
gpu-check: $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,export,bench]"
	$(BIN)/python benchmarks/gpu_check.py --out gpu-check

clean:
	rm -rf $(VENV) runs data/synth gpu-check
