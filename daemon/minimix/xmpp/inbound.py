"""What arrives, as the core's events: pure functions of a stanza, or of a room's message as
the one reader read it (compat.RoomStanza).  Which function a stanza goes to, and what the
session keeps (the rooms we are in, the joins still replaying history), is the session's
and muc's; nothing here posts or keeps anything."""

from __future__ import annotations

import aioxmpp
import aioxmpp.mdr.xso  # noqa: F401 - Message.xep0184_received (XEP-0184 receipts)

from minimix.core.events import ClientPresence, ClientText, RelayReceived, RoomMessage
from minimix.xmpp.compat import RoomStanza
from minimix.xmpp.xso import NS_REPLY, strip_fallback

SHOW = {
    aioxmpp.PresenceShow.NONE: "available",
    aioxmpp.PresenceShow.CHAT: "chat",
    aioxmpp.PresenceShow.AWAY: "away",
    aioxmpp.PresenceShow.XA: "xa",
    aioxmpp.PresenceShow.DND: "dnd",
}


def subject_of(message: RoomStanza) -> str | None:
    """A message's subject change: an empty <subject/> without a body clears the subject,
    which is a change too ("")."""
    if message.has_subject and message.subject is None and message.body is None:
        return ""
    return message.subject


def room_message(message: RoomStanza, *, private: bool = False, history: bool = False) -> RoomMessage:
    """A room's message as it comes (``history``: one the room replays while we join, dated
    by the room; else said when it came, whatever <delay/> it carries).  ``ref`` is the
    stanza as text, as it is logged and forwarded, for a message with something to relay."""
    return _event(message, private=private, stamp=message.stamp if history else None, history=history)


def archived_message(message: RoomStanza, stamp: float) -> RoomMessage:
    """A message from the room's archive, archived at ``stamp`` (its text carries the
    archive's id: compat.with_archive_id)."""
    return _event(message, stamp=stamp, archived=True)


def _event(message: RoomStanza, *, private: bool = False, stamp: float | None = None, archived: bool = False,
           history: bool = False) -> RoomMessage:
    subject = subject_of(message)
    return RoomMessage(
        message.room, message.nick, message.body, subject, private=private, stanza_id=message.stanza_id,
        origin_id=message.origin_id, message_id=message.id_,
        ref=message.text if message.body is not None or subject is not None else None, stamp=stamp,
        archived=archived, history=history,
    )  # fmt: skip


def client_presence(resource: str, presence: aioxmpp.Presence) -> ClientPresence:
    """A presence of one of the user's clients."""
    available = presence.type_ == aioxmpp.PresenceType.AVAILABLE
    status = presence.status.any() if presence.status else None
    return ClientPresence(resource, available, SHOW.get(presence.show, "available"), status, presence.priority)


def client_message(resource: str, message: aioxmpp.Message) -> list[RelayReceived | ClientText]:
    """A chat message from one of the user's clients: a receipt for a relay (XEP-0184), and
    what it says (a command, a message to say in a room; a reply names what it answers,
    XEP-0461, without the quote its fallback body repeats, XEP-0428)."""
    events: list[RelayReceived | ClientText] = []
    received = message.xep0184_received
    if received is not None and received.message_id:
        events.append(RelayReceived(resource, received.message_id))
    body = message.body.any() if message.body else None
    if body is not None:
        reply = message.minimix_reply
        if reply is not None and reply.id_:
            events.append(ClientText(resource, strip_fallback(body, message, NS_REPLY), reply.id_))
        else:
            events.append(ClientText(resource, body))
    return events
