"""Real clients drive the daemon: Debian's profanity 0.13 and poezio 0.14, run headless in a
private tmux server and typed into as a user would, edit the account's bookmarks; the daemon
(same account) follows, as bob sees from inside the room. The last two tests pin how the
two show relays, acknowledge them and run the daemon's commands (docs/clients/README.md).

Each client logs in with its own config and data under the test's tmp_path (HOME and the
XDG dirs point there), trusting the fixture's CA (never disabling verification):

- profanity: ``[connection] tls.certpath=DIR`` in ``$XDG_CONFIG_HOME/profanity/profrc``
  (what ``/tls certpath set DIR`` writes), DIR holding the CA as ``<subject-hash>.0``
  (libstrophe loads it as an OpenSSL CApath); the account (jid, server, port, password,
  ``tls.policy=force``) in ``$XDG_DATA_HOME/profanity/accounts``; ``profanity -a NAME``.
  With a wrong CA, profanity stops at "TLS certificate verification failed … /tls allow".
- poezio: ``-f FILE`` with ``jid``, ``password``, ``custom_host``, ``custom_port`` and
  ``ca_cert_path`` = the CA file (slixmpp verifies chain and host name with it); poezio then
  pins the certificate's SPKI hash in ``certificate`` by itself (trust on first use, no
  prompt). With a wrong CA: "The certificate sent by the server is invalid."

The commands (found in ``/help bookmark``, man profanity-bookmark(1), and poezio's
core/commands.py):

- profanity: ``/bookmark add ROOM nick NICK autojoin on``, ``/bookmark update ROOM autojoin
  off|on``, ``/bookmark remove ROOM``.
- poezio: ``/join ROOM`` (with ``synchronise_open_rooms``, on by default, a manual join also
  saves an autojoin bookmark), ``/remove_bookmark`` (in the room's tab), ``/bookmark ROOM
  true``, ``/leave`` (turns the bookmark's autojoin off). ``/bookmark ROOM true`` typed in
  poezio's roster tab crashes poezio 0.14's handler (AttributeError: 'RosterInfoTab' object
  has no attribute 'password', commands.py line 488), so it is typed in the room's tab.

What each client writes (read back by hand with a slixmpp client after each command: private
XML, PEP ``storage:bookmarks`` and ``urn:xmpp:bookmarks:1``, plus the events the phone got;
the tests assert the request kind from the client's own stanza log and the private-XML
state after each step):

+-------------------------+--------------------------------+--------------------------------+
| client, what it sends   | Prosody 0.12.3 + mod_bookmarks | ejabberd 23.01 (no #compat)    |
|                         | (#compat)                      |                                |
+=========================+================================+================================+
| profanity 0.13.1:       | private XML and PEP            | private XML and PEP            |
| XEP-0049 private XML    | ``storage:bookmarks`` are      | ``storage:bookmarks`` item     |
| ``set`` of the whole    | views of                       | ``current`` are one store      |
| XEP-0048 list on every  | ``urn:xmpp:bookmarks:1``: each | (each write shows in both; the |
| change: ``<conference   | save is mapped to one item per | account's resources get a      |
| jid name=LOCALPART      | room (name, autojoin, nick     | ``storage:bookmarks`` PEP      |
| autojoin=true/false>``, | kept) and notified: a publish  | event); no                     |
| ``<nick/>`` if given    | per changed room, a            | ``urn:xmpp:bookmarks:1`` node  |
|                         | ``<retract/>`` per removed     | ever appears (item-not-found). |
|                         | room while others remain, a    | The daemon only sees changes   |
|                         | ``<purge/>`` of the node when  | by polling private XML.        |
|                         | the list becomes empty         |                                |
+-------------------------+--------------------------------+--------------------------------+
| poezio 0.14, default    | same as profanity (no          | same as profanity              |
| (empty                  | ``autojoin`` in XEP-0048 maps  |                                |
| use_bookmarks_method =  | to none in XEP-0402: off)      |                                |
| privatexml): the same   |                                |                                |
| private-XML ``set``;    |                                |                                |
| ``<conference name=JID  |                                |                                |
| jid=JID                 |                                |                                |
| autojoin="true"/>``, no |                                |                                |
| nick unless typed       |                                |                                |
| (``/join ROOM/NICK``),  |                                |                                |
| autojoin off = no       |                                |                                |
| ``autojoin`` attribute  |                                |                                |
+-------------------------+--------------------------------+--------------------------------+
| poezio 0.14 with        | same mapping as above          | same single store as above     |
| use_bookmarks_method =  | (private XML and               |                                |
| pep: XEP-0223 PEP       | ``urn:xmpp:bookmarks:1`` show  |                                |
| publish, node           | it; an empty list purges)      |                                |
| ``storage:bookmarks``,  |                                |                                |
| item ``current``,       |                                |                                |
| publish-options         |                                |                                |
| persist_items=1,        |                                |                                |
| access_model=whitelist  |                                |                                |
+-------------------------+--------------------------------+--------------------------------+

Neither client knows XEP-0402: profanity has no code for ``urn:xmpp:bookmarks:1`` at all, and
poezio only offers "privatexml" and "pep" (legacy ``storage:bookmarks``). The daemon sees
them on Prosody through the #compat mapping (live notifications) and on ejabberd by polling
the private-XML store, so these tests pass ``[bookmarks] poll_interval_s = 2``.

Each client runs one flow: bookmark a room with autojoin (the daemon joins), autojoin off
(it leaves), on again (it joins), remove the bookmark (it leaves); once with another
bookmark kept, once with the room as the last bookmark. On Prosody the last removal is a
``<purge/>``, which the daemon takes as "every XEP-0402 bookmark is gone".

poezio refuses to run as root (``main()`` prints "Please do not run poezio as root." and
exits before reading its config). When the tests run as root, poezio is started by
``python3 -c`` with ``os.geteuid`` answering a non-root uid, which only skips that check; the
client code that connects and writes bookmarks is poezio's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from harness import NS, el_of, wait_until

PROFANITY = "/usr/bin/profanity"
POEZIO = "/usr/bin/poezio"
TMUX = shutil.which("tmux")
WIDTH, HEIGHT = 200, 50
#: on ejabberd the daemon polls the legacy store; keep that quick
FAST_POLL = {"bookmarks": {"poll_interval_s": 2}}
POEZIO_NICK = "poezio-user"


def _missing(*paths: str | None) -> str | None:
    for p in paths:
        if not p or not os.access(p, os.X_OK):
            return f"{p or 'tmux'} is not installed"
    return None


def _term() -> str:
    for d in ("/lib/terminfo", "/usr/share/terminfo", "/etc/terminfo"):
        if Path(d, "t", "tmux-256color").exists():
            return "tmux-256color"
    return "screen"


# -- a terminal client in a private tmux server -------------------------------------------


class Tui:
    """A full-screen client running in its own tmux server (``tmux -L SOCKET``, no user
    config), driven with send-keys and read with capture-pane."""

    def __init__(self, name: str, argv: list[str], log_file: Path):
        self.name = name
        self.socket = f"minimix-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.argv = argv
        self.log_file = log_file  # the client's own debug log (stanzas sent and received)
        self.pane_pid: int | None = None
        self.socket_path: str | None = None

    def tmux(self, *args: str) -> str:
        r = subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self) -> Tui:
        # tmux would split the command line at an argument ending in ";"
        assert not any(a.endswith(";") for a in self.argv), self.argv
        # One tmux command queue: the pane stays readable if the client exits or crashes.
        self.tmux(
            "start-server", ";",
            "set-option", "-g", "remain-on-exit", "on", ";",
            "new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT),
            *self.argv,
        )  # fmt: skip
        pid, self.socket_path = (
            self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid} #{socket_path}")
            .strip()
            .split(" ", 1)
        )
        self.pane_pid = int(pid)
        return self

    def close(self) -> None:
        """Kill the session (SIGHUP to the client), then the private server; SIGKILL the
        client's process group if it outlived them."""
        for cmd in (["kill-session", "-t", self.name], ["kill-server"]):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.tmux(*cmd)
        if self.pane_pid is not None:
            try:
                wait_until(lambda: not _alive(self.pane_pid), timeout=5)
            except AssertionError:
                # the pane's process leads its own session and process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pane_pid, signal.SIGKILL)
        if self.socket_path:  # tmux leaves its socket file behind
            Path(self.socket_path).unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------------

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def input_line(self) -> str:
        lines = self.screen().split("\n")
        return lines[HEIGHT - 1].rstrip() if len(lines) >= HEIGHT else ""

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_screen(self, pattern: str, timeout: float | None = None) -> re.Match:
        rx = re.compile(pattern)
        return wait_until(
            lambda: rx.search(self.screen()),
            timeout,
            message=lambda: f"{self.name}: /{pattern}/ never on screen:\n{self.screen()}",
        )

    def wait_log(self, pattern: str, timeout: float | None = None) -> re.Match:
        rx = re.compile(pattern)
        return wait_until(
            lambda: rx.search(self.log()),
            timeout,
            message=lambda: f"{self.name}: /{pattern}/ never in {self.log_file}:\n{self.screen()}",
        )

    # -- typing -----------------------------------------------------------------------------

    def command(self, line: str) -> None:
        """Type a /command and press Enter, waiting for each keystroke batch to show.

        "/" goes alone: poezio reads a multi-key batch as a paste, and its roster tab drops
        pastes unless "/" has opened the command line first."""
        assert line.startswith("/"), line

        def shows(text: str):
            return lambda: self.input_line().endswith(text)

        def fail(what: str):
            return lambda: f"{self.name}: {what}; input line {self.input_line()!r}\n{self.screen()}"

        self.tmux("send-keys", "-t", self.name, "-l", "/")
        wait_until(shows("/"), message=fail("'/' not echoed"))
        self.tmux("send-keys", "-t", self.name, "-l", line[1:])
        wait_until(shows(line), message=fail(f"{line!r} not echoed"))
        self.tmux("send-keys", "-t", self.name, "Enter")
        wait_until(lambda: not shows(line)(), message=fail(f"{line!r} not taken"))

    def __repr__(self):
        return f"<Tui {self.name} pid={self.pane_pid}>"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (tmux reaps its panes, but not instantly) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _isolated_env(root: Path) -> dict[str, str]:
    """HOME and the XDG dirs under `root`: the client never sees the real user's files."""
    env = {"HOME": str(root / "home")}
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        env[var] = str(root / sub)
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    env.update(TERM=_term(), LANG="C.UTF-8", PATH="/usr/bin:/bin")
    return env


def _env_argv(env: dict[str, str], argv: list[str]) -> list[str]:
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]


@pytest.fixture
def tuis():
    """The Tuis a test started; each is closed after the test, and its last screen printed
    (shown under a failure as "Captured stdout teardown")."""
    started: list[Tui] = []
    yield started
    for t in started:
        try:
            print(f"--- {t.name} screen at teardown ---\n{t.screen()}")
        except Exception as e:  # noqa: BLE001 - diagnostics only
            print(f"--- {t.name}: no screen ({e}) ---")
        finally:
            t.close()


# -- profanity ------------------------------------------------------------------------------


@pytest.fixture
def profanity(tuis, tmp_path):
    """profanity(server, account) -> a Tui with profanity logged in and its bookmarks read."""
    why_not = _missing(TMUX, PROFANITY)
    if why_not:
        pytest.skip(why_not)

    def start(server, account) -> Tui:
        root = tmp_path / "profanity"
        env = _isolated_env(root)
        capath = root / "capath"
        capath.mkdir()
        subject_hash = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(server.ca_file)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        shutil.copy(server.ca_file, capath / f"{subject_hash}.0")
        conf = Path(env["XDG_CONFIG_HOME"], "profanity")
        data = Path(env["XDG_DATA_HOME"], "profanity")
        conf.mkdir()
        data.mkdir()
        (conf / "profrc").write_text(f"[connection]\ntls.certpath={capath}\n")
        (data / "accounts").write_text(
            "[user]\n"
            "enabled=true\n"
            f"jid={account.jid}\n"
            f"server={server.host}\n"
            f"port={server.port}\n"
            f"password={account.password}\n"
            "resource=profanity\n"
            "tls.policy=force\n"
        )
        t = Tui(
            "profanity",
            _env_argv(env, [PROFANITY, "-a", "user", "-l", "DEBUG"]),
            data / "logs" / "profanity.log",
        )
        tuis.append(t)
        t.start()
        t.wait_screen(rf"{re.escape(account.jid)}/profanity logged in successfully")
        assert "TLS certificate verification failed" not in t.screen()
        # Its first bookmark fetch, answered (a save before it would rewrite a stale list).
        t.wait_log(r'RECV: <iq (?=[^>]*id="bookmark_init_request")(?=[^>]*type="result")')
        return t

    return start


# -- poezio ---------------------------------------------------------------------------------

#: poezio's main() exits at once as root; this runs the same entry point without that check
_POEZIO_AS_ROOT = (
    "import os, sys; os.geteuid = lambda: 65534; from poezio.__main__ import run; sys.exit(run())"
)


def _poezio_python() -> str:
    with open(POEZIO) as f:
        first = f.readline()
    return first[2:].strip().split()[0] if first.startswith("#!") else "/usr/bin/python3"


@pytest.fixture
def poezio(tuis, tmp_path):
    """poezio(server, account, bookmarks_method="") -> a Tui with poezio logged in and its
    remote bookmarks fetched."""
    why_not = _missing(TMUX, POEZIO)
    if why_not:
        pytest.skip(why_not)

    def start(server, account, bookmarks_method: str = "") -> Tui:
        root = tmp_path / "poezio"
        env = _isolated_env(root)
        config = root / "poezio.cfg"
        config.write_text(
            "[Poezio]\n"
            f"jid = {account.jid}\n"
            f"password = {account.password}\n"
            f"custom_host = {server.host}\n"
            f"custom_port = {server.port}\n"
            f"ca_cert_path = {server.ca_file}\n"
            f"default_nick = {POEZIO_NICK}\n"
            f"use_bookmarks_method = {bookmarks_method}\n"
        )
        log_file = root / "poezio-debug.log"
        args = ["-f", str(config), "-d", str(log_file)]
        if os.geteuid() == 0:
            argv = [_poezio_python(), "-c", _POEZIO_AS_ROOT, *args]
        else:
            argv = [POEZIO, *args]
        t = Tui("poezio", _env_argv(env, argv), log_file)
        tuis.append(t)
        t.start()
        t.wait_screen(rf"Your JID is {re.escape(account.jid)}/")
        # poezio saves bookmarks remotely only once it has probed the storage (then it
        # asks for the list): wait for the answer to that request.
        query = t.wait_log(r"SEND: <iq [^>]*>(<query xmlns=\"jabber:iq:private\">|<pubsub "
                           r"[^>]*><items node=\"storage:bookmarks\")")  # fmt: skip
        request_id = re.search(r'id="([^"]+)"', query.group(0)).group(1)
        t.wait_log(rf'RECV: <iq [^>]*id="{re.escape(request_id)}"')
        return t

    return start


# -- reading the stores (as the user's phone, slixmpp) ------------------------------------


def wait_stored(user, room: str, autojoin: bool | None, tui: Tui):
    """Wait until the private-XML (XEP-0048) list, which every client and server here
    shows the client's writes in, has `room` with `autojoin`, or no `room` at all
    (autojoin=None); where the server maps it (#compat), wait for XEP-0402 to agree."""

    def state():
        found = [b for b in user.phone.get_legacy_bookmarks() if b.jid == room]
        return found[0].autojoin if found else None

    def mapped():
        b = user.phone.get_bookmarks().get(room)
        return (b.autojoin if b else None) == autojoin

    wait_until(
        lambda: state() == autojoin,
        message=lambda: (
            f"private XML never showed {room} with autojoin={autojoin}: "
            f"{user.phone.get_legacy_bookmarks()}\n{tui.screen()}"
        ),
    )
    if user.server.bookmarks_compat:  # the server maps it into XEP-0402 (Prosody)
        wait_until(
            mapped,
            message=lambda: f"no XEP-0402 mapping of {room}: {user.phone.get_bookmarks()}",
        )


SENT_PRIVATE = (
    r'(SENT|SEND): <iq [^>]*type="set"[^>]*><query xmlns="jabber:iq:private">'
    r'<storage xmlns="storage:bookmarks"><conference'
)
SENT_PEP = r'SEND: <iq [^>]*type="set"[^>]*><pubsub [^>]*><publish node="storage:bookmarks">'


def assert_never_sent_xep0402(tui: Tui) -> None:
    sent = [
        line
        for line in tui.log().splitlines()
        if re.search(r"(SENT|SEND): ", line) and "urn:xmpp:bookmarks:1" in line
    ]
    assert not sent, sent


def start_daemon(user):
    d = user.start(extra=FAST_POLL)
    d.wait_log(r"<6>bookmarks loaded")
    return d


# -- the tests ---------------------------------------------------------------------------

#: with another bookmark left, removing the room is a <retract/> on Prosody; without, the
#: list becomes empty and Prosody purges the node instead
ANOTHER_BOOKMARK = pytest.mark.parametrize(
    "another", [True, False], ids=["another-bookmark-kept", "last-bookmark"]
)


def _event(message, kind: str, room: str):
    event = el_of(message).find("pubsub_event:event", NS)
    if event is None:
        return None
    node = f"[@node='{NS['bookmarks']}']"
    if kind == "purge":
        return event.find(f"pubsub_event:purge{node}", NS)
    return event.find(f"pubsub_event:items{node}/pubsub_event:retract[@id='{room}']", NS)


def wait_left_after_removal(request, user, room: str, another: bool, since: int) -> None:
    """The room's bookmark is gone: the daemon must leave the room.

    On a server that maps legacy bookmarks (#compat), the phone (+notify) first sees how
    the removal was announced: a <retract/> of the room's item while other bookmarks remain;
    once the list is empty, a <purge/> of the whole node (Prosody's mod_bookmarks) or the
    same <retract/> (ejabberd 24.12)."""
    if user.server.bookmarks_compat:
        kinds = ("retract",) if another else ("purge", "retract")
        user.phone.wait_message(
            lambda m: any(_event(m, kind, room) is not None for kind in kinds),
            since=since,
            message=f"the phone saw no {' or '.join(kinds)} event of {NS['bookmarks']}",
        )
    user.wait_left(room)


@pytest.mark.interop
@ANOTHER_BOOKMARK
def test_profanity_bookmarks_drive_the_daemon(request, server, make_user, profanity, another):
    user = make_user(server)
    room, kept = user.room(), user.room(prefix="kept")
    start_daemon(user)
    prof = profanity(server, user.account)

    if another:
        prof.command(f"/bookmark add {kept} nick kept-nick autojoin on")
        prof.wait_screen(rf"Bookmark added for {re.escape(kept)}\.")
        user.wait_joined(kept, "kept-nick")

    prof.command(f"/bookmark add {room} nick prof-nick autojoin on")
    prof.wait_screen(rf"Bookmark added for {re.escape(room)}\.")
    wait_stored(user, room, True, prof)
    prof.wait_log(SENT_PRIVATE)  # the whole XEP-0048 list, as private XML
    user.wait_joined(room, "prof-nick")

    prof.command(f"/bookmark update {room} autojoin off")
    wait_stored(user, room, False, prof)
    user.wait_left(room)

    prof.command(f"/bookmark update {room} autojoin on")
    wait_stored(user, room, True, prof)
    user.wait_joined(room, "prof-nick")

    since = len(user.phone.messages)
    prof.command(f"/bookmark remove {room}")
    prof.wait_screen(rf"Bookmark removed for {re.escape(room)}\.")
    wait_stored(user, room, None, prof)
    wait_left_after_removal(request, user, room, another, since)

    if another:  # every save rewrote the whole list: the other room was never left
        assert user.daemon_nick(kept) == "kept-nick"
    assert_never_sent_xep0402(prof)


@pytest.mark.interop
@ANOTHER_BOOKMARK
@pytest.mark.parametrize("method", ["", "pep"], ids=["privatexml", "pep"])
def test_poezio_bookmarks_drive_the_daemon(request, server, make_user, poezio, method, another):
    user = make_user(server)
    room, kept = user.room(), user.room(prefix="kept")
    nick = user.account.localpart  # poezio saves no nick: the daemon's default nick
    start_daemon(user)
    poe = poezio(server, user.account, bookmarks_method=method)

    if another:
        poe.command(f"/join {kept}")
        user.wait_joined(kept, nick)

    # A manual join saves an autojoin bookmark (synchronise_open_rooms).
    poe.command(f"/join {room}")
    poe.wait_screen(rf"You \({POEZIO_NICK}\) joined the room")
    wait_stored(user, room, True, poe)
    sent, not_sent = (SENT_PEP, SENT_PRIVATE) if method == "pep" else (SENT_PRIVATE, SENT_PEP)
    poe.wait_log(sent)
    assert not re.search(not_sent, poe.log())
    user.wait_joined(room, nick)

    poe.command("/leave")  # poezio leaves and saves the bookmark with autojoin off
    wait_stored(user, room, False, poe)
    user.wait_left(room)

    poe.command(f"/join {room}")  # already bookmarked: no save
    poe.wait_screen(rf"You \({POEZIO_NICK}\) joined the room")
    poe.command(f"/bookmark {room} true")  # typed in the room's tab (see the docstring)
    wait_stored(user, room, True, poe)
    user.wait_joined(room, nick)

    since = len(user.phone.messages)
    poe.command("/remove_bookmark")  # in the room's tab: its bookmark
    wait_stored(user, room, None, poe)
    wait_left_after_removal(request, user, room, another, since)

    if another:
        assert user.daemon_nick(kept) == nick
    assert_never_sent_xep0402(poe)


# -- relays, as the terminal clients show them ---------------------------------------------
#
# Measured by hand first (docs/clients/README.md); these pin it. Both clients get "all"
# from `[relay.clients]` (profanity's resource is "profanity", poezio's "poezio-XXXX").

RELAY_ALL = {"relay": {"clients": {"profanity": "all", "poezio*": "all"}}}
ROOM_NICK = "Ally"


def joined_with_relays(user) -> tuple[str, str]:
    """The daemon in a fresh room that relays everything to both clients: (room, its label)."""
    room = user.room()
    user.phone.publish_bookmark(room, nick=ROOM_NICK)
    user.start(extra=RELAY_ALL)
    user.wait_joined(room, ROOM_NICK)
    return room, room.split("@", 1)[0]


def bob_says(user, tui: Tui, room: str, text: str) -> None:
    """bob says `text` in `room`; the client has received a relay."""
    user.bob.say(room, text)
    tui.wait_log(rf'RECV: <message [^>]*from="{re.escape(user.full_jid)}"')


def receipt_sent(user) -> str:
    """A XEP-0184 receipt for a relay, to the daemon, in the client's stanza log."""
    to = re.escape(user.full_jid)
    return rf'(SENT|SEND): <message [^>]*to="{to}"[^>]*>\s*<received (?=[^>]*id="mmx-)[^>]*urn:xmpp:receipts'


def test_profanity_shows_relays_as_its_own_words_acknowledges_them_and_runs_commands(
    server, make_user, profanity
):
    """profanity files a relay under the account's own bare JID and prints it as "me: …"
    (the body is the whole of what it shows: no forwarded XML, no fallback marker; an action
    reads "* bob …", not "bob: /me …"), answers its XEP-0184 request, runs the ad-hoc
    commands (/cmd list, /cmd exec) and the chat commands typed to the daemon's full JID."""
    user = make_user(server)
    room, label = joined_with_relays(user)
    prof = profanity(server, user.account)

    bob_says(user, prof, room, "the kettle is on")
    prof.command(f"/win {user.account.jid}")
    prof.wait_screen(rf"- me: \[{label}\] bob: the kettle is on\n")
    user.bob.say(room, "/me pours the tea")  # the room window shows "*bob pours the tea"
    prof.wait_screen(rf"- me: \[{label}\] \* bob pours the tea\n")
    assert "forwarded" not in prof.screen() and "fallback" not in prof.screen()
    prof.wait_log(receipt_sent(user))

    prof.command("/win console")  # where /cmd prints
    prof.command(f"/cmd list {user.full_jid}")
    prof.wait_screen(r"Ad hoc commands:\n(.*\n)*?.* ! +say\n")
    prof.command(f"/cmd exec status {user.full_jid}")
    prof.wait_screen(r"status completed\n.*relay for this client: all")

    prof.command(f"/msg {user.full_jid} say {label} tea for everyone")
    user.bob.wait_groupchat(room, "tea for everyone")


def test_poezio_shows_relays_in_a_tab_of_its_own_account_acknowledges_them_and_lists_commands(
    server, make_user, poezio
):
    """poezio opens a conversation tab with the account itself and prints a relay there as an
    incoming message ("NICK> [room] bob: …", the tab marked private, which beeps by
    default), answers its XEP-0184 request and lists the ad-hoc commands (/ad-hoc JID)."""
    user = make_user(server)
    room, label = joined_with_relays(user)
    poe = poezio(server, user.account)

    bob_says(user, poe, room, "the kettle is on")
    poe.wait_log(receipt_sent(user))
    poe.command(f"/win {user.account.localpart}")
    poe.wait_screen(rf"\S+> \[{label}\] bob: the kettle is on")
    assert "forwarded" not in poe.screen() and "fallback" not in poe.screen()

    poe.command(f"/ad-hoc {user.full_jid}")
    poe.wait_screen(rf"Ad-hoc commands of JID {re.escape(user.full_jid)}")
    poe.wait_screen(r"say +Say something in a room")


def test_clients_list_the_daemon_as_minimix(user):
    """Dino lists an account's resources by their disco identity's name (the tooltip of
    your own conversation: "Dino", then the daemon's): that is "minimix", not aioxmpp's
    "aioxmpp default identity" (measured in Dino 0.4.2, docs/clients/)."""
    user.start()
    user.wait_daemon_online()
    assert user.phone.disco_info(user.full_jid).identities == {("client", "bot", "minimix")}
