# Two commands set up a fresh machine: `make run` (the collector on its embedded defaults) and `make test`.
# Each installs what it needs: Debian packages (as root, or with sudo), a venv, the package in editable mode.

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
# Real peers the tests drive: tshark (decoding oracle), softflowd/pmacct/nfdump (exporters, collectors),
# tcpdump (capturing exports on loopback), mosquitto (live MQTT traffic), util-linux's logger (syslog client),
# chromium (headless: loads the HTML report, takes its screenshot), curl (the docs' commands),
# snmpd (net-snmp: the SNMP agent the enrichment tests poll, v2c and v3).
TEST_DEBS := tshark softflowd pmacct nfdump tcpdump mosquitto mosquitto-clients bsdutils chromium curl snmpd
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: run test test-nojit bench debs venv lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/brokerwatch run

test: $(STAMP) debs
	$(PY) -m pytest -q

# The kernels' Python, for coverage of what numba compiles.
test-nojit: $(STAMP) debs
	NUMBA_DISABLE_JIT=1 $(PY) -m pytest -q tests/analytics tests/collector/flows/test_netflow_v5.py \
	  tests/collector/flows/test_netflow_v9.py tests/collector/flows/test_ipfix.py \
	  tests/collector/syslog/test_block.py tests/collector/syslog/test_tokens.py \
	  tests/collector/syslog/test_values.py tests/collector/syslog/test_header_kernel.py \
	  tests/collector/flows/test_meter.py

bench: $(STAMP) debs
	$(PY) -m bench

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache .hypothesis
