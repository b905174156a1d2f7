# The README's two commands:  `make lessons`  and  `make test`.
# Both bootstrap a local .venv with the package and its dev extras on first use.
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: lessons test smoke bench book clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

## Run every lesson in order, end to end (each lesson's checkpoints feed the next).  The lessons
## share one persistent XLA compilation cache, <runs root>/jax_cache: a later lesson reads back the
## programs an earlier one compiled (the same GPT's samplers and steps).  Measured with
## `python benchmarks/compile_budget.py --smoke [--cache DIR]`: 290 -> 218 CPU-seconds for the course.
JAX_CACHE_ENV = JAX_COMPILATION_CACHE_DIR=$${JAX_COMPILATION_CACHE_DIR:-$${MINIRLHF_RUNS:-runs}/jax_cache} \
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
lessons: $(STAMP)
	@set -e; for f in lessons/[0-9][0-9]_*.py; do \
	  echo "=== $$f"; start=$$(date +%s); \
	  MPLBACKEND=Agg $(JAX_CACHE_ENV) $(BIN)/python $$f; \
	  echo "=== $$f done in $$(( $$(date +%s) - start )) s"; \
	done

## The whole test suite (includes every lesson in --smoke mode), on TEST_WORKERS processes
## (pytest-xdist; --dist loadfile keeps each test file, e.g. the chained smoke lessons, on one;
## --no-loadscope-reorder hands the files out heaviest first, the order tests/conftest.py collects).
TEST_WORKERS ?= 2
test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## The course as a static book: every lesson executed as a notebook, one page each, with its
## output and figures in place -> runs/book/index.html (works offline).  SMOKE=1 builds from the
## --smoke runs instead (seconds per lesson) -> runs/smoke/book/index.html.
book: $(STAMP)
	$(BIN)/python tools/build_book.py $(if $(SMOKE),--smoke)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf runs
