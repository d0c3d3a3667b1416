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
    logging.getLogger("aioxmpp.protocol").debug("connected to %s", "xmpp.example.org")
    assert stream.lines() == ["<7>connected to xmpp.example.org logger=aioxmpp.protocol"]


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
    stream = journal(log_messages=True)
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
    stream = journal(log_messages=True)
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


def test_a_short_password_in_a_sasl_exchange_is_masked_even_with_log_messages(journal) -> None:
    """A password under 8 characters is not registered as a secret; in SASL it still never shows:
    the content of every SASL element is masked (PLAIN's base64, SCRAM's proofs and answers)."""
    stream = journal(log_messages=True)
    plain = base64.b64encode(b"\0alice\0pw5!x").decode()
    stream_log = logging.getLogger("aioxmpp.client.XMLStream")
    stream_log.debug("SENT %r", f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>".encode())
    stream_log.debug("SENT %r", b"<sasl:response xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdz")  # cut
    stream_log.debug("RECV %r", b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtv</challenge>")
    stream_log.debug("RECV %r", b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1ybUY5</success>")
    lines = stream.lines()
    assert len(lines) == 4 and all(">***" in line for line in lines), lines
    for payload in (plain, "Yz1iaXdz", "cj1meWtv", "dj1ybUY5"):
        assert payload not in stream.getvalue()


# --- other people's words: stream content ------------------------------------------------------


class Stanza:
    """Stands for an aioxmpp XSO (a test registers it as stream content)."""

    def __repr__(self) -> str:
        return "<message><body>what bob said</body></message>"


@pytest.fixture
def stanzas() -> Iterator[None]:
    saved = minimix_logging._content_types, minimix_logging._content_loggers
    minimix_logging.hide_content(Stanza, loggers=["somelib.parser"])
    yield
    minimix_logging._content_types, minimix_logging._content_loggers = saved


@pytest.mark.parametrize("logger", ["aioxmpp.client.XMLStream", "aioxmpp.node.XMLStream", "aioxmpp"])
def test_stream_bytes_are_never_shown(journal, logger: str) -> None:
    """Whatever the logger: the probe's stream logged under aioxmpp.node.XMLStream when it
    looked the server up by SRV, and the filter knew only "RECV " and "SEND "."""
    stream = journal()
    for what in ("SENT", "RECV", "SEND"):
        logging.getLogger(logger).debug(f"{what} %r", b"<message><body>what bob said</body></message>")
    assert stream.lines() == [f"<7>{what} <45 bytes> logger={logger}" for what in ("SENT", "RECV", "SEND")]


@pytest.mark.parametrize("level", ["debug", "info"])
@pytest.mark.parametrize("logger", ["aioxmpp.client.XMLStream", "aioxmpp.node.XMLStream", "aioxmpp.stream"])
def test_stream_bytes_and_stanzas_are_never_shown(journal, stanzas, level: str, logger: str) -> None:
    """Whatever the logger and the level, in containers too."""
    stream = journal(level)
    log = logging.getLogger(logger)
    for method in (log.debug, log.warning):
        method("SENT %r", b"<message><body>what bob said</body></message>")
        method("incoming %s: %r", "message", Stanza())
        method("changed %s -> %s", [Stanza(), "kept"], {"new": (Stanza(),)})
        method("%(what)s in %(where)s", {"what": Stanza(), "where": "r@m"})
        method(Stanza())
    assert "bob" not in stream.getvalue()
    shown = [line.rsplit(" logger=", 1)[0] for line in stream.lines()]
    expected = [
        "SENT <45 bytes>",
        "incoming message: <Stanza>",
        "changed [<Stanza>, 'kept'] -> {'new': (<Stanza>,)}",
        "<Stanza> in r@m",
        "<Stanza>",
    ]
    assert shown == [f"<{p}>{line}" for p in ([7] if level == "debug" else []) + [4] for line in expected]


def test_our_own_fields_never_show_a_stanza(journal, stanzas) -> None:
    stream = journal()
    get_logger().info("took", stanza=Stanza(), raw=b"<body>what bob said</body>", room="r@m")
    assert stream.lines() == ["<6>took stanza=<Stanza> raw=\"<26 bytes>\" room=r@m logger=minimix"]


def test_a_parsers_text_arguments_and_exception_are_never_shown(journal, stanzas) -> None:
    """aioxmpp.xso.model logs the attribute value it could not parse, and the exception
    quoting it."""
    stream = journal()
    try:
        int("what bob said")
    except ValueError:
        logging.getLogger("somelib.parser").debug("while parsing %s (%r)", int, "what bob said", exc_info=True)
    assert stream.lines() == ["<7>while parsing <class 'int'> (<13 characters>) (ValueError) logger=somelib.parser"]


def test_log_messages_shows_the_stream_at_debug_only(journal, stanzas) -> None:
    sent = b"<message><body>what bob said</body></message>"
    stream = journal("info", log_messages=True)
    logging.getLogger("aioxmpp.stream").warning("SENT %r", sent)
    minimix_logging.set_level("debug", log_messages=True)
    logging.getLogger("aioxmpp.stream").debug("SENT %r / %r", sent, Stanza())
    minimix_logging.set_level("debug")
    logging.getLogger("aioxmpp.stream").debug("SENT %r", sent)
    assert [line.rsplit(" logger=", 1)[0] for line in stream.lines()] == [
        "<4>SENT <45 bytes>",
        f"<7>SENT {sent!r} / <message><body>what bob said</body></message>",
        "<7>SENT <45 bytes>",
    ]


# --- escaping ---------------------------------------------------------------------------------

ESCAPED = [
    *range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
    *range(0x2066, 0x206A), *range(0xD800, 0xE000),
]
_ESCAPE_SEQUENCE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))")


def unescape(text: str) -> str:
    named = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    return _ESCAPE_SEQUENCE.sub(lambda m: chr(int(m[1] or m[2], 16)) if m[3] is None else named[m[3]], text)


def test_every_control_separator_bidi_override_and_surrogate_is_escaped() -> None:
    every = "".join(map(chr, ESCAPED))
    escaped = minimix_logging.escape(every)
    assert escaped.isascii() and escaped.isprintable()
    assert unescape(escaped) == every
    for c in ESCAPED:
        assert minimix_logging.escape(chr(c)) == {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(
            c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
        )


@given(st.text())
def test_escaping_is_unambiguous_and_leaves_the_rest_as_it_is(text: str) -> None:
    escaped = minimix_logging.escape(text)
    assert unescape(escaped) == text
    assert not set(escaped) & set(map(chr, ESCAPED))
    if "\\" not in text:
        assert escaped == "".join(c if ord(c) not in ESCAPED else minimix_logging.escape(c) for c in text)


@pytest.mark.parametrize("console", [False, True])
def test_events_keys_and_values_are_escaped_in_both_modes(console: bool) -> None:
    stream = Stream(tty=console)
    setup("debug", stream=stream, env={"NO_COLOR": "1"})
    evil = "kicked\r<3>forged\u2028line\u202egnp.exe\x1b[31m\x85"
    get_logger().warning(f"room state {evil}", reason=evil, **{f"k{evil}": 1})
    logging.getLogger("somelib").warning("said %s", evil)
    try:
        raise ValueError(evil)
    except ValueError:
        get_logger().exception("failed")
    output = stream.getvalue()
    assert not set(output) & (set(map(chr, ESCAPED)) - {"\n"})
    shown = "\\r<3>forged\\u2028line\\u202egnp.exe\\x1b[31m\\x85"
    assert output.count(shown) == 5  # the event, the key, the value, the library's, the exception's
    assert [line.count(shown) for line in stream.lines() if shown in line] == [3, 1, 1]
