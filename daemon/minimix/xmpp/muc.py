"""MUC (XEP-0045) at the edge: presences from rooms → core events; actions → stanzas.

minimix does not use aioxmpp's MUCClient: the room machine in the core is the
one state there is (MUCClient keeps its own, rejoins on its own terms, reports a
destroyed room as a normal leave, and turns carbons on as a side effect).  The
edge reads the facts off each presence and the core decides.
"""

from __future__ import annotations

import datetime
import math

import aioxmpp
import aioxmpp.muc.xso as muc_xso
import aioxmpp.stanza

from minimix.core.events import (
    OccupantLeft,
    OccupantPresent,
    PresenceError,
    SelfAvailable,
    SelfUnavailable,
)

SHOW = {
    aioxmpp.PresenceShow.NONE: "available",
    aioxmpp.PresenceShow.CHAT: "chat",
    aioxmpp.PresenceShow.AWAY: "away",
    aioxmpp.PresenceShow.XA: "xa",
    aioxmpp.PresenceShow.DND: "dnd",
}

Event = SelfAvailable | SelfUnavailable | PresenceError | OccupantPresent | OccupantLeft


def error_condition(error: aioxmpp.stanza.Error | None) -> tuple[str, str | None]:
    if error is None:
        return "undefined-condition", None
    condition = getattr(error.condition, "value", None)
    name = condition[1] if isinstance(condition, tuple) else str(error.condition)
    text = error.text if isinstance(error.text, str) else None
    return name, text


def presence_events(presence: aioxmpp.Presence, room: str, own_nick: str | None) -> list[Event]:
    """What a presence from ``room/nick`` tells.

    ``own_nick`` is the nick we hold or are trying.  Our own presence carries status
    110; ejabberd sends the destroy notice without it, so a destroy from our own
    nick counts as ours too.  Presences from the bare room JID (ejabberd) say
    nothing about occupants and are ignored.
    """
    nick = presence.from_.resource
    if not nick:
        return []
    if presence.type_ == aioxmpp.PresenceType.ERROR:
        condition, text = error_condition(presence.error)
        return [PresenceError(room, nick, condition, text)]
    user = presence.xep0045_muc_user
    codes = frozenset(int(c) for c in user.status_codes) if user is not None else frozenset()
    item = user.items[0] if user is not None and user.items else None
    destroy = user.destroy if user is not None else None
    is_self = 110 in codes or (destroy is not None and nick == own_nick)
    available = presence.type_ == aioxmpp.PresenceType.AVAILABLE
    events: list[Event] = []
    if available:
        events.append(
            OccupantPresent(
                room,
                nick,
                jid=str(item.jid) if item is not None and item.jid is not None else None,
                role=item.role if item is not None else None,
                affiliation=item.affiliation if item is not None else None,
                show=SHOW.get(presence.show, "available"),
            )
        )
        if is_self:
            events.append(SelfAvailable(room, nick, codes))
        return events
    if presence.type_ != aioxmpp.PresenceType.UNAVAILABLE:
        return []
    new_nick = item.nick if item is not None and 303 in codes else None
    events.append(OccupantLeft(room, nick, new_nick))
    if is_self:
        actor = item.actor if item is not None else None
        events.append(
            SelfUnavailable(
                room,
                nick,
                codes,
                reason=(item.reason if item is not None else None) or (destroy.reason if destroy else None),
                actor=(actor.nick or (str(actor.jid) if actor.jid else None)) if actor is not None else None,
                new_nick=new_nick,
                destroyed=destroy is not None,
                venue=str(destroy.jid) if destroy is not None and destroy.jid is not None else None,
            )
        )
    return events


def join_presence(
    room: aioxmpp.JID, nick: str, password: str | None, history_since: float | None = None
) -> aioxmpp.Presence:
    """XEP-0045 §7.2: no history — minimix catches up from the room's archive (MAM) — except
    in a room without an archive, which is asked for its history since ``history_since``.

    Since the start of that second: Prosody keeps a room's history in whole seconds, and 13
    compares our fraction with them, so what was said in the cursor's second after it was
    left out (0.12 dropped the fraction).  What comes again from before it is de-duplicated."""
    presence = aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE, to=room.replace(resource=nick))
    ext = muc_xso.GenericExt()
    if history_since is None:
        ext.history = muc_xso.History(maxstanzas=0)
    else:
        since = datetime.datetime.fromtimestamp(math.floor(history_since), datetime.UTC)
        ext.history = muc_xso.History(since=since)
    if password:
        ext.password = password
    presence.xep0045_muc = ext
    return presence


def leave_presence(room: aioxmpp.JID, nick: str, status: str | None) -> aioxmpp.Presence:
    presence = aioxmpp.Presence(type_=aioxmpp.PresenceType.UNAVAILABLE, to=room.replace(resource=nick))
    if status:
        presence.status[None] = status
    return presence


def nick_presence(room: aioxmpp.JID, nick: str) -> aioxmpp.Presence:
    """XEP-0045 §7.6: a nick change is an available presence to the new occupant JID."""
    return aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE, to=room.replace(resource=nick))
