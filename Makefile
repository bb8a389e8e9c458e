# minidl — one-command set-up and checks. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench docs lab readme clean

install: $(STAMP)

# Re-install only when the package metadata changed (or the venv is new).
$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@-git config --local include.path ../.gitconfig 2>/dev/null
	@touch $(STAMP)

# Train an MLP on MNIST-1D (generated locally, no network): progress bar, accuracy, runs/demo/{loss.png,model.safetensors}.
demo: install
	$(BIN)/minidl train --out runs/demo

test: install
	$(BIN)/python -c "import sys, minidl.devtools as d; sys.exit(d.run_checks())"
	@# one fresh process per notebook: lessons patch Tensor, and nbdev_test would reuse worker processes
	ls nbs/*.ipynb | xargs -P 2 -I{} $(BIN)/nbdev_test --path {}
	$(BIN)/python -m pytest tests

# Benchmarks against NumPy and PyTorch (the dev extra installs torch==2.13.0, the CPU build): tables on stdout,
# saved to nbs/bench_results.json, and the results page (nbs/96_bench_results.ipynb) re-executed from them.
bench: install
	$(BIN)/minidl bench --json nbs/bench_results.json
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace nbs/96_bench_results.ipynb
	$(BIN)/nbdev_clean --fname nbs/96_bench_results.ipynb

# The documentation site, offline: nbdev processes the notebooks, minidl.docsite bridges them, Sphinx renders
# docs/_build/html from the committed outputs (warnings are errors). Open docs/_build/html/index.html.
docs: install
	$(BIN)/python -c "import minidl.docsite as d; print(d.build())"

lab: install
	$(BIN)/jupyter lab nbs

readme: install
	$(BIN)/python -c "import minidl.devtools as d; d.write_readme()"

clean:
	rm -rf _proc docs/_build build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
