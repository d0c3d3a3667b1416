"""Unit tests of minimix.logging: line format, journald priorities, stdlib capture, secrets."""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Callable, Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from minimix import logging as minimix_logging
from minimix.logging import add_secret, base64_fragments, get_logger, setup

SECRET = "hunter2-Secret-Pa55"


class Stream(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    yield
    minimix_logging.reset()


@pytest.fixture
def journal() -> Callable[..., Stream]:
    """Set up logging in journal mode into a fresh stream and return the stream."""

    def start(level: str = "debug", **kwargs) -> Stream:
        stream = Stream(tty=False)
        setup(level, stream=stream, env={}, **kwargs)
        return stream

    return start


# --- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2), ("exception", 3)],
)
def test_journal_priority_prefix(journal, method: str, priority: int) -> None:
    stream = journal()
    getattr(get_logger("minimix.test"), method)("something happened")
    assert stream.lines() == [f"<{priority}>something happened logger=minimix.test"]


def test_key_value_fields(journal) -> None:
    stream = journal()
    get_logger("minimix.rooms").info(
        "room left",
        room="room@muc.example.org",
        nick="Al B",
        reason=None,
        retry_in=2.5,
        resumed=False,
    )
    assert stream.lines() == [
        '<6>room left room=room@muc.example.org nick="Al B" reason= retry_in=2.5 resumed=false '
        "logger=minimix.rooms"
    ]


def test_journal_has_no_timestamp_console_has_one() -> None:
    journal_stream, console_stream = Stream(tty=False), Stream(tty=True)
    setup("info", stream=journal_stream, env={})
    get_logger().info("hello")
    setup("info", stream=console_stream, env={"NO_COLOR": "1"})
    get_logger().info("hello", room="r@m")
    assert journal_stream.lines() == ["<6>hello logger=minimix"]
    (line,) = console_stream.lines()
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[info\s*\] hello\s+\[minimix\] room=r@m$", line
    )


def test_auto_mode_follows_the_terminal() -> None:
    for tty, journal_mode in ((False, True), (True, False)):
        stream = Stream(tty=tty)
        setup("info", stream=stream, env={"NO_COLOR": "1"})
        get_logger().warning("x")
        assert stream.getvalue().startswith("<4>") == journal_mode


def test_forced_mode(journal) -> None:
    stream = Stream(tty=True)
    setup("info", stream=stream, mode="journal", env={})
    get_logger().info("x")
    assert stream.lines() == ["<6>x logger=minimix"]


def test_traceback_stays_on_one_line_in_the_journal(journal) -> None:
    stream = journal()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        get_logger().exception("join failed", room="r@m")
    (line,) = stream.lines()
    assert line.startswith(
        '<3>join failed room=r@m exception="Traceback (most recent call last):\\n'
    )
    assert line.endswith('ValueError: bad\\nthing" logger=minimix')


def test_multiline_event_stays_on_one_line(journal) -> None:
    stream = journal()
    logging.getLogger("somelib").warning("first\nsecond")
    assert stream.lines() == ["<4>first\\nsecond logger=somelib"]


def test_context_variables_are_fields(journal) -> None:
    stream = journal()
    with structlog.contextvars.bound_contextvars(room="r@m"):
        get_logger().info("joined")
        logging.getLogger("aioxmpp").warning("stream trouble")
    assert stream.lines() == [
        "<6>joined room=r@m logger=minimix",
        "<4>stream trouble room=r@m logger=aioxmpp",
    ]


def test_setup_again_replaces_the_handler(journal) -> None:
    first = journal()
    second = journal()
    get_logger().info("once")
    assert first.lines() == []
    assert second.lines() == ["<6>once logger=minimix"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        setup("verbose", stream=Stream())


# --- other libraries and levels -------------------------------------------------------------


def test_stdlib_records_go_through_the_same_pipeline(journal) -> None:
    stream = journal()
    logging.getLogger("aioxmpp.stream").error("resumption failed: %s", "timeout")
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    first, second = stream.lines()
    assert first == "<3>resumption failed: timeout logger=aioxmpp.stream"
    assert second.startswith('<3>Task exception was never retrieved exception="Traceback')
    assert "ConnectionResetError: peer went away" in second


def test_level_filters_our_events(journal) -> None:
    stream = journal("warning")
    log = get_logger("minimix.app")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert stream.lines() == ["<4>w logger=minimix.app", "<3>e logger=minimix.app"]


def test_libraries_are_quieter_unless_debug(journal) -> None:
    stream = journal("info")
    get_logger("minimix.app").info("ours")
    for name in ("aioxmpp", "apscheduler.scheduler", "asyncio"):
        logging.getLogger(name).info(f"{name} info")
        logging.getLogger(name).warning(f"{name} warning")
    assert [line.split(" logger=")[0] for line in stream.lines()] == [
        "<6>ours",
        "<4>aioxmpp warning",
        "<4>apscheduler.scheduler warning",
        "<4>asyncio warning",
    ]


def test_debug_shows_library_debug(journal) -> None:
    stream = journal("debug")
    logging.getLogger("aioxmpp.protocol").debug("SENT %r", b"<presence/>")
    assert stream.lines() == ["<7>SENT b'<presence/>' logger=aioxmpp.protocol"]


# --- secrets --------------------------------------------------------------------------------


def test_secret_redacted_in_event_values_and_exceptions(journal) -> None:
    stream = journal()
    add_secret(SECRET)
    log = get_logger()
    log.info(f"login with {SECRET}", detail=f"x{SECRET}y", error=ValueError(SECRET), n=3)
    try:
        raise RuntimeError(f'password "{SECRET}" rejected')
    except RuntimeError:
        log.exception("failed")
    output = stream.getvalue()
    assert SECRET not in output
    assert stream.lines()[0] == "<6>login with *** detail=x***y error=*** n=3 logger=minimix"
    assert 'RuntimeError: password \\"***\\" rejected' in output


def test_secret_with_characters_the_renderer_escapes(journal) -> None:
    stream = journal()
    secret = 'q"uo\\te\nd-Secret'
    add_secret(secret)
    get_logger().info("x", value=f"<{secret}>")
    assert stream.lines() == ["<6>x value=<***> logger=minimix"]


def test_secret_redacted_in_console_mode() -> None:
    stream = Stream(tty=True)
    setup("debug", stream=stream, env={})
    add_secret(SECRET)
    try:
        raise ValueError(SECRET)
    except ValueError:
        get_logger().exception("failed", value=SECRET)
    assert "***" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_secret_redacted_in_a_library_message(journal) -> None:
    stream = journal()
    add_secret(SECRET)
    logging.getLogger("aioxmpp.security_layer").debug("trying password %s for %s", SECRET, "alice")
    assert stream.lines() == ["<7>trying password *** for alice logger=aioxmpp.security_layer"]


@pytest.mark.parametrize(
    "payload",
    [
        b"\0alice\0" + SECRET.encode(),  # SASL PLAIN, no authzid
        b"alice@example.org\0alice\0" + SECRET.encode(),  # with authzid
        b"\0al\0" + SECRET.encode(),
        b"\0a\0" + SECRET.encode() + b"trailing",
    ],
)
def test_secret_redacted_in_base64_sasl_plain(journal, payload: bytes) -> None:
    stream = journal()
    add_secret(SECRET)
    encoded = base64.b64encode(payload)
    logging.getLogger("aioxmpp.protocol").debug(
        "SENT %r",
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + encoded + b"</auth>",
    )
    output = stream.getvalue()
    assert "***" in output
    assert encoded.decode() not in output


@given(
    prefix=st.binary(max_size=40),
    secret=st.binary(min_size=4, max_size=40),
    suffix=st.binary(max_size=40),
)
def test_base64_fragments_cover_any_position(prefix: bytes, secret: bytes, suffix: bytes) -> None:
    encoded = base64.b64encode(prefix + secret + suffix).decode()
    assert any(fragment in encoded for fragment in base64_fragments(secret))


def test_secret_keys_are_masked(journal) -> None:
    stream = journal()
    get_logger().info(
        "joining",
        room="r@m",
        password="room-pw",
        room_password="pw2",
        client_secret="s",
        password_source="file",
        token=None,
    )
    assert stream.lines() == [
        "<6>joining room=r@m password=*** room_password=*** client_secret=*** "
        "password_source=file token= logger=minimix"
    ]


def test_xml_password_elements_are_masked(journal) -> None:
    stream = journal()
    logging.getLogger("aioxmpp.protocol").debug(
        "SENT %r",
        b"<presence to='r@m/n'><x xmlns='http://jabber.org/protocol/muc'>"
        b"<password>room-pw</password></x></presence>",
    )
    (line,) = stream.lines()
    assert "room-pw" not in line
    assert "<password>***</password>" in line


def test_secrets_outlive_setup(journal) -> None:
    """A secret registered once stays redacted when logging is set up again."""
    add_secret(SECRET)
    stream = journal()
    minimix_logging.get_logger("minimix.x").debug("x", v=SECRET)
    assert stream.lines() == ["<7>x v=*** logger=minimix.x"]


def test_a_short_secret_does_not_mangle_the_log(journal) -> None:
    """Every "failed" (or every "x") replaced gave the password away by where the stars were."""
    stream = journal()
    add_secret("failed")
    add_secret("x")
    get_logger().info("connection failed", error="unexpected")
    assert stream.lines() == ["<6>connection failed error=unexpected logger=minimix"]


def test_set_level_changes_a_running_setup(journal) -> None:
    from minimix.logging import set_level

    stream = journal("info")
    get_logger().debug("hidden")
    set_level("debug")
    get_logger().debug("shown")
    assert stream.lines() == ["<7>shown logger=minimix"]
