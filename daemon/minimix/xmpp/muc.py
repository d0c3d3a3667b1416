"""MUC (XEP-0045) at the edge: the rooms we are in, on the wire.

minimix does not use aioxmpp's MUCClient: the room machine in the core is the one state
there is (MUCClient keeps its own, rejoins on its own terms, reports a destroyed room as a
normal leave, and turns carbons on as a side effect).  The edge reads the facts off each
presence and message from a room and the core decides; :class:`Rooms` carries out what it
decided (join, leave, change nick, self-ping, …) and keeps only what the wire needs: the
nick held in each room, and which joins still await the subject that ends them.
"""

from __future__ import annotations

import asyncio
import datetime
import math

import aioxmpp
import aioxmpp.disco
import aioxmpp.errors
import aioxmpp.misc
import aioxmpp.muc.xso as muc_xso
import aioxmpp.ping
import aioxmpp.stanza
import structlog

from minimix.core import actions as A
from minimix.core.events import (
    OccupantLeft,
    OccupantPresent,
    PingOutcome,
    PostRefused,
    PresenceError,
    ReservedNickFound,
    SelfAvailable,
    SelfPingAnswered,
    SelfUnavailable,
)
from minimix.xmpp import inbound
from minimix.xmpp.compat import RoomStanza, room_stanza_of
from minimix.xmpp.events import RoomActivity
from minimix.xmpp.link import ROOM_QUERY_TIMEOUT_S, Link, asked, describe
from minimix.xmpp.xso import Reply, fitting, xml_chars

log = structlog.get_logger("minimix.xmpp")

Event = SelfAvailable | SelfUnavailable | PresenceError | OccupantPresent | OccupantLeft

SHOW_OF = {name: show for show, name in inbound.SHOW.items()}
STATUS_MAX_BYTES = 4_096  # our status, in every room we are in (mirrored from the user's client)
REFERENCE_MAX_CHARS = 4_096  # a reply's reference: an occupant JID and an archive id
# XEP-0410 §4: how to read the answer to a self-ping.
_STILL_JOINED = {"service-unavailable", "feature-not-implemented"}
_UNDECIDED = {"remote-server-not-found", "remote-server-timeout"}


def error_condition(error: aioxmpp.stanza.Error | None) -> tuple[str, str | None]:
    if error is None:
        return "undefined-condition", None
    condition = getattr(error.condition, "value", None)
    name = condition[1] if isinstance(condition, tuple) else str(error.condition)
    text = error.text if isinstance(error.text, str) else None
    return name, text


def ping_outcome(condition: str | None) -> PingOutcome:
    if condition is None or condition in _STILL_JOINED:
        return PingOutcome.JOINED
    if condition == "item-not-found":
        return PingOutcome.NICK_CHANGED
    if condition in _UNDECIDED:
        return PingOutcome.UNDECIDED
    return PingOutcome.GONE


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
                show=inbound.SHOW.get(presence.show, "available"),
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


class Rooms:
    """The rooms we are in or joining: what the core decided for them, carried out, and
    what comes from them, as events."""

    def __init__(self, link: Link, disco: aioxmpp.DiscoClient) -> None:
        self._link = link
        self._disco = disco
        # room → the nick we hold or try there; their groupchat messages come as RoomStanzas
        # (the router reads this)
        self.nicks: dict[str, str] = {}
        self._awaiting_subject: set[str] = set()  # joins whose subject (the end of the join) is due
        self._show: tuple[aioxmpp.PresenceShow, str | None] = (aioxmpp.PresenceShow.NONE, None)

    # -- what the core decided ------------------------------------------------------------

    def join(self, room: str, nick: str, password: str | None, history_since: float | None = None) -> None:
        self.nicks[room] = nick
        self._awaiting_subject.add(room)
        presence = join_presence(aioxmpp.JID.fromstr(room), nick, password, history_since)
        self._link.enqueue(self._shown(presence))

    def leave(self, room: str, nick: str, status: str | None) -> None:
        status = fitting(status, STATUS_MAX_BYTES) if status else None
        self._link.enqueue(leave_presence(aioxmpp.JID.fromstr(room), nick, status))

    def change_nick(self, room: str, nick: str) -> None:
        self._link.enqueue(self._shown(nick_presence(aioxmpp.JID.fromstr(room), nick)))

    def _shown(self, presence: aioxmpp.Presence) -> aioxmpp.Presence:
        """Our presence in rooms carries the user's show and status (mirrored)."""
        show, status = self._show
        presence.show = show
        if status:
            presence.status[None] = status
        return presence

    def mirror_presence(self, show: str, status: str | None, occupants: list[tuple[str, str]]) -> None:
        self._show = (SHOW_OF.get(show, aioxmpp.PresenceShow.NONE), fitting(status, STATUS_MAX_BYTES) if status else None)
        for room, nick in occupants:
            self._link.enqueue(self._shown(nick_presence(aioxmpp.JID.fromstr(room), nick)))

    def send_to_room(self, action: A.SendToRoom) -> None:
        room = aioxmpp.JID.fromstr(action.room)
        if action.nick:  # a private message to one occupant (XEP-0045 §7.5)
            message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=room.replace(resource=action.nick))
            message.xep0045_muc_user = muc_xso.UserExt()
        else:
            message = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=room)
        message.id_ = xml_chars(action.origin_id)
        # Not cut to STANZA_MAX_BYTES: the text came in a bigger stanza from the user's client,
        # which the server took.
        message.body[None] = xml_chars(action.text)
        message.xep0359_origin_id = aioxmpp.misc.OriginID(message.id_)
        if action.reply_to is not None and sum(map(len, action.reply_to)) <= REFERENCE_MAX_CHARS:
            message.minimix_reply = Reply(*map(xml_chars, action.reply_to))  # (a longer one is no id)
        self._link.enqueue(message)

    def self_ping(self, room: str, nick: str, timeout: float) -> None:
        link = self._link

        async def ping() -> None:
            assert link.client is not None
            target = aioxmpp.JID.fromstr(room).replace(resource=nick)
            try:
                await asyncio.wait_for(aioxmpp.ping.ping(link.client, target), timeout)
            except TimeoutError:
                link.post(SelfPingAnswered(room, PingOutcome.UNDECIDED, "timeout"))
            except aioxmpp.errors.XMPPError as exc:
                condition = exc.condition.value[1] if isinstance(exc.condition.value, tuple) else str(exc.condition)
                link.post(SelfPingAnswered(room, ping_outcome(condition), condition))
            except (ConnectionError, aioxmpp.errors.ErroneousStanza) as exc:
                link.post(SelfPingAnswered(room, PingOutcome.UNDECIDED, describe(exc)))
            else:
                link.post(SelfPingAnswered(room, PingOutcome.JOINED))

        link.spawn(ping(), f"self-ping {room}")

    def query_reserved_nick(self, room: str) -> None:
        async def query() -> None:
            nick = None
            try:
                info = await asked(
                    self._disco.query_info(aioxmpp.JID.fromstr(room), node="x-roomuser-item", require_fresh=True),
                    ROOM_QUERY_TIMEOUT_S,
                )
                for identity in info.identities:
                    if identity.category == "conference" and identity.name:
                        nick = identity.name
                        break
            except (aioxmpp.errors.XMPPError, TimeoutError):
                pass  # the room names none: the join backs off
            self._link.post(ReservedNickFound(room, nick))

        self._link.spawn(query(), f"reserved nick {room}")

    def destroy_room(self, room: str, reason: str) -> None:
        link = self._link

        async def destroy() -> None:
            assert link.client is not None
            query = muc_xso.OwnerQuery(destroy=muc_xso.DestroyRequest())
            query.destroy.reason = reason
            iq = aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=aioxmpp.JID.fromstr(room), payload=query)
            await asked(link.client.send(iq), ROOM_QUERY_TIMEOUT_S)  # none: logged (task failed)

        link.spawn(destroy(), f"destroy {room}")

    # -- what comes from the rooms ----------------------------------------------------------

    def on_presence(self, room: str, presence: aioxmpp.Presence) -> None:
        try:
            events = presence_events(presence, room, self.nicks.get(room))
        except Exception:  # a malformed presence must never break the stream
            log.warning("unreadable room presence", room=room, exc_info=True)
            return
        for event in events:
            if isinstance(event, SelfAvailable):
                self.nicks[room] = event.nick
            self._link.post(event)

    def on_message(self, room: str, message: aioxmpp.Message) -> None:
        """A message from a room we are in that came as an XSO (the router takes the
        groupchat ones it can: :meth:`take`)."""
        kind = message.type_
        if kind == aioxmpp.MessageType.GROUPCHAT:
            self.take(room_stanza_of(message, room))
        elif kind in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL) and message.from_.resource:
            self.take(room_stanza_of(message, room), private=True)
        else:
            if kind == aioxmpp.MessageType.ERROR and message.id_:  # our post's id: refused
                self._link.post(PostRefused(str(message.from_), message.id_, *error_condition(message.error)))
            self._link.post(RoomActivity(room))

    def take(self, message: RoomStanza, *, private: bool = False) -> None:
        """A room's message (a private one: from an occupant).  Before the subject that
        ends our join, a groupchat message is the history the room replays."""
        room = message.room
        if room not in self.nicks:  # left since it was read: dropped, as any message from it now
            return
        if message.has_subject and message.body is None and room in self._awaiting_subject:
            self._awaiting_subject.discard(room)  # the subject that ends our join: not news
            self._link.post(RoomActivity(room))
            return
        history = not private and room in self._awaiting_subject
        self._link.post(inbound.room_message(message, private=private, history=history))
