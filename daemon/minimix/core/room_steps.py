"""The room machine's handlers: what each event does to a room in each state (the table
in core.room says which handler runs, and which states it may lead to)."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.backoff import backoff_delay
from minimix.core.events import (
    JoinSlot,
    OccupantGone,
    PingOutcome,
    PresenceError,
    ReservedNickFound,
    RoomEvent,
    SelfAvailable,
    SelfPingAnswered,
    SelfUnavailable,
    TimerFired,
    TimerKind,
    Unwanted,
    Wanted,
)
from minimix.core.room_state import Ctx, Room, RoomState
from minimix.core.types import Want

# Join errors (XEP-0045 §7.2) and what we do about each.
GIVE_UP_ON_JOIN_ERROR = {
    "not-authorized": "password required or wrong",
    "registration-required": "members-only room, not a member",
    "jid-malformed": "the room refused the nick as malformed",
}
BAN_CONDITIONS = frozenset({"forbidden"})


# -- shared handler pieces --------------------------------------------------------


def _same(room: Room, event: RoomEvent, ctx: Ctx) -> RoomState:
    """Nothing to do in this state (a late or irrelevant event)."""
    return room.state


def _gone(room: Room, event: RoomEvent, ctx: Ctx) -> RoomState:
    room.want = None
    return RoomState.GONE


def _after_leave(room: Room, event: RoomEvent, ctx: Ctx) -> RoomState:
    """The room confirmed our leave (or stopped answering): rejoin if wanted again."""
    room.nick = None
    return RoomState.WAITING if room.want else RoomState.GONE


def _want_changed(room: Room, event: Wanted) -> bool:
    new = Want(event.nick, event.password)
    changed = new != room.want
    if changed:
        if room.want is None or new.nick != room.want.nick:
            room.fallback = 0
            room.reserved_nick = None
            room.reserved_asked = False
            room.regain_futile = False
        room.want = new
    return changed


def _backoff(room: Room, ctx: Ctx, reason: str, delay: float | None = None) -> RoomState:
    if delay is None:
        room.failures += 1
        p = ctx.policy
        delay = backoff_delay(
            room.failures, base=p.backoff_base_s, cap=p.backoff_cap_s, jitter=p.backoff_jitter, rng=ctx.rng
        )
    room.reason = ctx.reason = reason
    ctx.retry_in = delay
    room.retry_at = ctx.now + delay
    room.arm(TimerKind.REJOIN, room.retry_at, ctx)
    return RoomState.BACKOFF


def _give_up(room: Room, ctx: Ctx, reason: str) -> RoomState:
    room.reason = ctx.reason = reason
    return RoomState.GAVE_UP


def _send_join(room: Room, nick: str, ctx: Ctx) -> RoomState:
    assert room.want is not None
    room.nick = nick
    room.stale_join = False
    ctx.emit(A.Join(room.jid, nick, room.want.password))
    room.arm(TimerKind.JOIN_TIMEOUT, ctx.now + ctx.policy.join_timeout_s, ctx)
    return RoomState.JOINING


def _schedule_ping(room: Room, ctx: Ctx, at: float) -> None:
    room.arm(TimerKind.SELF_PING, at, ctx)


def _ping_stagger(ctx: Ctx) -> float:
    """Spread the self-pings of rooms joined together over a tenth of the idle time."""
    return ctx.rng.uniform(0.0, ctx.policy.self_ping_idle_s / 10)


def _request_nick(room: Room, nick: str, ctx: Ctx) -> None:
    """Ask the room for ``nick``.  The REGAIN timer doubles as the request's timeout."""
    room.pending_nick = nick
    ctx.emit(A.ChangeNick(room.jid, nick))
    room.arm(TimerKind.REGAIN, ctx.now + ctx.policy.nick_regain_interval_s, ctx)


def _regain_if_due(room: Room, ctx: Ctx, *, now: bool) -> None:
    """Ask for the wanted nick back: at once, or arm the regain timer if it is not armed."""
    if room.want is None or room.nick == room.want.nick or room.regain_futile:
        if room.pending_nick is None:
            room.disarm(TimerKind.REGAIN, ctx)
        return
    if room.pending_nick is not None:
        return
    if now:
        ctx.note("info", "nick regain", room=room.jid, nick=room.want.nick, current=room.nick)
        _request_nick(room, room.want.nick, ctx)
    elif TimerKind.REGAIN not in room.armed:
        room.arm(TimerKind.REGAIN, ctx.now + ctx.policy.nick_regain_interval_s, ctx)


def _sync_joined(room: Room, ctx: Ctx) -> RoomState:
    """Joined: make the room match the bookmark (password → rejoin, nick → change)."""
    assert room.want is not None
    if room.want.password != room.joined_password:
        ctx.emit(A.Leave(room.jid, room.nick or room.want.nick, "rejoining with a new password"))
        room.arm(TimerKind.LEAVE_TIMEOUT, ctx.now + ctx.policy.leave_timeout_s, ctx)
        ctx.reason = "bookmark password changed"
        return RoomState.LEAVING
    if room.nick != room.want.nick and room.pending_nick != room.want.nick:
        room.regain_futile = False
        ctx.note("info", "nick change", room=room.jid, nick=room.want.nick, current=room.nick)
        _request_nick(room, room.want.nick, ctx)
    return RoomState.JOINED


def _leave(room: Room, ctx: Ctx, status: str | None = None) -> RoomState:
    ctx.emit(A.Leave(room.jid, room.nick or (room.want.nick if room.want else ""), status))
    room.arm(TimerKind.LEAVE_TIMEOUT, ctx.now + ctx.policy.leave_timeout_s, ctx)
    return RoomState.LEAVING


def _prune_kicks(room: Room, ctx: Ctx) -> None:
    window = ctx.policy.kick_window_s
    room.kicks = tuple(t for t in room.kicks if ctx.now - t < window)


def _disconnected(room: Room, event: RoomEvent, ctx: Ctx) -> RoomState:
    room.nick = None
    ctx.reason = "session lost"
    return RoomState.WAITING


def _left_room(room: Room, ev: SelfUnavailable, ctx: Ctx) -> RoomState:
    """We are out of a room we were in (or joining), and did not ask to leave."""
    p = ctx.policy
    codes = ev.codes
    room.nick = None
    by = f" by {ev.actor}" if ev.actor else ""
    why = f": {ev.reason}" if ev.reason else ""
    if ev.destroyed:
        if ev.venue:
            ctx.emit(A.MoveBookmark(room.jid, ev.venue, f"room destroyed{why}"))
            return _give_up(room, ctx, f"room destroyed, moved to {ev.venue}{why}")
        ctx.emit(A.DisableAutojoin(room.jid, f"room destroyed{why}"))
        return _give_up(room, ctx, f"room destroyed{why}")
    if 301 in codes:
        if p.on_ban == "disable-autojoin":
            ctx.emit(A.DisableAutojoin(room.jid, f"banned{by}{why}"))
        return _give_up(room, ctx, f"banned{by}{why}")
    if 307 in codes and 333 not in codes:
        room.kicks = (*room.kicks, ctx.now)
        _prune_kicks(room, ctx)
        if not p.kick_rejoin:
            return _give_up(room, ctx, f"kicked{by}{why} (kick_rejoin is off)")
        if len(room.kicks) >= p.kick_rejoin_max:
            return _give_up(
                room, ctx, f"kicked {len(room.kicks)} times within {p.kick_window_s:.0f} s{by}{why}"
            )
        delay = backoff_delay(
            len(room.kicks),
            base=p.kick_rejoin_delay_s,
            cap=p.backoff_cap_s,
            jitter=p.backoff_jitter,
            rng=ctx.rng,
        )
        return _backoff(room, ctx, f"kicked{by}{why}", delay)
    if 321 in codes:
        return _give_up(room, ctx, f"removed by an affiliation change{by}{why}")
    if 322 in codes:
        return _give_up(room, ctx, "the room became members-only")
    if 332 in codes:
        return _backoff(room, ctx, f"the MUC service is shutting down{why}")
    if 333 in codes:
        return _backoff(room, ctx, f"removed for a technical reason{why}")
    return _backoff(room, ctx, f"left the room unexpectedly{why}")


# -- WAITING ------------------------------------------------------------------------


def waiting_slot(room: Room, ev: JoinSlot, ctx: Ctx) -> RoomState:
    room.fallback = 0
    assert room.want is not None
    return _send_join(room, room.reserved_nick or room.want.nick, ctx)


def waiting_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    _want_changed(room, ev)
    return RoomState.WAITING


def any_self_available_accept(room: Room, ev: SelfAvailable, ctx: Ctx) -> RoomState:
    """The room says we are in (a late answer to a join we had given up waiting for)."""
    if room.want is None:
        room.nick = ev.nick
        return _leave(room, ctx)
    room.disarm(TimerKind.REJOIN, ctx)
    return joining_self_available(room, ev, ctx)


# -- JOINING ------------------------------------------------------------------------


def joining_self_available(room: Room, ev: SelfAvailable, ctx: Ctx) -> RoomState:
    assert room.want is not None
    requested = room.nick
    room.nick = ev.nick
    room.failures = 0
    room.joined_password = room.want.password
    room.last_activity = ctx.now
    room.disarm(TimerKind.JOIN_TIMEOUT, ctx)
    if 201 in ev.codes and not ctx.policy.allow_create:
        ctx.emit(A.DestroyRoom(room.jid, "created by mistake: minimix does not create rooms"))
        ctx.emit(A.DisableAutojoin(room.jid, "the room does not exist"))
        return _give_up(room, ctx, "the room did not exist (our join created it; destroyed it again)")
    if 210 in ev.codes and requested is not None and ev.nick != requested:
        ctx.note("info", "nick assigned by the room", room=room.jid, nick=ev.nick, requested=requested)
    _schedule_ping(room, ctx, ctx.now + ctx.policy.self_ping_idle_s + _ping_stagger(ctx))
    if room.stale_join:
        room.stale_join = False
        return _sync_joined(room, ctx)
    _regain_if_due(room, ctx, now=False)
    return RoomState.JOINED


def joining_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    if _want_changed(room, ev):
        room.stale_join = True  # settle it when the join is answered
    return RoomState.JOINING


def joining_unwanted(room: Room, ev: Unwanted, ctx: Ctx) -> RoomState:
    room.want = None
    ctx.reason = ev.reason
    return _leave(room, ctx, ev.status)


def joining_error(room: Room, ev: PresenceError, ctx: Ctx) -> RoomState:
    assert room.want is not None
    p = ctx.policy
    cond = ev.condition
    detail = f"{cond}: {ev.text}" if ev.text else cond
    if room.stale_join:
        ctx.reason = f"join refused ({detail}); the bookmark changed meanwhile"
        return RoomState.WAITING
    if cond == "conflict":
        if room.fallback < p.nick_fallback_max:
            room.fallback += 1
            base = room.reserved_nick or room.want.nick
            nick = base + p.nick_fallback_suffix * room.fallback
            ctx.note("info", "nick in use", room=room.jid, nick=room.nick, fallback=nick)
            return _send_join(room, nick, ctx)
        return _backoff(room, ctx, f"nick {room.want.nick!r} and {p.nick_fallback_max} fallbacks in use")
    if cond == "not-acceptable" and not room.reserved_asked:
        room.reserved_asked = True
        ctx.emit(A.QueryReservedNick(room.jid))
        ctx.note("info", "nick not acceptable, asking for the reserved nick", room=room.jid)
        return RoomState.JOINING
    if cond in BAN_CONDITIONS:
        if p.on_ban == "disable-autojoin":
            ctx.emit(A.DisableAutojoin(room.jid, f"join forbidden ({detail})"))
        return _give_up(room, ctx, f"banned: join forbidden ({detail})")
    if cond == "gone":  # XEP-0045 §10.9: the room was destroyed
        ctx.emit(A.DisableAutojoin(room.jid, f"the room is gone ({detail})"))
        return _give_up(room, ctx, f"the room is gone: destroyed ({detail})")
    if cond in GIVE_UP_ON_JOIN_ERROR:
        return _give_up(room, ctx, f"{GIVE_UP_ON_JOIN_ERROR[cond]} ({detail})")
    return _backoff(room, ctx, f"join failed ({detail})")


def joining_self_unavailable(room: Room, ev: SelfUnavailable, ctx: Ctx) -> RoomState:
    if 303 in ev.codes:
        return RoomState.JOINING  # a resync turned into a nick change: the new nick follows
    return _left_room(room, ev, ctx)


def joining_timer(room: Room, ev: TimerFired, ctx: Ctx) -> RoomState:
    if ev.kind is TimerKind.JOIN_TIMEOUT:
        return _backoff(room, ctx, "the room did not answer the join")
    return room.state


def joining_reserved(room: Room, ev: ReservedNickFound, ctx: Ctx) -> RoomState:
    if ev.nick:
        room.reserved_nick = ev.nick
        room.fallback = 0
        return _send_join(room, ev.nick, ctx)
    return _backoff(room, ctx, "nick not acceptable, and the room names no reserved nick")


# -- JOINED -------------------------------------------------------------------------


def joined_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    if not _want_changed(room, ev):
        return RoomState.JOINED
    return _sync_joined(room, ctx)


def joined_unwanted(room: Room, ev: Unwanted, ctx: Ctx) -> RoomState:
    room.want = None
    ctx.reason = ev.reason
    return _leave(room, ctx, ev.status)


def joined_self_available(room: Room, ev: SelfAvailable, ctx: Ctx) -> RoomState:
    old = room.nick
    if ev.nick != old:
        room.nick = ev.nick
        ctx.note("info", "nick changed", room=room.jid, nick=ev.nick, previous=old)
    if room.pending_nick is not None and ev.nick != old:
        if ev.nick != room.pending_nick:
            room.regain_futile = True  # the service gave us another nick than we asked for
        room.pending_nick = None
    elif room.pending_nick == ev.nick:
        room.pending_nick = None  # the 303 told us already
    _regain_if_due(room, ctx, now=False)
    return RoomState.JOINED


def joined_self_unavailable(room: Room, ev: SelfUnavailable, ctx: Ctx) -> RoomState:
    if 303 in ev.codes and ev.new_nick:
        # Our nick changes (our request or the service's doing); the available presence
        # from the new nick follows and settles the pending request.
        room.nick = ev.new_nick
        ctx.note("info", "nick changed", room=room.jid, nick=ev.new_nick, previous=ev.nick)
        return RoomState.JOINED
    return _left_room(room, ev, ctx)


def joined_error(room: Room, ev: PresenceError, ctx: Ctx) -> RoomState:
    if room.pending_nick is not None:
        ctx.note(
            "info", "nick change refused", room=room.jid, nick=room.pending_nick, condition=ev.condition
        )
        room.pending_nick = None
        if ev.condition != "conflict":
            room.regain_futile = True  # not-acceptable, not-allowed…: asking again will not help
        _regain_if_due(room, ctx, now=False)
    return RoomState.JOINED


def joined_occupant_gone(room: Room, ev: OccupantGone, ctx: Ctx) -> RoomState:
    if room.want is not None and ev.nick == room.want.nick and room.nick != ev.nick:
        room.regain_futile = False
        _regain_if_due(room, ctx, now=True)
    return RoomState.JOINED


def joined_timer(room: Room, ev: TimerFired, ctx: Ctx) -> RoomState:
    p = ctx.policy
    if ev.kind is TimerKind.REGAIN:
        if room.pending_nick is not None:
            # A whole interval without an answer: the service ignores the request.
            ctx.note("info", "nick change unanswered", room=room.jid, nick=room.pending_nick)
            room.pending_nick = None
            room.regain_futile = True
        _regain_if_due(room, ctx, now=True)
    elif ev.kind is TimerKind.SELF_PING:
        quiet_since = ctx.now - room.last_activity
        if room.ping_in_flight:
            pass
        elif room.pending_nick is not None:
            # XEP-0410 §6: never ping while a nick change is pending.
            _schedule_ping(room, ctx, ctx.now + p.self_ping_retry_s)
        elif quiet_since < p.self_ping_idle_s:
            _schedule_ping(room, ctx, room.last_activity + p.self_ping_idle_s + _ping_stagger(ctx))
        else:
            room.ping_in_flight = True
            assert room.nick is not None
            ctx.emit(A.SelfPing(room.jid, room.nick))
    return RoomState.JOINED


def joined_ping_answered(room: Room, ev: SelfPingAnswered, ctx: Ctx) -> RoomState:
    p = ctx.policy
    room.ping_in_flight = False
    if ev.outcome is PingOutcome.JOINED:
        room.last_activity = ctx.now
        _schedule_ping(room, ctx, ctx.now + p.self_ping_idle_s)
        return RoomState.JOINED
    if ev.outcome is PingOutcome.UNDECIDED:
        _schedule_ping(room, ctx, ctx.now + p.self_ping_retry_s)
        return RoomState.JOINED
    ctx.reason = "self-ping: " + (
        "no longer in the room" if ev.outcome is PingOutcome.GONE else "not under our nick any more"
    )
    if ev.detail:
        ctx.reason += f" ({ev.detail})"
    room.nick = None
    return RoomState.WAITING


# -- LEAVING ------------------------------------------------------------------------


def leaving_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    _want_changed(room, ev)
    return RoomState.LEAVING


def leaving_unwanted(room: Room, ev: Unwanted, ctx: Ctx) -> RoomState:
    room.want = None
    return RoomState.LEAVING


def leaving_self_unavailable(room: Room, ev: SelfUnavailable, ctx: Ctx) -> RoomState:
    if 303 in ev.codes:
        return RoomState.LEAVING
    return _after_leave(room, ev, ctx)


def leaving_timer(room: Room, ev: TimerFired, ctx: Ctx) -> RoomState:
    if ev.kind is TimerKind.LEAVE_TIMEOUT:
        return _after_leave(room, ev, ctx)
    return RoomState.LEAVING


# -- BACKOFF ------------------------------------------------------------------------


def backoff_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    if _want_changed(room, ev):
        room.failures = 0
        ctx.reason = "bookmark changed"
        return RoomState.WAITING
    return RoomState.BACKOFF


def backoff_timer(room: Room, ev: TimerFired, ctx: Ctx) -> RoomState:
    if ev.kind is TimerKind.REJOIN:
        return RoomState.WAITING
    return RoomState.BACKOFF


# -- GAVE_UP ------------------------------------------------------------------------


def gave_up_wanted(room: Room, ev: Wanted, ctx: Ctx) -> RoomState:
    if _want_changed(room, ev):
        room.failures = 0
        room.kicks = ()
        ctx.reason = "bookmark changed"
        return RoomState.WAITING
    return RoomState.GAVE_UP


def gave_up_self_available(room: Room, ev: SelfAvailable, ctx: Ctx) -> RoomState:
    """A late join answer after we gave up: leave again, stay given up."""
    ctx.emit(A.Leave(room.jid, ev.nick, None))
    return RoomState.GAVE_UP
