# Two entry points for a fresh Debian/Ubuntu machine with Python 3.11+ (see README):
#   make demo   installs into .venv and runs the main job
#   make test   installs into .venv (and Xvfb via apt-get when root) and runs every test
# Both are safe to run again: installs are skipped while pyproject.toml and this Makefile
# are unchanged.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

# What headless napari needs besides the PyQt6 wheel: a virtual X server, the xcb
# libraries Qt's platform plugin loads (Qt 6.5+ also wants libxcb-cursor0), and Mesa for
# OpenGL (ARCHITECTURE.md).
GUI_PACKAGES := xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-xkb1 \
	libxkbcommon-x11-0 libegl1 libgl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3 libglib2.0-0

.PHONY: demo test lint format system-packages

# End to end on the phantom; writes $(DEMO_DIR)/report.md. A second run reuses what finished.
demo: $(STAMP)
	$(BIN)/kdseg demo $(DEMO_DIR)

# Two processes: TensorFlow and a napari canvas cannot share one (tests/conftest.py).
# The first spreads over up to 4 cores (pytest-xdist): most of its time is single-threaded
# graph tracing. Each module runs on one worker, sharing its fixtures.
test: $(STAMP) system-packages
	$(BIN)/python -m pytest --ignore=tests/gui -n auto --maxprocesses 4 --dist loadfile --durations=12
	xvfb-run -a -s "-screen 0 1280x1024x24" $(BIN)/python -m pytest tests/gui --durations=5

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# lavlab-taps brings TAPS's model file (napari_kdseg.teachers.taps), installed with --no-deps:
# its PyTorch, MONAI and onnxruntime-gpu are not used (the pipeline is rebuilt on ONNX Runtime).
# The Makefile is a prerequisite too, so a machine installed before a line here changed
# picks the change up.
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
		else echo "python3-venv is missing: sudo apt-get install python3-venv"; exit 1; fi; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@# a venv made when the project used PyQt5 keeps it, and qtpy would pick it over PyQt6
	$(BIN)/python -m pip uninstall --quiet --yes PyQt5 PyQt5-Qt5 PyQt5-sip 2>/dev/null || true
	$(BIN)/python -m pip install --quiet --no-deps lavlab-taps==1.1.2
	touch $(STAMP)

system-packages:
	@missing=$$(for p in $(GUI_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "missing system packages (run as root or sudo apt-get install): $$missing"; exit 1; fi; \
	fi
