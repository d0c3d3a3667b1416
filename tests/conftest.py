"""Fixtures for integration tests against real XMPP servers.

- `prosody` (0.12), `prosody_legacy` (0.12 without mod_bookmarks), `prosody13`, `ejabberd`
  (23.01), `ejabberd24` (24.12): one server per test module. Prosody 13 and ejabberd 24.12 run
  from a Debian 13 root (servers.root); where it cannot be had their tests are skipped.
- `server`: Prosody 0.12 for ordinary tests; both Prosodies for tests marked
  `@pytest.mark.prosodies`; all four servers for tests marked `@pytest.mark.interop`.
- `client`: a factory of connected TestClients, disconnected after the test.
- `daemon`: a factory that runs the daemon from a config file, stopped after the test;
  its output is attached to the report of a failing test.
Tests using a server are marked `integration` automatically.
"""

from __future__ import annotations

import itertools

import pytest

from harness import DaemonProcess, TestClient, daemon_config, to_toml
from servers import (
    Ejabberd24Server,
    EjabberdServer,
    Prosody13Server,
    ProsodyOptions,
    ProsodyServer,
    XmppServer,
)

SERVER_FIXTURES = {"prosody", "prosody_legacy", "prosody13", "ejabberd", "ejabberd24", "server"}
PROSODIES = ["prosody", "prosody13"]
INTEROP = [*PROSODIES, "ejabberd", "ejabberd24"]


def pytest_configure(config):
    # "interop" (every server) is registered in pyproject.toml
    config.addinivalue_line("markers", "prosodies: runs on Prosody 0.12 and 13")


def pytest_generate_tests(metafunc):
    if "server" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        kinds = INTEROP if marker("interop") else PROSODIES if marker("prosodies") else ["prosody"]
        metafunc.parametrize("server", kinds, indirect=True, scope="module")


def pytest_collection_modifyitems(items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _run_server(cls, tmp_path_factory, name: str, **kwargs):
    why_not = cls.available()
    if why_not:
        pytest.skip(f"{name}: {why_not}")
    server = cls(tmp_path_factory.mktemp(name), **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prosody(tmp_path_factory):
    """Prosody 0.12 with mod_bookmarks (XEP-0402 <-> XEP-0048 compat)."""
    yield from _run_server(ProsodyServer, tmp_path_factory, "prosody")


@pytest.fixture(scope="module")
def prosody_legacy(tmp_path_factory):
    """Prosody with mod_private but without mod_bookmarks: legacy bookmarks stay legacy."""
    yield from _run_server(
        ProsodyServer, tmp_path_factory, "prosody_legacy", options=ProsodyOptions(bookmarks=False)
    )


@pytest.fixture(scope="module")
def prosody13(tmp_path_factory):
    """Prosody 13.0 (bookmarks built in), from the Debian 13 root."""
    yield from _run_server(Prosody13Server, tmp_path_factory, "prosody13")


@pytest.fixture(scope="module")
def ejabberd(tmp_path_factory):
    """ejabberd 23.01, stock-like config."""
    yield from _run_server(EjabberdServer, tmp_path_factory, "ejabberd")


@pytest.fixture(scope="module")
def ejabberd24(tmp_path_factory):
    """ejabberd 24.12, the same config, from the Debian 13 root."""
    yield from _run_server(Ejabberd24Server, tmp_path_factory, "ejabberd24")


@pytest.fixture(scope="module")
def server(request) -> XmppServer:
    """The server of the current parameter (a fixture name: see pytest_generate_tests)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def client():
    """client(server, account=None, resource="test", **TestClient kwargs, connect=True, **connect kwargs)
    -> a connected TestClient (a fresh account unless one is given)."""
    made: list[TestClient] = []

    def make(
        server,
        account=None,
        resource="test",
        *,
        connect=True,
        show=None,
        status=None,
        priority=None,
        **kw,
    ) -> TestClient:
        c = TestClient(server, account or server.new_account(), resource, **kw)
        made.append(c)
        if connect:
            c.connect(show=show, status=status, priority=priority)
        return c

    yield make
    for c in made:
        c.disconnect()


@pytest.fixture
def daemon(request, tmp_path):
    """daemon(server, account, extra=None, resource="minimix", env=None, argv=None,
    state_dir=None) -> a started DaemonProcess, stopped (SIGTERM, then SIGKILL) after the
    test. `extra` is merged into the TOML config; `argv` replaces the minimix command
    ("{config}" in it becomes the config file's path)."""
    started: list[DaemonProcess] = []
    request.node.minimix_daemons = started
    counter = itertools.count(1)

    def start(
        server, account, *, extra=None, resource="minimix", env=None, argv=None, state_dir=None
    ) -> DaemonProcess:
        n = next(counter)
        state_dir = state_dir or tmp_path / f"state{n}"
        state_dir.mkdir(parents=True, exist_ok=True)
        config_file = tmp_path / f"minimix{n}.toml"
        config_file.write_text(to_toml(daemon_config(server, account, state_dir, resource, extra)))
        config_file.chmod(0o600)  # it holds the password
        if argv is not None:
            argv = [str(config_file) if a == "{config}" else a for a in argv]
        d = DaemonProcess(
            config_file, tmp_path / f"daemon{n}.log", argv=argv, env=env, cwd=tmp_path
        )
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach daemon output and server log tails to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for i, d in enumerate(getattr(item, "minimix_daemons", []), 1):
        report.sections.append((f"daemon {i}: {d!r}, log {d.log_file}", d.tail(300)))
    servers = {
        id(v): v for v in getattr(item, "funcargs", {}).values() if isinstance(v, XmppServer)
    }
    for s in servers.values():
        report.sections.append((f"{s.kind} log tail ({s.workdir})", s.log_tail(40)))
