# minimix — the commands a developer needs.
#   make demo   a throwaway local server, the daemon at work (Ctrl-C stops everything)
#   make test   the whole test suite against real servers (installs Prosody and ejabberd if missing)
#   make bench  the performance targets, measured side by side
.PHONY: install test unit integration lint demo bench servers diagram clean

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

# scripts/install.py is `pip install` with aioxmpp 0.13.3 allowed lxml 5 and 6, which Python
# 3.13 needs (aioxmpp pins lxml 4, which does not build there); README, Install says more.
$(VENV)/.installed: pyproject.toml scripts/install.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python scripts/install.py --quiet -e '.[test]'
	touch $@

# The test servers come from Debian: Prosody 0.12 and ejabberd 23.01 (run privately by the tests),
# and prosody-modules for Prosody's push module (mod_cloud_notify).
servers:
	@missing=""; for pkg in prosody prosody-modules ejabberd openssl; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: install servers
	$(BIN)/python -m pytest

# Every test that needs no XMPP server (the fixtures that start one mark theirs `integration`).
unit: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check daemon tests bench scripts

demo: install servers
	$(BIN)/python tests/demo.py

bench: install servers
	$(BIN)/python bench/run.py

# The room state machine, drawn from its table (needs graphviz's `dot`; a test keeps it current).
diagram: install
	$(BIN)/python docs/make_room_diagram.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build daemon/*.egg-info
