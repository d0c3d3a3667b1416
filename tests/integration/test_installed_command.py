"""The `minimix` command as a user installed it — the console script, not `python -m
minimix` — checks its config, runs, relays and stops cleanly.

MINIMIX_COMMAND names the command; by default the one beside this Python (`make install`'s
.venv/bin/minimix). .ci/py313 points it at the one that the README's install commands put
in a fresh virtualenv of Debian 13's python3 (Python 3.13), and runs this against Prosody 13.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMAND = os.environ.get("MINIMIX_COMMAND") or str(Path(sys.executable).with_name("minimix"))


def test_the_installed_command_checks_the_config_joins_relays_and_stops_cleanly(user):
    room = user.room()
    user.phone.publish_bookmark(room, nick="Ally")

    check = user.start(argv=[COMMAND, "check-config", "--config", "{config}"])
    assert check.wait() == 0, check.tail()
    assert user.account.jid in check.output() and user.account.password not in check.output()

    d = user.start(argv=[COMMAND, "run", "--config", "{config}"])
    user.wait_joined(room, "Ally")
    laptop = user.other("laptop")
    assert user.command(laptop, "relay all") == "relay for this client: all (default)"
    user.bob.say(room, "hello from bob")
    user.wait_relay(laptop, "hello from bob")

    assert d.stop() == 0, d.tail()  # SIGTERM: leaves its rooms and exits 0
    user.wait_left(room)
