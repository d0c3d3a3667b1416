"""`make demo`: a throwaway Prosody on loopback, alice's minimix at work, bob chatting.

Starts a private Prosody (own CA and certificate, nothing installed system-wide), creates
alice and bob, two rooms bookmarked in alice's account, runs `minimix run` for alice, and
shows from bob's side that alice's account is in both rooms, what bob says there, and every
change you make to alice's bookmarks from a real client.  Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.client import TestClient  # noqa: E402
from harness.daemon import to_toml  # noqa: E402
from harness.wait import wait_until  # noqa: E402
from servers import Account, ProsodyServer  # noqa: E402

PASSWORD = "demo"
ROOMS = ("lobby", "dev")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"{BOLD}demo:{RESET} {text}", flush=True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="minimix-demo-"))
    server = ProsodyServer(workdir / "prosody")
    daemon = None
    clients: list[TestClient] = []
    try:
        server.start()
        alice = Account(server.register("alice", PASSWORD), "alice", PASSWORD)
        bob = Account(server.register("bob", PASSWORD), "bob", PASSWORD)
        rooms = [f"{name}@{server.muc_domain}" for name in ROOMS]
        say(f"Prosody is up on {server.host}:{server.port} (accounts alice and bob, password {PASSWORD!r})")

        bob_client = TestClient(server, bob, "laptop").connect()
        clients.append(bob_client)
        for room in rooms:
            bob_client.join(room, "bob")  # creates the rooms (persistent)
        editor = TestClient(server, alice, "editor").connect(presence=False)
        clients.append(editor)
        editor.publish_bookmark(rooms[0], autojoin=True, name="Lobby")
        editor.publish_bookmark(rooms[1], autojoin=True, name="Development", nick="alice-dev")
        editor.disconnect()
        say(f"alice's bookmarks: {rooms[0]} and {rooms[1]} (autojoin)")

        config = workdir / "alice.toml"
        config.write_text(
            to_toml(
                {
                    "account": {
                        "jid": alice.jid,
                        "password": PASSWORD,
                        "host": server.host,
                        "port": server.port,
                        "ca_file": str(server.ca_file),
                    },
                    "storage": {"state_dir": str(workdir / "state")},
                }
            )
        )
        say(f"starting: minimix run --config {config}")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "minimix", "run", "--config", str(config)],
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it cleanly
        )
        for room in rooms:
            wait_until(lambda r=room: alice_in(bob_client, r), timeout=30, message=f"alice in {room}")
        show_rooms(bob_client, rooms)
        # One of alice's clients asks minimix for everything: it gets bob's words relayed.
        laptop = TestClient(server, alice, "laptop").connect()
        clients.append(laptop)
        laptop.send_message(f"{alice.jid}/minimix", "relay all")
        wait_until(lambda: any("relay for this client" in (m["body"] or "") for m in laptop.messages),
                   timeout=30, message="minimix answered the laptop")
        say("alice's laptop sent 'relay all' to minimix: it now gets every room message")
        print_howto(server, alice)
        return chat(bob_client, laptop, rooms, daemon)
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping everything…")
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(15)
            if daemon.poll() is None:
                daemon.kill()
        for c in clients:
            with contextlib.suppress(Exception):
                c.disconnect()
        server.stop()
        say(f"done (files were in {workdir})")


def alice_in(client: TestClient, room: str) -> bool:
    return any(nick.startswith("alice") for nick in client.occupants(room))


def show_rooms(bob: TestClient, rooms: list[str]) -> None:
    for room in rooms:
        nicks = ", ".join(sorted(bob.occupants(room)))
        say(f"bob sees in {room}: {nicks}")


def print_howto(server: ProsodyServer, alice: Account) -> None:
    print(
        f"""
{BOLD}Try it with a real client{RESET} (the daemon follows every bookmark change live):
  profanity:  /connect {alice.jid} server {server.host} port {server.port} tls trust
              (password {PASSWORD}), then /bookmark add room@{server.muc_domain} autojoin on
  poezio:     poezio, then /connect is not needed if ~/.config/poezio/poezio.cfg has
              jid = {alice.jid}, password = {PASSWORD}, custom_host = {server.host},
              custom_port = {server.port}, ca_cert_path = {server.ca_file}
              then /bookmark room@{server.muc_domain} (joins it and bookmarks it)
  Gajim:      account {alice.jid}, password {PASSWORD}, custom host {server.host}:{server.port},
              accept the test certificate (CA: {server.ca_file})
Add, remove or rename bookmarks there and watch the daemon's log above and bob's view below.
From that client, send "help" to {alice.jid}/minimix to try the relay commands.
{DIM}Ctrl-C stops the daemon, the clients and the server.{RESET}
""",
        flush=True,
    )


def chat(bob: TestClient, laptop: TestClient, rooms: list[str], daemon: subprocess.Popen) -> int:
    seen = {room: {nick for nick in bob.occupants(room) if nick != "bob"} for room in rooms}
    shown = len(laptop.messages)
    n = 0
    while daemon.poll() is None:
        n += 1
        for room in rooms:
            text = f"hello from bob, message {n} in {room.split('@')[0]}"
            bob.say(room, text)
            say(f"bob says in {room}: {text!r}")
        for room in list(bob.rooms):
            nicks = {nick for nick in bob.occupants(room) if nick != "bob"}
            if nicks != seen.get(room):
                say(f"bob sees in {room}: {', '.join(sorted(nicks)) or '(nobody but bob)'}")
                seen[room] = nicks
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.5)  # pacing the demo's chatter, not waiting for a condition
            for m in laptop.messages[shown:]:
                if str(m["from"]).endswith("/minimix") and m["body"]:
                    say(f"alice's laptop got from minimix: {m['body']!r}")
            shown = len(laptop.messages)
    return daemon.returncode or 0


if __name__ == "__main__":
    raise SystemExit(main())
