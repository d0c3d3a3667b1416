"""The join presence the MUC edge builds (daemon/minimix/xmpp/muc.py), without a server."""

from __future__ import annotations

import aioxmpp

from minimix.xmpp import muc

ROOM = aioxmpp.JID.fromstr("nomam@muc.example")


def test_a_room_without_archive_is_asked_for_its_history_since_the_cursors_whole_second():
    """Prosody keeps a room's history in whole seconds and 13 compares our fraction with
    them: what was said after the cursor, in its second, never came (test_catchup's room
    without archive, 4 runs in 8 on Prosody 13)."""
    history = muc.join_presence(ROOM, "me", None, 1796618677.9).xep0045_muc.history
    assert history.since.timestamp() == 1796618677 and history.maxstanzas is None


def test_a_room_with_an_archive_is_asked_for_no_history():
    assert muc.join_presence(ROOM, "me", None).xep0045_muc.history.maxstanzas == 0
