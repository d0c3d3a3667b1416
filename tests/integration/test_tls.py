"""TLS verification is always on: a certificate the daemon cannot verify means no
connection, ever (it keeps trying, saying why), and so no rooms.

Two cases: the server's certificate comes from a CA the daemon does not trust
(``ca_file`` = ``server.wrong_ca_file``), or from the trusted CA but for another name
(an account on ``server.mismatch_domain``, served with the certificate of localhost).
"""

from __future__ import annotations

from harness import wait_until
from servers import Account

FAILED = r"^<4>connection failed "


def mismatch_account(server) -> Account:
    localpart = f"mm{server.new_account().localpart}"
    return Account(
        server.register(localpart, "pw-mismatch", server.mismatch_domain), localpart, "pw-mismatch"
    )


def assert_no_session(server, account, resource: str = "minimix") -> None:
    """The server has no session of the daemon's resource (asked on the server itself: no
    client of a mismatched domain can log in to watch)."""
    answer = server.shell(
        f'>return prosody.full_sessions["{account.jid}/{resource}"] and "online" or "offline"'
    )
    assert answer.split()[-1] == "offline", answer


def wait_tried(d, attempts: int = 1) -> None:
    """Until `attempts` failed attempts are logged, or the daemon is gone."""
    wait_until(
        lambda: len(d.grep(FAILED)) >= attempts or not d.running,
        timeout=30,
        message=lambda: f"{attempts} failed attempts never logged:\n{d.tail(20)}",
    )


# -- never connected --------------------------------------------------------------------------


def test_a_certificate_from_an_unknown_ca_is_refused(user):
    room = user.room()
    user.phone.publish_bookmark(room, nick="trusting")

    d = user.start(extra={"account": {"ca_file": str(user.server.wrong_ca_file)}})

    wait_tried(d)
    assert d.grep(r"^<[0-4]>.*certificate verif"), d.tail(20)
    assert_no_session(user.server, user.account)
    assert user.bob.ping(user.server.domain) == "result"
    assert not user.daemon_presences(), "the daemon came online"
    assert user.daemon_nick(room) is None
    assert not d.grep(r"session established|bookmarks loaded|room state")


def test_a_certificate_for_another_name_is_refused(server, daemon):
    account = mismatch_account(server)

    d = daemon(server, account)

    wait_tried(d)
    assert d.grep(r"^<[0-4]>.*hostname mismatch"), d.tail(20)
    assert_no_session(server, account)
    assert not d.grep(r"session established|bookmarks loaded|room state")


# -- and it keeps trying -------------------------------------------------------------------------



def _all_keep_trying(daemons, attempts: int = 3) -> None:
    """The failure is timing-dependent, so several daemons try at once: each must still be
    running after `attempts` failed attempts (with growing delays: ~7 s)."""
    wait_until(
        lambda: (
            all(len(d.grep(FAILED)) >= attempts for d in daemons)
            or any(not d.running for d in daemons)
        ),
        timeout=40,
    )
    for d in daemons:
        assert d.running, f"the daemon exited with {d.returncode}:\n{d.tail(8)}"



def test_with_an_unknown_ca_the_daemon_keeps_trying(server, daemon):
    _all_keep_trying(
        [
            daemon(
                server,
                server.new_account(),
                extra={"account": {"ca_file": str(server.wrong_ca_file)}},
            )
            for _ in range(3)
        ]
    )



def test_with_a_certificate_for_another_name_the_daemon_keeps_trying(server, daemon):
    _all_keep_trying([daemon(server, mismatch_account(server)) for _ in range(3)])
