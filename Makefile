# pubex developer entry points. Needs only python3 (3.11), pip, make and apt-get.
#   make run    start pubex on ./var        make test   the test suite (what CI runs)
#   make lint   ruff + mypy                 make bench  every benchmark -> docs/benchmarks.md
#   make console-deps  uPlot from npm into gateway/console/vendor (ignored; never committed)
#   make screenshots   refresh docs/console*.png (the images the README shows)
#   make soak   the long fuzz sets (outside CI)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Targets run in the order written (test: venv, then sysdeps, then pytest), even under -j.
.NOTPARALLEL:
# A recipe that fails removes its half-made target (a stamp, the venv's python), so the
# next run retries instead of trusting it.
.DELETE_ON_ERROR:

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
PIP := $(VENV_PY) -m pip --disable-pip-version-check
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

# The whole platform: `pubex serve --demo` plus the companion services (supervision,
# disclosure, registry), one process each on ./var, ports from config [services].
SIM ?= 1
RUN_CMD ?= $(VENV)/bin/pubex platform --data ./var --demo $(if $(filter 0,$(SIM)),--no-sim,)
PYTEST_ARGS ?= -q -n 2 --dist loadfile
MYPY_PATHS ?= engine ledger persistence
# Debian packages the tests need: chromium (never `playwright install`) and a CJK font for
# the console's browser test and screenshot, tmux for the terminal test.
SYSDEPS ?= chromium fonts-noto-cjk tmux
# Third-party browser files for the console: installed from npm, never committed.
NPM ?= npm
UPLOT_VERSION ?= 1.6.32
CONSOLE_VENDOR := gateway/console/vendor
STAMP_CONSOLE := $(CONSOLE_VENDOR)/.installed-uplot-$(UPLOT_VERSION)

.PHONY: help venv run test sysdeps console-deps lint screenshots soak bench load clean distclean

help:
	@echo "targets: venv run test sysdeps console-deps lint screenshots soak bench load clean distclean"

# --- virtualenv ------------------------------------------------------------------------
# Debian's python3 has no ensurepip unless python3-venv is installed; then the venv is made
# without pip and the system pip installs pip into it (pip >= 22.3 knows --python).
$(VENV_PY):
	@test -n "$(PYTHON)" || { echo "python3.11 / python3 not found" >&2; exit 1; }
	@if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
	  echo "venv: ensurepip unavailable, bootstrapping pip with the system pip"; \
	  rm -rf $(VENV); \
	  $(PYTHON) -m venv --without-pip $(VENV); \
	  $(PYTHON) -m pip --python $(VENV_PY) install --quiet pip; \
	fi
	$(PIP) install --quiet --upgrade pip

$(STAMP_TEST): pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e '.[test]'
	@touch $@

$(STAMP_RUN): pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e .
	@touch $@

venv: $(STAMP_TEST)

# --- run / test ------------------------------------------------------------------------
run: $(STAMP_RUN) console-deps
	@mkdir -p ./var
	$(RUN_CMD)

test: venv sysdeps console-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The console tests write their screenshots to a temporary folder; this target points
# them at docs/ instead, so the README's images change only when asked for.
screenshots: venv sysdeps console-deps
	PUBEX_SCREENSHOT_DIR=$(CURDIR)/docs PUBEX_REQUIRE_BROWSER=1 \
	  $(VENV)/bin/pytest -q tests/console/test_console.py

# The long fuzz sets, outside CI: the frame fuzzer (tests/reliability/test_fuzz_frames.py)
# with a million mutated frames against `pubex serve` instead of CI's 100,000; prints its
# outcome table and seed (PUBEX_FUZZ_SEED=N makes a run's frames again).
SOAK_FRAMES ?= 1000000
soak: venv
	PUBEX_FUZZ_FRAMES=$(SOAK_FRAMES) $(VENV)/bin/pytest -q -s \
	  tests/reliability/test_fuzz_frames.py::test_no_frame_stops_the_server

# A no-op when SYSDEPS is empty or every package is already installed.
sysdeps:
	@missing=(); \
	for pkg in $(SYSDEPS); do \
	  status=$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true); \
	  [ "$$status" = "install ok installed" ] || missing+=("$$pkg"); \
	done; \
	if [ $${#missing[@]} -eq 0 ]; then exit 0; fi; \
	echo "sysdeps: installing $${missing[*]}"; \
	sudo=(); \
	if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi; \
	"$${sudo[@]}" apt-get update; \
	"$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$${missing[@]}"

# --- console vendor files ---------------------------------------------------------------
# uPlot's dist files, installed once (stamped) from the npm registry through a scratch
# prefix; the console loads them from /static/vendor/uplot/ and shows a notice without them.
console-deps: $(STAMP_CONSOLE)

$(STAMP_CONSOLE):
	@if ! command -v $(NPM) >/dev/null; then \
	  echo "console-deps: npm not found; installing Debian's npm"; \
	  sudo=(); \
	  if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi; \
	  "$${sudo[@]}" apt-get update; \
	  "$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm; \
	fi
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "console-deps: npm install uplot@$(UPLOT_VERSION)"; \
	$(NPM) install --prefix "$$tmp" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error \
	  uplot@$(UPLOT_VERSION) >/dev/null; \
	rm -rf $(CONSOLE_VENDOR)/uplot; mkdir -p $(CONSOLE_VENDOR)/uplot; \
	cp -R "$$tmp/node_modules/uplot/dist" "$$tmp/node_modules/uplot/LICENSE" \
	  "$$tmp/node_modules/uplot/package.json" $(CONSOLE_VENDOR)/uplot/
	@touch $@

# --- quality / performance ---------------------------------------------------------------
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

# Every `python -m bench` suite in turn, each in its own process and bounded in time (about
# 5-10 minutes on 2 cores): docs/benchmarks.md, .json and -ack-latency.svg (bench/report.py).
# The order-book peers come from the `bench` extra.
STAMP_BENCH := $(VENV)/.installed-bench

$(STAMP_BENCH): pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e '.[bench]'
	@touch $@

bench: $(STAMP_BENCH)
	$(VENV_PY) -m bench report

# One bounded Locust run against `pubex serve` on 127.0.0.1 (bench/locust/run.py): reports
# under bench/reports/; non-zero exit when the scenario's failure or p99 bounds break.
#   make load SCENARIO=hot-land|storm|judicial-day|emall|watchers [USERS=N] [DURATION=S]
SCENARIO ?= hot-land
USERS ?=
DURATION ?=
STAMP_LOAD := $(VENV)/.installed-load

$(STAMP_LOAD): pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e '.[load]'
	@touch $@

load: $(STAMP_LOAD)
	$(VENV_PY) -m bench.locust.run --scenario $(SCENARIO) \
	  $(if $(USERS),--users $(USERS),) $(if $(DURATION),--duration $(DURATION),)

# --- housekeeping ------------------------------------------------------------------------
# Never touches ./var (the ledger) nor bench/reports; distclean also drops the venv.
clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist

distclean: clean
	rm -rf $(VENV)
