# Two commands on a fresh machine: `make demo` and `make test`. Both set up the venv idempotently.
SHELL := /bin/bash
PYTHON ?= python3
# ROS 2 distribution of the venv: kilted (.venv, the default) or jazzy (LTS, .venv-jazzy).
ROS_DISTRO ?= kilted
ifeq ($(ROS_DISTRO),kilted)
VENV := .venv
ROS_REQ := requirements-ros.txt
else ifeq ($(ROS_DISTRO),jazzy)
VENV := .venv-jazzy
ROS_REQ := requirements-ros-jazzy.txt
else
$(error ROS_DISTRO must be kilted or jazzy, got '$(ROS_DISTRO)')
endif
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# DDS never leaves this host: loopback-only Fast DDS profile + localhost discovery for every
# process make starts (the CLI and conftest also set these before the first node). Kilted's
# Fast DDS 3 reads the first variable, jazzy's Fast DDS 2 the second.
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
ifeq ($(ROS_DISTRO),jazzy)
export FASTRTPS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
endif
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
PYTEST_ARGS ?=

.PHONY: setup demo test test-ros bench clean-venv pg-setup

setup: $(VENV)/.stamp-package

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# torch first and pinned: the CPU wheel on local disk; nothing later may replace it.
$(VENV)/.stamp-torch: $(VENV)/.stamp-venv
	$(PIP) install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-torch requirements.txt $(ROS_REQ)
	$(PIP) install -q -r requirements.txt -r $(ROS_REQ) torch==2.13.0
	touch $@

$(VENV)/.stamp-tf2: $(VENV)/.stamp-deps third_party/tf2_msgs/msg/TFMessage.msg
	tools/build_tf2_msgs.sh $(VENV) $(ROS_DISTRO)
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-tf2 setup.py
	$(PIP) install -q --no-deps -e .
	touch $@

demo: setup
	$(PY) -m reloc_vggt_ros.cli demo

# The ROS tests (test/ros: real nodes over loopback DDS, bags, type hashes) on jazzy first, then
# the whole suite on kilted; the last pytest summary is the whole suite's.
test: setup pg-setup
ifeq ($(ROS_DISTRO),kilted)
	$(MAKE) --no-print-directory test-ros ROS_DISTRO=jazzy
endif
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# the ROS tests alone, on the venv of ROS_DISTRO (`make test-ros ROS_DISTRO=jazzy`)
test-ros: setup
	$(PY) -m pytest -n 2 test/ros $(PYTEST_ARGS)

# headline: the 224 px config where attention matters, then the toy config (several minutes on CPU)
bench: setup
	$(PY) -m bench.attention_scaling --json bench/results/attention_scaling.json

# PostgreSQL 15 + PostGIS 3 for the fleet tests (Debian packages, needs root; quiet, skips when present)
pg-setup:
	tools/pg_test_server.sh install

clean-venv:
	rm -rf .venv .venv-jazzy
