"""The app's loop hands events over without a turn of the event loop when it can:
``App.handle_now`` handles what is queued exactly as the loop's task would, commits before
anything goes out, and never while that task is busy."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from minimix.app.effects import Effects
from minimix.app.events import Shutdown, Wake, WatchdogDue
from minimix.app.main import App
from minimix.config import load_config
from minimix.xmpp.events import RoomActivity


class Recorder:
    """The store and the session, as far as handling a batch goes: what happens, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    journal_error = None

    @contextlib.contextmanager
    def grouped(self, journaled=False):
        self.log.append("begin")
        yield
        self.log.append("journaled" if journaled else "commit")

    def commit(self) -> None:
        self.log.append("commit")

    def send_now(self) -> None:
        self.log.append("send")


@pytest.fixture
def app(tmp_path: Path) -> App:
    path = tmp_path / "config.toml"
    path.write_text(f'[account]\njid = "alice@example.org"\n[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    path.chmod(0o600)
    app = App(load_config(path, env={}), "pw")
    app.store = app.session = Recorder()  # type: ignore[assignment]
    app.effects = Effects(app.session, app.store, None, app._feed)  # type: ignore[arg-type]
    app.notifier.watchdog = lambda: app.store.log.append("watchdog")  # type: ignore[union-attr]
    app.jobs = NoJobs()  # type: ignore[assignment]
    return app


class NoJobs:
    """The app's apscheduler jobs (timers.Jobs), never run: what was asked of them."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def once(self, job_id: str, delay: float, event: object) -> None:
        self.asked.append(("once", job_id, event))

    def every(self, job_id: str, seconds: float, event: object, **options) -> None:
        self.asked.append(("every", job_id, event))

    def cancel(self, job_id: str) -> None:
        self.asked.append(("cancel", job_id))

    def __contains__(self, job_id: str) -> bool:
        return False


def test_what_is_queued_is_handled_at_once_when_the_loop_is_idle(app):
    app._idle = True
    app.post(WatchdogDue())
    app.post(RoomActivity("room@muc.example.org"))
    app.handle_now()
    assert app.queue.empty()
    # on record (the journal) before it goes out; committed to SQLite after
    assert app.store.log == ["begin", "watchdog", "journaled", "send", "commit"]
    assert app._idle


def test_nothing_is_handled_while_the_loop_is_busy(app):
    app._idle = False  # handling a batch, or not waiting for events
    app.post(WatchdogDue())
    app.handle_now()
    assert app.queue.qsize() == 1 and app.store.log == []


def test_a_stop_handled_at_once_wakes_the_loop(app):
    app._idle = True
    app.engine.stop = lambda now: []  # type: ignore[method-assign]
    app.notifier.stopping = lambda: None  # type: ignore[method-assign]
    app.post(Shutdown("SIGTERM"))
    app.handle_now()
    assert app.stopping
    assert isinstance(app.queue.get_nowait(), Wake)  # the loop's task looks at what changed


def test_a_batch_takes_a_bounded_number_of_room_messages(app):
    """Pages of an archive are big: a batch stops once it holds DISPATCH_MESSAGES room
    messages, so that what else is ready (the catch-ups' next queries) runs in between."""
    from minimix.app.main import DISPATCH_MESSAGES
    from minimix.core.events import CatchUpPage, RoomMessage

    page = CatchUpPage("room@muc.example.org", tuple(RoomMessage("room@muc.example.org", "bob", f"m{i}") for i in range(50)))
    for _ in range(3):
        app.post(page)
    first = app._queued([])
    assert len(first) == 2 and sum(len(p.messages) for p in first) >= DISPATCH_MESSAGES
    assert app._queued([]) == [page] and app.queue.empty()


# -- a store that fails: the daemon ends at once, nothing unrecorded goes out --------------------


@pytest.fixture
def failing(app, tmp_path, monkeypatch):
    """The app with a real store that is full (SQLITE_FULL, as on a full disk) and a batch
    that saves a client's settings; what the app sends, its exit and its status recorded."""
    from minimix.core import actions as A
    from minimix.core.relay import ClientSettings, Mode
    from minimix.store import Store
    from minimix.store import database as store_module

    monkeypatch.setattr(store_module, "RETRY_DELAYS_S", ())
    app.store = store = Store(tmp_path / "minimix.sqlite3")
    keywords = tuple(f"keyword-{i:05d}" for i in range(4000))  # needs new pages: the file must grow
    app.effects = Effects(app.session, store, None, app._feed)  # type: ignore[arg-type]
    app._dispatch = lambda event: app.effects.run([A.SaveClient("phone", ClientSettings(Mode.ALL, {}, keywords))])
    app._exit = lambda code: app.session.log.append(f"exit {code}")
    app.notifier.status = lambda text: app.session.log.append(f"status {text}")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    return app


def test_a_commit_that_fails_after_the_sends_ends_the_daemon_and_the_journal_keeps_the_batch(failing, tmp_path):
    failing._handle([Wake()])
    send, status, exit_ = failing.session.log
    assert (send, exit_) == ("send", "exit 74")  # on record in the journal, so sent; then the end
    assert status.startswith("status stopped: the store cannot be used") and "full" in status
    from minimix.store import Store

    assert Store(tmp_path / "minimix.sqlite3").load_clients()["phone"].keywords  # replayed


def test_a_batch_neither_the_journal_nor_sqlite_can_record_is_never_sent(failing, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(failing.store.journal, "append", disk_full)
    failing._handle([Wake()])
    assert "send" not in failing.session.log and "exit 74" in failing.session.log


def test_every_room_policy_field_comes_from_its_rooms_key_but_the_internal_ones(tmp_path):
    """A key renamed in [rooms] or in the policy must not silently fall back to a default."""
    import dataclasses

    from minimix.app.main import NOT_CONFIGURED, room_policy
    from minimix.config import RoomsConfig
    from minimix.core.policy import RoomPolicy

    policy_fields = {f.name for f in dataclasses.fields(RoomPolicy)}
    assert policy_fields - {f.name for f in dataclasses.fields(RoomsConfig)} == NOT_CONFIGURED
    path = tmp_path / "config.toml"
    path.write_text('[account]\njid = "a@example.org"\n[rooms]\nkick_rejoin_max = 7\nself_ping_idle_s = 42.0\n')
    path.chmod(0o600)
    policy = room_policy(load_config(path, env={}).rooms)
    assert (policy.kick_rejoin_max, policy.self_ping_idle_s) == (7, 42.0)
