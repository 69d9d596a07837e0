# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# DDS never leaves this host: loopback-only Fast DDS profile + localhost discovery for every
# process make starts (the CLI and conftest also set these before the first node).
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean-venv pg-setup

setup: $(VENV)/.stamp-package

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# torch first and pinned: the CPU wheel on local disk; nothing later may replace it.
$(VENV)/.stamp-torch: $(VENV)/.stamp-venv
	$(PIP) install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-torch requirements.txt requirements-ros.txt
	$(PIP) install -q -r requirements.txt -r requirements-ros.txt torch==2.13.0
	touch $@

$(VENV)/.stamp-tf2: $(VENV)/.stamp-deps third_party/tf2_msgs/msg/TFMessage.msg
	tools/build_tf2_msgs.sh $(VENV)
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-tf2 setup.py
	$(PIP) install -q --no-deps -e .
	touch $@

demo: setup
	$(PY) -m reloc_vggt_ros.cli demo

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# headline: the 224 px config where attention matters, then the toy config (several minutes on CPU)
bench: setup
	$(PY) -m bench.attention_scaling --json bench/results/attention_scaling.json

# PostgreSQL 15 + PostGIS 3 for the fleet tests (Debian packages, needs root; quiet, skips when present)
pg-setup:
	tools/pg_test_server.sh install

clean-venv:
	rm -rf $(VENV)
