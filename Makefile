# Pink Button. `make demo` and `make test` work on a fresh machine: they install
# what is missing (apt packages when run as root, a venv in .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all deps system-deps demo test test-fast bench bench-fleet soak lint clean mutate deb vendor

all: test

deps: system-deps $(STAMP)

# Debian packages: the broker (and its CLI clients for the latency floor), ffmpeg for media checks,
# shellcheck for the shipped shell scripts, PostgreSQL (the tests' throwaway clusters, harness/pg.py), Debian's chromium for the console's browser tests, PortAudio headers, a C compiler and Python headers so pip
# can build pyaudio, and Python with venv. Only what is missing is installed.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -f /usr/include/portaudio.h ] || missing="$$missing portaudio19-dev"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	if ! command -v $(PYTHON) >/dev/null 2>&1; then missing="$$missing python3 python3-venv python3-dev"; \
	else \
	  $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || test -x $(BIN)/python || missing="$$missing python3-venv"; \
	  $(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	    || missing="$$missing python3-dev"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The web console's map files (Leaflet, the country outline), committed in
# tools/controlroom/web/static/vendor/: fetched again from the npm registry, sha256-checked.
vendor: deps
	$(BIN)/python -m harness.vendor

demo: deps
	$(BIN)/python -m harness.demo $(if $(DEMO_HOLD),--hold)

# Tests mostly wait (broker round trips, timers, media in real time), so 4 workers beat 2 cores.
TEST_WORKERS ?= 4

test: deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-fast: deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not broker"

bench: deps
	$(BIN)/python -m harness.bench
	$(BIN)/python -m harness.bench_media
	$(BIN)/python -m harness.bench_store
	$(BIN)/python -m harness.bench_web

# The largest fleet one broker and one room carry here: steps of 250/500/1000 idle + 20 streaming
# kiosks (`pinkbutton-sim load`), the mosquitto CLI floor, memory per idle device (<= 15 min).
# Not part of `make test`. BENCH_FLEET_ARGS="--keep DIR" keeps each step's table and plots.
bench-fleet: deps
	$(BIN)/python -m harness.bench_fleet $(BENCH_FLEET_ARGS)

# 1000 presses on 20 kiosk processes with broker kills, stalls and device kills (<= 15 min).
soak: deps
	$(BIN)/python -m harness.soak

# Mutation testing of the pure modules against their own tests: a table of mutants / killed /
# survived / score per module (harness/mutate.py; equivalents in tests/mutation-equivalents.txt).
# Not part of `make test`.
mutate: deps
	$(BIN)/python -m harness.mutate

# The kiosk's Debian packages: dist/pinkbutton_VERSION_amd64.deb and _arm64.deb, each with the
# wheels of its architecture for CPython 3.11 (packaging/deb/build.sh; docs/deploy.md, "Kiosk").
# Fetching the wheels the first time takes a while; from pip's cache, seconds. At most 15 min.
deb: deps
	timeout 900 sh packaging/deb/build.sh amd64 arm64

# MicroPython stubs for firmware/pico (rp2 Pico W + the stdlib subset), pinned, in typings/pico.
PICO_STUBS := typings/pico/.installed
PICO_STUB_PKGS := micropython-rp2-rpi-pico-w-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
$(PICO_STUBS): Makefile | $(STAMP)
	rm -rf typings/pico
	$(BIN)/python -m pip install -q --target typings/pico $(PICO_STUB_PKGS)
	@touch $(PICO_STUBS)

# ruff, then pyright (configured in pyproject.toml: hal firmware simulator tools); any error fails.
# Then pyright on the MicroPython Pico W firmware with its own config and the pinned stubs.
lint: deps $(PICO_STUBS)
	$(BIN)/ruff check hal firmware simulator tools harness tests
	@mkdir -p build/pyright/pinkbutton
	@for d in hal firmware simulator tools; do ln -sfn ../../../$$d build/pyright/pinkbutton/$$d; done
	$(BIN)/pyright
	$(BIN)/pyright -p firmware/pico/pyrightconfig.json

clean:
	rm -rf .demo .pytest_cache .ruff_cache .hypothesis typings
