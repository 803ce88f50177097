# Two commands do all the set-up on a fresh machine with Python 3.11+: `make demo` and `make test`.
# The probe prints nothing but the interpreter it picks: a missing one, or a pyenv shim of a version that
# is not installed ("pyenv: python3.13: command not found"), is skipped silently.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian's chromium, for the dashboard's browser tests: Playwright drives it and never downloads a browser of its own
# (these machines reach package registries only). Installed when missing (as root, on Debian); elsewhere install a
# Chromium yourself and point CHROMIUM at it (the tests read the same variable, else `chromium` on PATH).
CHROMIUM ?= /usr/bin/chromium

SAMPLES := orders csv_import webhooks nightly_report

.PHONY: demo test lint typecheck docs unit e2e dashboard-screenshot bench fuzz soak clean $(addprefix sample-,$(SAMPLES))

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "sqsjobs needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools warns on every editable install that a folder named like the package could shadow it; that is the point here
	PYTHONWARNINGS='ignore:Editable installation' PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
		$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

$(CHROMIUM):
	command -v chromium >/dev/null 2>&1 || { apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

demo: $(STAMP)
	$(BIN)/python -m samples.quickstart.demo

# `make sample-orders`, `sample-csv_import`, `sample-webhooks`, `sample-nightly_report` (docs/samples.md)
$(addprefix sample-,$(SAMPLES)): sample-%: $(STAMP)
	$(BIN)/python -m samples.$*

# Three pytest processes on CI's two cores: much of the suite waits on subprocesses (moto's server, workers,
# the soak's kills), and a third process fills that wait (8 min instead of 10 on the 2-core machine, at ~160% CPU).
test: lint typecheck docs $(CHROMIUM)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=10

lint: $(STAMP)
	$(BIN)/ruff check sqsjobs lambda_handlers tests samples benchmarks
	$(BIN)/ruff format --check sqsjobs lambda_handlers tests samples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# docs/ as a site (mkdocs.yml), into build/site; --strict fails on a link to a page or heading that does not exist.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

e2e: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q tests/e2e

# The README's picture of the dashboard: the overview the browser test leaves in build/screenshots/.
dashboard-screenshot: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q tests/e2e/test_dashboard_browser.py -k overview
	mkdir -p docs/img && cp build/screenshots/overview.png docs/img/dashboard.png

# The bench extra (the peers and matplotlib) is installed once; without it (offline, a package that will not
# build) the benchmark still runs and says which peers it skipped. `make bench BENCH_ARGS=--quick` for a smoke run.
bench: $(STAMP)
	@test -f $(VENV)/.bench-installed || { PYTHONWARNINGS='ignore:Editable installation' \
		$(BIN)/python -m pip install -q -e '.[bench]' && touch $(VENV)/.bench-installed; } \
		|| echo "# the bench extra did not install: the peers it lacks are skipped (pip install -e '.[bench]')"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

fuzz: $(STAMP)
	SQSJOBS_FUZZ_PROFILE=long $(BIN)/python -m pytest -q tests/fuzz

soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
