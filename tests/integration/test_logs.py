"""What the daemon's log never carries, against a Prosody that offers SASL PLAIN only (the
password travels in base64, where one under 8 characters cannot be found by redaction):

- a password, of any length, plain or base64 — at any level, also with log_messages;
- what other people wrote (room messages, private messages) — unless [logging]
  log_messages is set and the level is debug;
- a control character, separator or bidi override, whatever someone wrote (one line each).

Each test runs at level debug, which logs everything the other levels log and more.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import pytest

from harness import NS, daemon_config, to_toml, wait_until
from harness.relays import post, relays_to, wait_text
from harness.store import query
from minimix.logging import base64_fragments
from servers import Account, ProsodyOptions, ProsodyServer

NICK = "Ally"
PASSWORD = "k;7~Q"  # short, and nothing else in a log looks like it
MARK = "Xylo"  # in every message someone else writes here, and in nothing else


@pytest.fixture(scope="module")
def prosody(tmp_path_factory):
    """Prosody offering PLAIN only (what `server` gives this module's tests)."""
    server = ProsodyServer(
        tmp_path_factory.mktemp("prosody-plain"),
        ProsodyOptions(extra_config='disable_sasl_mechanisms = { "SCRAM-SHA-1", "SCRAM-SHA-256" }'),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def user(server, make_user):
    """A user whose password is PASSWORD."""
    localpart = f"short{server.new_account().localpart}"
    return make_user(server, account=Account(server.register(localpart, PASSWORD), localpart, PASSWORD))


def password_forms(user) -> list[str]:
    """The password, its base64 at each alignment, and the whole SASL PLAIN payload."""
    plain = base64.b64encode(f"\0{user.account.localpart}\0{PASSWORD}".encode()).decode()
    return [PASSWORD, *base64_fragments(PASSWORD.encode()), plain]


def assert_password_never_shown(text: str, user) -> None:
    assert "attempting PLAIN mechanism" in text  # the password went in base64
    for form in password_forms(user):
        assert form not in text, f"{form!r} is in the log"


def assert_one_line_each(lines: list[str]) -> None:
    bad = [line for line in lines if not re.fullmatch(r"<[0-7]>\S[\x20-\x7e\xa0-\u2027\u202f-\u2065\u206a-\U0010ffff]*", line)]
    assert not bad, bad[:5]


def unacked(d) -> int:
    """Relays the daemon sent whose reception the server has not acknowledged (yet)."""
    return (query(d, "SELECT count(*) FROM inflight WHERE NOT acked") or [(0,)])[0][0]


def test_at_debug_no_password_and_no_one_elses_words_even_through_a_crash(user):
    """Relays, a private message, a SIGKILL with relays in flight (the next start asks the
    server about them on a stream of its own, which gets the room messages queued for the
    killed session), and a catch-up of what was said meanwhile."""
    room = user.room()
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"logging": {"level": "debug"}, "relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, NICK)
    post(user, room, [f"{MARK} says hello"])
    wait_text(user, laptop, f"{MARK} says hello")
    user.bob.send_message(
        f"{room}/{NICK}", f"{MARK} whispers", "chat", extra_xml=f"<x xmlns='{NS['muc_user']}'/>"
    )
    user.wait_relay(laptop, f"{MARK} whispers")

    said: list[str] = []
    for attempt in range(5):  # killed while relays are in flight: almost always at once
        mark = len(laptop.messages)
        for i in range(200):
            said.append(f"{MARK} burst {attempt}.{i}")
            user.bob.say(room, said[-1])
            if len(relays_to(laptop, user.full_jid, mark)) >= 5:
                break
        d.kill()
        if unacked(d):
            break
        d.start()
        user.wait_joined(room, NICK)
    assert unacked(d), "never killed with a relay in flight"
    post(user, room, [f"{MARK} while it was down"])
    since = len(d.lines)
    d.start()
    d.wait_log(r"relays in flight at the last stop .*server_count=\d", since=since)
    d.wait_log(r"caught up .*messages=[1-9]", since=since)
    wait_text(user, laptop, f"{MARK} while it was down")
    assert d.stop() == 0

    text = d.output()
    assert len(d.lines) > 300, "debug logging is not on"
    assert_password_never_shown(text, user)
    assert MARK not in text, [line for line in d.lines if MARK in line][:3]
    assert_one_line_each(d.lines)
    assert re.search(r"SENT <\d+ bytes>", text)  # the stream is logged, as its size


def test_log_messages_at_debug_shows_the_stream_but_no_password(user):
    """What log_messages adds: the XML stream as sent and received (SENT b'…', RECV b'…',
    stanzas by their repr); SASL stays masked."""
    room = user.room()
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    config = {"logging": {"level": "debug", "log_messages": True}, "relay": {"clients": {"laptop": "all"}}}
    d = user.start(config)
    user.wait_joined(room, NICK)
    post(user, room, [f"{MARK} on the record"])
    wait_text(user, laptop, f"{MARK} on the record")
    assert d.stop() == 0

    text = d.output()
    assert re.search(rf"<7>RECV b.*<body>{MARK} on the record</body>", text)
    assert re.search(rf"<7>SENT b.*<body>\[[^]]*\] bob: {MARK} on the record</body>", text)
    assert_password_never_shown(text, user)
    assert_one_line_each(d.lines)


def test_doctor_at_debug_shows_no_stream_and_no_password(server, user, tmp_path):
    config = tmp_path / "doctor.toml"
    extra = {"logging": {"level": "debug"}}
    config.write_text(to_toml(daemon_config(server, user.account, tmp_path / "state", extra=extra)))
    run = subprocess.run(
        [sys.executable, "-m", "minimix", "doctor", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    log = run.stderr.splitlines()
    assert len(log) > 100, "debug logging is not on"
    assert not [line for line in log if re.search(r"(SENT|RECV) b", line)]
    assert_password_never_shown(run.stderr + run.stdout, user)
    assert_one_line_each(log)


def test_a_kick_reason_stays_on_one_line_escaped(user):
    """What the daemon gets from the room is written as escapes: a CR (which Prosody sends as is,
    so the daemon's XML parser reads it as a line feed), NEL, LINE SEPARATOR, RIGHT-TO-LEFT
    OVERRIDE, DEL, a C1 control and a tab."""
    room = user.room()
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"logging": {"level": "debug"}})
    user.wait_joined(room, NICK)
    reason = "one&#13;two&#x85;three\u2028four\u202efive&#x7f;six&#x9f;seven&#9;eight"
    since = len(d.lines)
    user.bob.send_raw(  # as is: a client library would send the CR raw, and Prosody read a LF
        f"<iq type='set' to='{room}' id='kick-1'><query xmlns='{NS['muc_admin']}'>"
        f"<item nick='{NICK}' role='none'><reason>{reason}</reason></item></query></iq>"
    )
    line = d.wait_log(r"<6>room state .*to=backoff", since=since).string
    assert 'reason="kicked by bob: one\\ntwo\\x85three\\u2028four\\u202efive\\x7fsix\\x9fseven\\teight"' in line
    wait_until(lambda: user.daemon_nick(room) == NICK, message="not back after the kick")
    assert d.stop() == 0
    assert_one_line_each(d.lines)
