# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# System packages the GUI needs under a virtual display (Debian names).
SYSDEPS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
	libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1
export OMP_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0

.PHONY: setup sysdeps test test-core demo demo-core bench bench-peers lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml src_core/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exactly this torch: an unpinned one would pull several GB of CUDA packages.
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e "./src_core[test,brain,scale]" -e ".[test]"
	touch $@

sysdeps:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor; then \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSDEPS) >/dev/null; \
		else \
			echo "GUI tests need: $(SYSDEPS) (run 'sudo make sysdeps')"; \
		fi; \
	fi

test: setup sysdeps
	@if command -v xvfb-run >/dev/null 2>&1 && [ -z "$$DISPLAY" ]; then \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q -p no:cacheprovider; \
	else \
		$(PY) -m pytest -q -p no:cacheprovider; \
	fi

test-core: setup
	$(PY) -m pytest -q src_core/tests

demo: setup sysdeps
	@if [ -n "$$DISPLAY" ]; then \
		$(PY) -m napari_deepreg.demo; \
	else \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m napari_deepreg.demo --headless --output demo_output; \
	fi

demo-core: setup
	$(VENV)/bin/deepreg-core register sample_data/brain3d_fixed.nii.gz sample_data/brain3d_moving.nii.gz \
		-o demo_output/core --moving-labels sample_data/brain3d_moving_labels.nii.gz \
		--fixed-labels sample_data/brain3d_fixed_labels.nii.gz

bench: setup
	$(PY) bench/kernels.py
	$(PY) bench/speed.py
	$(PY) bench/evaluate_zoo.py
	@if $(PY) -c "import ants" 2>/dev/null; then $(PY) bench/bench_3d.py --cases 4; \
	else echo "bench_3d.py skipped: pip install antspyx to compare with ANTs SyN"; fi

# Our presets against ANTs SyN, Greedy and DIPY SyN (bench/results/peers_<data>.md and .json).
bench-peers: setup
	$(PY) -m pip install -q -e "./src_core[bench]"
	$(PY) bench/peers.py

lint: setup
	$(PY) -m pip install -q -e "./src_core[lint]"
	$(PY) -m ruff check src_core napari_deepreg tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) demo_output .pytest_cache
