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

# The test servers come from Debian (run privately by the tests): Prosody 0.12 (with
# prosody-modules, for its push module mod_cloud_notify) and ejabberd 23.01 from this Debian
# 12, Prosody 13 and ejabberd 24.12 from a Debian 13 root built once and cached at
# MINIMIX_TRIXIE_ROOT (run with chroot, as root; their tests skip without it).
export MINIMIX_TRIXIE_ROOT ?= /var/cache/minimix/trixie

servers:
	@missing=""; for pkg in prosody prosody-modules ejabberd openssl debootstrap; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "not root: no Debian 13 root, the Prosody 13 and ejabberd 24.12 tests will be skipped"; \
	elif ! .ci/trixie-root "$$MINIMIX_TRIXIE_ROOT" prosody ejabberd >/dev/null; then \
	  echo "could not build the Debian 13 root: the Prosody 13 and ejabberd 24.12 tests will be skipped"; \
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
