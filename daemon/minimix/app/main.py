"""The composition root: one task owns all state.

Readers (the XMPP session), apscheduler jobs and signal handlers only *post* events to one
queue; :meth:`App.run` drains it, feeds the core (:class:`~minimix.core.engine.Engine`) and
has the actions it returns carried out (:class:`~minimix.app.effects.Effects`).  No locks,
no races: soju's per-user event loop is the model.  The app decides nothing: what to do is
the core's, how is the edge's and the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import sqlite3
import time

import structlog

from minimix import logging as minimix_logging
from minimix import statedir
from minimix.app.effects import Effects
from minimix.app.events import PruneDue, Reload, ResyncDue, Shutdown, SnapshotDue, Wake, WatchdogDue
from minimix.app.status import Status
from minimix.config import Config, ConfigError, RoomsConfig, load_config
from minimix.core.backoff import backoff_delay
from minimix.core.engine import EVENTS as ENGINE_EVENTS
from minimix.core.engine import Engine
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ExpiryDue,
    RelayBounced,
    RelayReceived,
    RelaysAcked,
    RoomMessage,
    SessionEstablished,
    SessionLost,
)
from minimix.core.ledger import Ledger
from minimix.core.ledger_records import reached_server
from minimix.core.policy import RoomPolicy
from minimix.core.room import RoomState
from minimix.sdnotify import Notifier
from minimix.store import ACK_MARK_FILENAME, AckMark, Store, StoreError, store_error
from minimix.store import FILENAME as STORE_FILENAME
from minimix.timers import Jobs, TimersDue
from minimix.xmpp.account import Account
from minimix.xmpp.bookmarks import address_check
from minimix.xmpp.events import (
    BookmarkPush,
    CapsQueried,
    ClientStopped,
    ConnectFailed,
    LoginFailed,
    RoomActivity,
    StreamResumed,
    StreamSuspended,
)
from minimix.xmpp.session import Session

log = structlog.get_logger("minimix")

EX_OK, EX_SOFTWARE, EX_NOPERM = os.EX_OK, os.EX_SOFTWARE, os.EX_NOPERM
EX_IOERR = os.EX_IOERR  # 74: the store failed for a cause that may pass (systemd restarts the daemon)
EX_TEMPFAIL = os.EX_TEMPFAIL  # 75: another minimix runs with this state dir
EX_CONFIG = os.EX_CONFIG  # 78: ... and when someone must act first (the log says what)
SHUTDOWN_GRACE_S = 5.0
DISPATCH_BATCH = 256  # queued events handled between two awaits (one store commit)
# ... and at most this many room messages among them (a page of an archive is up to 50):
# a batch is handled in one go, and meanwhile nothing else runs, so the archive queries
# that the catch-ups have ready do not go out and the server waits (seen: it idled 20 %
# of a 20-room catch-up while the daemon handled a dozen pages at once).
DISPATCH_MESSAGES = 64
# After our caps answer (the server subscribes us once it has it): re-fetch the bookmarks
# to catch a change made in between.  Not at once: a first start is busy joining rooms, and
# the re-fetch only matters for a change made in that first moment.
CAPS_REFETCH_DELAY_S = 1.0
# events that change nothing `status` shows
QUIET_EVENTS = (RoomActivity, RoomMessage, RelaysAcked, RelayReceived, WatchdogDue, SnapshotDue, PruneDue, Wake)
SNAPSHOT_DELAY_S = 0.5
PRUNE_INTERVAL_S = 3600.0


def _messages_in(event: object) -> int:
    return len(event.messages) if isinstance(event, CatchUpPage | CatchUpDone) else 1


# Fields of the room policy that are not keys of [rooms] (how long a leave may take to be
# confirmed is no one's business but the daemon's).
NOT_CONFIGURED = frozenset({"leave_timeout_s"})


def room_policy(rooms: RoomsConfig) -> RoomPolicy:
    """The ``[rooms]`` section as the core's room policy: every other field of the policy is
    the key of the same name (a key renamed on one side only fails here, at start, and in
    a test: never a setting silently dropped)."""
    return RoomPolicy(**{f.name: getattr(rooms, f.name) for f in dataclasses.fields(RoomPolicy)
                         if f.name not in NOT_CONFIGURED})


def default_nick(config: Config, account: Account) -> str:
    return config.rooms.default_nick or account.localpart or "minimix"


class App:
    def __init__(self, config: Config, password: str, *, notifier: Notifier | None = None) -> None:
        self.config = config
        acc = config.account
        try:
            self.account = Account.of(acc.jid, acc.resource, password, host=acc.host, port=acc.port or 5222,
                                      ca_file=str(acc.ca_file) if acc.ca_file else None)
        except ValueError as exc:  # stringprep: what the file's own check cannot tell
            raise ConfigError(f"{config.path}: [account]: jid / resource: not a valid JID: {exc}") from None
        self.rng = random.Random()
        self.engine = Engine(
            default_nick=default_nick(config, self.account),
            policy=room_policy(config.rooms),
            rng=self.rng,
            relay_globs=config.relay.clients,
            offline_status=config.presence.offline_status,
            catchup_max=config.relay.catchup_max,
            playback_max=config.relay.playback_max,
            offline_mentions=config.relay.offline_mentions,
            address_check=address_check,
        )
        self.store: Store | None = None
        self.ack_mark: AckMark | None = None
        self.notifier = notifier or Notifier()
        self.status = Status(self.notifier, self.engine, self.account.address, config.storage.state_dir)
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.session: Session | None = None
        self.effects: Effects | None = None
        self.jobs: Jobs | None = None
        self.exit_code: int | None = None
        self.stopping = False
        self._snapshot_pending = False
        self._idle = False  # the loop's task is parked, waiting for an event (see handle_now)
        self._lock: int | None = None  # the state dir's lock (statedir.lock)
        self._exit = os._exit  # ends the process at once, nothing more sent (tests replace it)

    # -- wiring --------------------------------------------------------------------------

    def post(self, event: object) -> None:
        self.queue.put_nowait(event)

    def handle_now(self) -> None:
        """Handle what is queued now, in the caller's turn, if the loop's task is idle.

        The session calls this once the stanzas it received in one go are events.  They
        are handled exactly as the loop's next turn would handle them (in order, one store
        commit), and what they send goes out at once: a relay leaves a loop turn sooner.
        Never two at a time: the loop's task is parked waiting for an event, and is not
        idle meanwhile; were it busy, the events would wait for it as before.
        """
        if not self._idle or self.queue.empty():
            return
        self._idle = False
        try:
            self._handle(self._queued([]))
        finally:
            self._idle = True
        if self.stopping or self.exit_code is not None:
            self.post(Wake())  # the loop's task decides what now

    def _reconnect_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=1.0, cap=self.config.rooms.reconnect_max_delay_s, jitter=0.5, rng=self.rng)

    async def run(self) -> int:
        """Run until stopped; the exit code.  A start that finds another daemon on the state
        dir, or a store it cannot use, ends here with the reason (and touches nothing)."""
        loop = asyncio.get_running_loop()
        os.umask(0o077)  # what the daemon writes holds other people's messages and room passwords
        try:
            self._prepare_state_dir()
        except statedir.AlreadyRunning as exc:
            log.error("another minimix is running with this state dir", pid=exc.pid, state_dir=str(exc.state_dir))
            self.notifier.status(str(exc))
            return EX_TEMPFAIL
        except StoreError as exc:
            return self._store_failed(exc)
        assert self.store is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.post, Shutdown(sig.name))
        loop.add_signal_handler(signal.SIGHUP, self.post, Reload())
        self.jobs = jobs = Jobs(loop, self.post)
        jobs.start()
        resync = self.config.bookmarks.resync_interval_s
        jobs.every("bookmark-resync", resync, ResyncDue("periodic"), jitter=resync / 10)
        if (interval := self.notifier.watchdog_interval()) is not None:
            jobs.every("watchdog", interval, WatchdogDue())
        self.session = Session(
            self.account,
            self.post,
            reconnect_delay=self._reconnect_delay,
            rooms=lambda: sorted({*self.engine.effective, *self.engine.rooms.rooms}),
            ack_mark=self.ack_mark.write if self.ack_mark is not None else None,
            on_received=self.handle_now,
        )
        self.effects = Effects(self.session, self.store, jobs.timers, self._feed)
        # At start too: a daemon restarted within the hour would never prune.
        jobs.every("prune", PRUNE_INTERVAL_S, PruneDue(), now=True)
        log.info("starting", jid=self.account.address, server=self.account.server)
        try:
            await self._restore()
        except (StoreError, sqlite3.Error) as exc:
            self._exit(self._store_failed(store_error(exc, f"cannot read the store {self.store.path}")))
        self.session.start()
        self.notifier.ready()
        self.status.update()
        try:
            await self._loop()
        finally:
            jobs.shutdown()
            await self.session.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            try:
                self.store.close()
            except StoreError as exc:  # its last group stays in the journal
                self.exit_code = self._store_failed(exc)
            if self.ack_mark is not None:
                self.ack_mark.close()
        self.status.snapshot(stopped=True)
        log.info("stopped", exit_code=self.exit_code)
        return self.exit_code if self.exit_code is not None else EX_OK

    def _prepare_state_dir(self) -> None:
        """Make the state dir (private), take its lock and open the store.  Raises
        ConfigError, AlreadyRunning or StoreError."""
        state_dir = self.config.storage.state_dir
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path, mode in statedir.make_private(state_dir):
                log.warning("was readable by others: made private", path=str(path), mode=f"{mode:o}")
            self._lock = statedir.lock(state_dir)  # before the store and the network; held until the exit
        except OSError as exc:
            raise ConfigError(
                f"{self.config.path}: [storage]: state_dir: cannot use {state_dir}: {exc.strerror or exc}"
            ) from None

        def moved_aside(reason: str, moved: object) -> None:
            log.error("the store was unreadable (corrupt): moved aside with its WAL and journal, starting a fresh one",
                      reason=reason, moved_to=str(moved))

        self.store = store = Store(state_dir / STORE_FILENAME, on_reset=moved_aside)
        if store.replayed:
            log.info("the store's journal replayed: writes of the last run it had not committed", groups=store.replayed)
        self.ack_mark = AckMark(state_dir / ACK_MARK_FILENAME)

    def _store_failed(self, error: StoreError) -> int:
        """Say that the store cannot be used, and why, in the log and in systemd's status;
        the exit code: 74 when the cause may pass (systemd starts the daemon again after a
        delay, and the start replays the journal), 78 when someone must act first."""
        code = EX_IOERR if error.transient else EX_CONFIG
        log.critical("the store cannot be used: stopping; nothing was moved or deleted", error=str(error),
                     exit_code=code)
        self.notifier.status(f"stopped: the store cannot be used: {error}")
        return code

    async def _restore(self) -> None:
        """The engine takes the state kept in the store.  First, relays in flight when the
        last run ended (a crash): did they reach the server?  The ledger settles them
        (Ledger.settle) by the server's count of the old XEP-0198 session's stanzas, which
        only the server can say: those it had are delivered, the others owed again (a
        possible duplicate rather than a loss).

        The question must quote the count of received stanzas we last acknowledged (Prosody
        does not answer one below it): the ack mark has it, the count saved with the relays
        may be older.
        """
        assert self.store is not None and self.session is not None
        store = self.store
        state = store.load()
        if state.flights:
            previous = store.sm_session()
            mark = self.ack_mark.read() if self.ack_mark is not None else None
            if previous is not None and mark is not None and mark[0] == previous[0]:
                previous = mark  # what we acknowledged last: more recent than the relays' count
            handled = None
            if previous is not None and Ledger.needs_count(state):
                handled = await self.session.probe_previous_session(*previous)
            with store.grouped():  # all or nothing: killed meanwhile, the next start asks again
                store.apply(Ledger.settle(state, previous, handled))
                store.forget_sm_session()
            reached = sum(1 for f in state.flights.values() if reached_server(f, previous, handled))
            log.info("relays in flight at the last stop", reached_server=reached,
                     owed_again=len(state.flights) - reached, server_count=handled)
            state = store.load()
        marks = self.engine.restore(state, rooms=store.room_states(), settings=store.load_clients(),
                                    now=time.time(), gaps=store.room_gaps())
        with store.grouped():
            store.apply(marks)

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        deadline: float | None = None
        while self.exit_code is None:
            if self.stopping:
                if deadline is None:
                    deadline = time.monotonic() + SHUTDOWN_GRACE_S
                if not self.engine.rooms.busy or not (self.session and self.session.online):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("leaving rooms took too long; disconnecting anyway")
                    break
                try:
                    event = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    continue
            else:
                self._idle = True
                try:
                    event = await self.queue.get()
                finally:
                    self._idle = False
            self._handle(self._queued([event]))
        if self.stopping and self.exit_code is None:
            if self.session is not None:
                await self.session.drain(2.0)
            while not self.queue.empty():  # acks and receipts of the last relays: settle them
                event = self.queue.get_nowait()
                if isinstance(event, RelaysAcked | RelayReceived | RelayBounced):
                    self._dispatch(event)
            self.exit_code = EX_OK

    def _queued(self, events: list[object]) -> list[object]:
        messages = sum(map(_messages_in, events))
        while len(events) < DISPATCH_BATCH and messages < DISPATCH_MESSAGES and not self.queue.empty():
            event = self.queue.get_nowait()
            events.append(event)
            messages += _messages_in(event)
        return events

    def _handle(self, events: list[object]) -> None:
        """Events handled in one go.  Their store writes are on record (the store's journal)
        once, at the end, and only then does what they queued for the server go out; the
        store commits them to SQLite after that, off the relays' path."""
        store = self.store
        try:
            with store.grouped(journaled=True) if store is not None else contextlib.nullcontext():
                for event in events:
                    try:
                        self._dispatch(event)
                    except sqlite3.Error as exc:  # not a bug: the store cannot record the batch
                        raise store_error(exc, f"while handling {type(event).__name__}") from None
                    except Exception:  # a bug must cost one event, never the daemon
                        log.exception("internal error while handling an event", event=type(event).__name__)
            if self.session is not None:
                self.session.send_now()
            if store is not None:
                store.commit()
        except StoreError as exc:
            # What the batch queued for the server must not go out unless the journal has
            # it, and nothing after may: end now, as a SIGKILL would (which loses nothing).
            self._exit(self._store_failed(exc))
            return
        if store is not None and store.journal_error is not None:
            log.warning("the store's journal cannot be written: committing before each send instead",
                        error=store.journal_error)
            store.journal_error = None
        self.status.update(stopping=self.stopping)
        if any(not isinstance(e, QUIET_EVENTS) for e in events) and not self._snapshot_pending:
            self._snapshot_pending = True
            self.jobs.once("status-snapshot", SNAPSHOT_DELAY_S, SnapshotDue())

    def _feed(self, event: object) -> None:
        """An event for the core now, its actions carried out at once (same batch)."""
        assert self.effects is not None
        self.effects.run(self.engine.handle(event, time.time()))  # type: ignore[arg-type]

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        now = time.time()
        if isinstance(event, RoomActivity):
            self.engine.rooms.touch(event.room, now)
            return
        if isinstance(event, SessionEstablished):
            self.status.connection = "connected"
        elif isinstance(event, SessionLost):
            self.status.connection = "connection lost; reconnecting"
        if isinstance(event, ENGINE_EVENTS):
            self._feed(event)
            return
        assert self.effects is not None
        match event:
            case Shutdown(sig):
                if self.stopping:
                    log.warning("second signal: exiting now", signal=sig)
                    self.exit_code = EX_OK
                    return
                log.info("shutting down", signal=sig, rooms=self.engine.rooms.count(RoomState.JOINED))
                self.stopping = True
                self.notifier.stopping()
                self.effects.run(self.engine.stop(now))
            case Reload():
                self._reload()
            case ResyncDue(reason):
                if self.session is not None and self.session.online and not self.stopping:
                    log.debug("bookmark resync", reason=reason)
                    self.session.bookmarks.fetch()
            case BookmarkPush(complete):
                self._poll_bookmarks(not complete)
            case CapsQueried():
                self.jobs.once("caps-refetch", CAPS_REFETCH_DELAY_S, ResyncDue("caps queried"))
            case WatchdogDue():
                self.notifier.watchdog()
            case TimersDue():
                for due in self.effects.timers.due(now):
                    self._dispatch(due)
            case PruneDue():
                assert self.store is not None
                days = self.config.storage.retention_days
                if pruned := self.store.prune(now - days * 86400):
                    log.info("pruned old messages", messages=pruned, older_than_days=days)
                self._feed(ExpiryDue(days * 86400))
            case SnapshotDue():
                self._snapshot_pending = False
                self.status.snapshot()
            case Wake():
                pass
            case ConnectFailed(error, retry_in):
                self.status.connection = f"cannot reach the server ({error}); retrying in {retry_in:.0f} s"
                log.warning("connection failed", server=self.account.server, error=error, retry_in=round(retry_in, 1))
            case StreamSuspended(error):
                self.status.connection = "connection lost; reconnecting"
                log.warning("connection lost", error=error)
            case StreamResumed():
                self.status.connection = "connected"
                log.info("session resumed (XEP-0198): rooms stay joined")
            case LoginFailed(error):
                log.error("login failed: the server refused the credentials", account=self.account.bare, error=error)
                self.status.connection = "login failed"
                self.exit_code = EX_NOPERM
            case ClientStopped(error):
                if not self.stopping:
                    log.error("XMPP client stopped unexpectedly", error=error)
                    self.exit_code = EX_SOFTWARE
            case _:
                # the name only: an event's fields may be someone's message
                log.warning("unknown event", event=type(event).__name__)

    def _poll_bookmarks(self, on: bool) -> None:
        """Poll where the server does not push every change (no retracts, legacy store).

        Re-fetch-and-diff rather than a full-JID pubsub subscription (which would also
        deliver retracts on ejabberd): a subscription persists on the server across
        sessions, doubles every publish notification, and does nothing for the legacy
        private-XML store, which has no notifications at all.
        """
        assert self.jobs is not None
        if on and "bookmark-poll" not in self.jobs:
            interval = float(self.config.bookmarks.poll_interval_s)
            log.info("server does not push every bookmark change: polling", interval_s=interval)
            self.jobs.every("bookmark-poll", interval, ResyncDue("poll"))
        elif not on:
            self.jobs.cancel("bookmark-poll")

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload failed; keeping the running configuration", error=str(exc))
        else:
            later = [name for name in ("account", "storage", "bookmarks") if getattr(config, name) !=
                     getattr(self.config, name)]
            if later:
                log.warning("these settings take effect at the next restart", sections=",".join(later))
            self.config = config
            minimix_logging.set_level(config.logging.level, config.logging.log_messages)
            self.engine.rooms.policy = room_policy(config.rooms)
            self.engine.default_nick = default_nick(config, self.account)
            self.engine.configure(
                relay_globs=config.relay.clients, offline_status=config.presence.offline_status,
                catchup_max=config.relay.catchup_max, playback_max=config.relay.playback_max,
                offline_mentions=config.relay.offline_mentions,
            )
            log.info("configuration reloaded", path=str(config.path), level=config.logging.level)
            assert self.effects is not None
            self.effects.run(self.engine.refresh(time.time()))
        self.notifier.ready()


def run(config: Config, password: str) -> int:
    """Run the daemon until a signal stops it; return the process exit code.  Raises
    ConfigError for what only shows when it is used (a JID stringprep refuses, a state dir
    that cannot be made)."""
    return asyncio.run(App(config, password).run())
