# The README's two commands, `make demo` and `make test`, are the whole set-up: every target
# creates the virtualenv it needs and installs the project into it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY313 ?= $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3) $(shell command -v python3.13))
VENV := .venv
VENV313 := .venv313
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: all demo test test-main test-313 lint bench clean venv system-deps dist-check

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -U pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Real consumers used by the format tests: a JDK and Debian's OkHttp 3 (the exported Java snippet
# is compiled and run against a loopback server) and curl (--pinnedpubkey). Needs root; the
# tests that use them skip, saying why, where they are absent. Chromium: the dashboard's
# real-browser test (tests/browser/, driven by Playwright with executable_path). certspotter:
# an independent Certificate Transparency client run against the project's test log (tests/ct/).
# aapt and android-framework-res (its framework-res.apk stands in for the SDK's android.jar as
# `aapt -I`): the real APK the app-audit tests build (tests/formats/test_apps.py).
# redis-server: the TLS Redis that redis-py is pinned against under `certpin run` (tests/process/).
SYSTEM_PACKAGES := libokhttp-java curl chromium certspotter aapt android-framework-res redis-server
system-deps:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		missing=""; for p in $(SYSTEM_PACKAGES); do \
			dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	else echo "system-deps: not root or no apt-get; skipping ($(SYSTEM_PACKAGES))"; fi

demo: $(VENV)/.installed
	$(VENV)/bin/python examples/demo/demo.py

# The whole suite twice: on the main interpreter from the source tree (3.11: the private chain
# API; with coverage and the core's 100 % gate), then on 3.13 (the public chain API) against the
# *installed wheel* (see dist-check), so one run covers both interpreters and the release.
test: test-main test-313

test-main: $(VENV)/.installed
	mkdir -p artifacts
	$(VENV)/bin/python -m pytest --cov=certpin --cov-branch --cov-report=term:skip-covered \
		--cov-report=json:artifacts/coverage.json
	$(VENV)/bin/python tools/coverage_gate.py artifacts/coverage.json

test-313: dist-check

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench tools examples
	$(VENV)/bin/ruff format --check src
	$(VENV)/bin/mypy --strict src
	$(VENV)/bin/lint-imports

# What a release holds, checked from outside: build the sdist and the wheel, `twine check` them,
# install the wheel (not the source tree) into a clean virtualenv of Python 3.13 (3.11 where
# there is no 3.13) and run the suite against it, so package data (templates, py.typed) can
# never go missing from a release unnoticed.
WHEEL_VENV := $(VENV313)
WHEEL_PYTHON := $(or $(PY313),$(PYTHON))
dist-check: $(VENV)/.installed
	rm -rf dist $(WHEEL_VENV)
	$(VENV)/bin/python -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*
	$(WHEEL_PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install $(PIP_FLAGS) -U pip
	$(WHEEL_VENV)/bin/pip install $(PIP_FLAGS) "$$(ls dist/*.whl)[dev]"
	CERTPIN_TEST_INSTALLED=1 $(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) $(VENV313) dist .pytest_cache .mypy_cache .ruff_cache build dist artifacts .demo
