# normbook: `make book` builds the website, `make test` runs every check. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JB_FLAGS := -n -W --keep-going
NB     := $(sort $(wildcard book/*.ipynb))
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
# PyTorch's CPU kernels use every core by default; two threads keep timings and the CI machine steady.
export OMP_NUM_THREADS ?= 2

.PHONY: setup book vendor test lint unit kernels distributed exercises notebooks site browser bench \
        refresh-notebooks colab-cells format clean bench-gpu

## setup: a virtual environment with torch (CPU build first, so pip never pulls the CUDA one),
## the requirements and normlib itself (editable).
setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

## vendor: MathJax and the Jupyter widget manager from the npm registry, so the site works offline.
vendor: _vendor/.done
_vendor/.done: tools/vendor.sh
	bash tools/vendor.sh _vendor
	touch $@

## book: the website in _build/html, from the stored (nbval-checked) notebook outputs.
book: setup vendor
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "The book is in _build/html: open _build/html/index.html"

## test: every check the project has.
test: setup lint unit kernels distributed notebooks site browser
	@echo "make test: all checks passed"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: setup
	$(BIN)/pytest -q -n 2 tests -m "not kernels and not distributed and not site" -p no:cacheprovider

kernels: setup
	TRITON_INTERPRET=1 $(BIN)/pytest -q -n 2 tests -m kernels -p no:cacheprovider

distributed: setup
	$(BIN)/pytest -q tests -m distributed -p no:cacheprovider

# Notebook kernels must draw inline figures, as when the outputs were stored: with Agg, plt.show()
# draws nothing (refresh-notebooks would store chapters without figures, nbval fails on every figure).
notebooks refresh-notebooks: MPLBACKEND := module://matplotlib_inline.backend_inline

## notebooks: strict nbval on copies of the chapters in a fresh temporary folder (the kernels' cwd),
## as on Colab: a chapter that reads a file of the repository fails. One run checks both.
notebooks: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp $(NB) tests/nbval_sanitize.cfg "$$tmp"/ && cd "$$tmp" && \
	$(CURDIR)/$(BIN)/pytest -q -n 2 --dist loadfile -p no:cacheprovider --rootdir "$$tmp" \
		--nbval --nbval-sanitize-with nbval_sanitize.cfg $(notdir $(NB))

site: setup vendor
	$(BIN)/jupyter-book build . $(JB_FLAGS)

browser: site
	bash tools/ensure_chromium.sh
	$(BIN)/pytest -q tests -m site -p no:cacheprovider

bench: setup
	$(PY) -m normlib.bench --device cpu

## bench-gpu: on a CUDA machine, writes benchmarks/results/<device>.json and .png
bench-gpu: setup
	$(PY) -m normlib.bench --device cuda --out benchmarks/results

## refresh-notebooks: re-run every chapter top to bottom and store its outputs (execution counts 1..n).
refresh-notebooks: setup colab-cells
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=300 $(NB)

## colab-cells: (re)write each notebook's first cell, which installs normlib on Colab.
colab-cells: setup
	$(PY) tools/colab_cell.py --write $(NB)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf _build .pytest_cache .ruff_cache
