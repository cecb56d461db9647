# The README's two commands: `make book` (set up, then build the whole site strictly, every chapter
# executed) and `make test` (set up, then unit tests plus every chapter under nbmake).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
NB_DIR  = build/nb
CHAPTERS = $(wildcard chapters/*.md)

MATHJAX_VERSION = 3.2.2
MATHJAX = build/vendor/mathjax

.PHONY: setup book test notebooks benchmark models clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

# The execution cache is keyed by each chapter's code cells only: when lib/ or data/ changed after
# the last build (or that is unknown), it is cleared so that no page shows outputs of older code or
# stored models.
STAMP = _build/.last-build
# Progress bars are for interactive use: in built pages and test runs each update would be a
# line of output. tqdm reads TQDM_DISABLE from the environment, which the kernels inherit.
NO_BARS = TQDM_DISABLE=1

book: setup $(MATHJAX)/tex-mml-chtml.js
	@if [ -d _build/.jupyter_cache ] && { [ ! -f $(STAMP) ] || [ -n "$$(find lib data -newer $(STAMP) -print -quit)" ]; }; then \
	  echo "lib/ or data/ changed since the last build: clearing the execution cache"; \
	  rm -rf _build/.jupyter_cache; fi
	$(NO_BARS) $(BIN)/jupyter-book build . --all -W -n --keep-going
	touch $(STAMP)

# MathJax is vendored from the npm registry into the site so that math renders offline.
$(MATHJAX)/tex-mml-chtml.js:
	rm -rf build/npm && mkdir -p build/npm $(MATHJAX)
	cd build/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) > /dev/null
	tar xzf build/npm/mathjax-$(MATHJAX_VERSION).tgz -C build/npm
	cp -r build/npm/package/es5/output build/npm/package/es5/tex-mml-chtml.js $(MATHJAX)/

notebooks: setup
	rm -rf $(NB_DIR) && mkdir -p $(NB_DIR)
	for f in $(CHAPTERS); do $(BIN)/jupytext --quiet --to ipynb -o $(NB_DIR)/$$(basename $$f .md).ipynb $$f; done

test: notebooks
	$(NO_BARS) OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(BIN)/python -m pytest -n 2 -rs --nbmake --nbmake-timeout=1800 tests $(NB_DIR)

benchmark: setup
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/bp_throughput.py
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/train_throughput.py

# Train every run of the model store (data/models/) that is missing or stale, two local jobs at
# once, resumable; PROFILE=paper for the GPU sizes, EXECUTOR=slurm on a cluster.
PROFILE ?= laptop
EXECUTOR ?= local
JOBS ?= 2
SWEEP ?= chapter4
models: setup
	OMP_NUM_THREADS=1 $(BIN)/python scripts/regenerate_models.py --profile $(PROFILE) \
	  --executor $(EXECUTOR) --jobs $(JOBS) --sweep $(SWEEP)

clean:
	rm -rf _build build .jupyter_cache
