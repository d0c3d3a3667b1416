"""``minimix doctor``: the checks that talk to the server.

One short session as ``<resource>-doctor`` (never the daemon's resource, so a running daemon
keeps its session), with the daemon's own client, security layer and XSOs. It gathers facts
and leaves the verdicts to :mod:`minimix.doctor`. It only *reads* the user's bookmarks; the
live notification tests publish and retract on a scratch PEP node of its own, deleted
afterwards. Every network step has a timeout, and the whole run stays within
:data:`BUDGET_S` even when rooms do not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aioxmpp
import aioxmpp.bookmarks.xso as legacy_xso
import aioxmpp.connector
import aioxmpp.disco
import aioxmpp.errors
import aioxmpp.nonza
import aioxmpp.ping
import aioxmpp.private_xml
import aioxmpp.pubsub.xso as pubsub_xso
import aioxmpp.security_layer
import aioxmpp.xso as xso

from minimix import doctor as verdict
from minimix.config import Config
from minimix.core.bookmarks import BookmarkSet, wants
from minimix.core.events import PingOutcome
from minimix.doctor import Check, RoomProbe, Status
from minimix.password import password_source
from minimix.xmpp import compat
from minimix.xmpp.account import security_layer
from minimix.xmpp.bookmarks import raw_legacy_item, raw_pep_item
from minimix.xmpp.caps import announce_caps
from minimix.xmpp.doctor_connect import (
    Outcome,
    SaslRecord,
    TlsRecord,
    describe,
    not_connected,
    recording_layer,
    tls_ok,
)
from minimix.xmpp.muc import ping_outcome
from minimix.xmpp.xso import (
    NS_BOOKMARKS,
    NS_BOOKMARKS_COMPAT,
    NS_CAPS,
    node_config,
    publish_options,
)

T = TypeVar("T")

NS_DOCTOR = "urn:xmpp:minimix:doctor"
RESOURCE_SUFFIX = "-doctor"
CONNECT_TIMEOUT_S = 10.0  # TCP + TLS + SASL + bind
STEP_TIMEOUT_S = 5.0  # one IQ, or one awaited notification
ROOMS_TIMEOUT_S = 8.0  # all room probes together (they run in parallel)
STOP_TIMEOUT_S = 2.0
BUDGET_S = 27.0  # the whole network part
MAX_ROOMS = 50


@pubsub_xso.as_payload_class
class Probe(xso.XSO):
    """The item published on the scratch node."""

    TAG = (NS_DOCTOR, "probe")


async def _settled(task: Awaitable[T], fallback: Callable[[str], Any]) -> Any:
    """The task's result, or ``fallback(why)`` if it failed (a lost connection, no answer)."""
    try:
        return await task
    except Exception as exc:
        return fallback(_why(exc))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aioxmpp.errors.XMPPError):
        return _condition(exc)
    return describe(exc)


def _condition(exc: aioxmpp.errors.XMPPError) -> str:
    value = exc.condition.value
    return value[1] if isinstance(value, tuple) else str(exc.condition)


# -- the run --------------------------------------------------------------------------------------


def run(config: Config, password: str) -> Outcome:
    return asyncio.run(_Doctor(config, password).run())


class _Doctor:
    def __init__(self, config: Config, password: str) -> None:
        self.config = config
        self.password = password
        account = config.account
        self.own = aioxmpp.JID.fromstr(account.jid)
        self.jid = self.own.replace(resource=account.resource + RESOURCE_SUFFIX)
        self.node = f"{NS_DOCTOR}:{secrets.token_hex(6)}"  # the scratch node
        self.tls = TlsRecord()
        self.sasl = SaslRecord()
        self.deadline = 0.0
        self.caps_queried = asyncio.Event()
        self.published: dict[str, asyncio.Future[None]] = {}
        self.retracted: set[str] = set()
        self.options_refused: bool | None = None  # the XEP-0402 publish-options, on the scratch node

    # -- timing ---------------------------------------------------------------------

    def _left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def _step(self, awaitable: Awaitable[T], timeout: float = STEP_TIMEOUT_S) -> T:
        """Await with the step's timeout, cut to what is left of the budget."""
        left = min(timeout, self._left())
        if left <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise TimeoutError
        return await asyncio.wait_for(awaitable, left)

    # -- connecting -----------------------------------------------------------------

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + BUDGET_S
        account = self.config.account
        ca_file = account.ca_file
        layer = recording_layer(
            security_layer(self.password, str(ca_file) if ca_file else None), self.tls, self.sasl
        )
        peer = []
        if account.address is not None:
            host, port = account.address
            peer = [(host, port, aioxmpp.connector.STARTTLSConnector())]
            self.server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            self.server = f"{account.domain} (SRV lookup)"
        client = compat.MinimixClient(
            self.jid, layer, delay_for=lambda attempt: 3600.0, override_peer=peer, pin_peer=bool(peer)
        )
        self.client = client
        self._setup_services(client)

        outcome: asyncio.Future[BaseException | None] = loop.create_future()

        def settle(result: BaseException | None) -> None:
            if not outcome.done():
                outcome.set_result(result)

        client.on_stream_established.connect(lambda: settle(None))
        client.on_connect_failed.connect(lambda exc, delay: settle(exc))
        client.on_failure.connect(settle)
        client.start()
        try:
            try:
                error = await asyncio.wait_for(outcome, min(CONNECT_TIMEOUT_S, self._left()))
            except TimeoutError:
                error = TimeoutError(f"no session within {CONNECT_TIMEOUT_S:g} s")
            if error is not None:
                return not_connected(error, self.tls, self.sasl, self.config, self.server)
            return Outcome(self._connected_checks() + await self._session_checks())
        finally:
            await self._stop(client)

    def _setup_services(self, client: aioxmpp.Client) -> None:
        disco = client.summon(aioxmpp.DiscoServer)
        # +notify for the scratch node only: the doctor must not receive bookmark events.
        for feature in (self.node + "+notify", NS_CAPS):
            disco.register_feature(feature)
        self.disco = client.summon(aioxmpp.DiscoClient)
        self.pubsub = client.summon(aioxmpp.PubSubClient)
        self.pubsub.on_item_published.connect(self._on_published)
        self.pubsub.on_item_retracted.connect(self._on_retracted)
        self.private = client.summon(aioxmpp.private_xml.PrivateXMLService)
        self.presence = client.summon(aioxmpp.PresenceServer)
        # Available (PEP notifications need it) only for the notification tests, with a
        # negative priority: it never gets chats. A running daemon counts every available
        # resource of the account as one of the user's clients (presence mirroring debounces
        # for 2 s), so the doctor goes unavailable again as soon as it can.
        self.presence.set_presence(aioxmpp.PresenceState(True), {None: "minimix doctor"}, priority=-1)
        # XEP-0115 caps of our own, as the daemon does, to see when the server has asked.
        announce_caps(client, disco, self._on_caps_query)

    def _on_caps_query(self, peer: aioxmpp.JID | None) -> None:
        if peer is not None and (peer.bare() == self.own or peer == self.own.replace(localpart=None)):
            self.caps_queried.set()

    def _on_published(self, jid: aioxmpp.JID, node: str, item: Any, *, message: Any = None) -> None:
        if jid == self.own and node == self.node:
            future = self.published.get(item.id_)
            if future is not None and not future.done():
                future.set_result(None)

    def _on_retracted(self, jid: aioxmpp.JID, node: str, id_: str, *, message: Any = None) -> None:
        if jid == self.own and node == self.node:
            self.retracted.add(id_)

    async def _stop(self, client: compat.MinimixClient) -> None:
        if not client.running:
            return
        stopped = client.on_stopped.future()
        failed = client.on_failure.future()
        client.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait({stopped, failed}, timeout=STOP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        for future in (stopped, failed):
            future.cancel()

    # -- connected ---------------------------------------------------------------------

    def _connected_checks(self) -> list[Check]:
        client = self.client
        stream = client.stream
        features = client.stream_features
        try:
            features[aioxmpp.nonza.StreamManagementFeature]
            sm_offered = True
        except (KeyError, TypeError):
            sm_offered = False
        enabled = stream.sm_enabled
        return [
            verdict.judge_connection(self.tls.peer or self.server, None),
            tls_ok(self.tls, self.own.domain, self.config.account.ca_file),
            verdict.judge_login(self.sasl.mechanism, self.sasl.offered, False, password_source(self.config)),
            verdict.judge_stream_management(
                sm_offered,
                enabled,
                bool(enabled and stream.sm_resumable),
                stream.sm_max if enabled else None,
            ),
        ]

    async def _session_checks(self) -> list[Check]:
        """The checks in a session, in parallel; a failure of one costs only its rows."""
        account_info = asyncio.ensure_future(self._step(self.disco.query_info(self.own, require_fresh=True)))
        server_info = asyncio.ensure_future(
            self._step(self.disco.query_info(self.own.replace(localpart=None), require_fresh=True))
        )
        scratch = asyncio.ensure_future(self._scratch_checks(account_info))
        node_cfg = asyncio.ensure_future(self._node_config())
        bookmarks = asyncio.ensure_future(self._bookmark_checks(account_info))
        try:
            server = await _settled(server_info, lambda why: why)
            account = await _settled(account_info, lambda why: why)
            bookmark_checks, room_checks = await _settled(
                bookmarks,
                lambda why: ([Check("bookmarks", Status.WARN, f"could not check: {why}")],
                             verdict.skipped(["rooms"], why)),
            )
            scratch_checks = await _settled(
                scratch,
                lambda why: [Check(n, Status.WARN, f"could not check: {why}")
                             for n in ("publish-options", "pep notify", "retract notify")],
            )
            config, error = await _settled(node_cfg, lambda why: (None, why))
        finally:
            for task in (account_info, server_info, scratch, node_cfg, bookmarks):
                task.cancel()
        checks = [
            verdict.judge_carbons(server.features)
            if not isinstance(server, str)
            else Check("carbons", Status.SKIP, f"skipped: no disco#info from the server ({server})"),
            verdict.judge_account_mam(account.features)
            if not isinstance(account, str)
            else Check("account mam", Status.SKIP, f"skipped: no disco#info from the account ({account})"),
        ]
        checks += bookmark_checks
        checks += verdict.judge_node_config(config, error, options_refused=self.options_refused)
        checks += scratch_checks
        checks += room_checks
        return checks

    # -- bookmarks and rooms -----------------------------------------------------------

    async def _bookmark_checks(self, account_info: asyncio.Future[Any]) -> tuple[list[Check], list[Check]]:
        try:
            info = await account_info
        except Exception as exc:
            why = f"no disco#info from the account ({_why(exc)})"
            return verdict.skipped(["bookmarks"], why), verdict.skipped(["rooms"], why)
        try:
            pep_items, legacy_items = await asyncio.gather(self._pep_bookmarks(), self._legacy_bookmarks())
        except aioxmpp.errors.XMPPError as exc:
            why = f"cannot read the bookmarks ({_condition(exc)}): minimix could not find its rooms"
            fix = "the server must offer PEP (XEP-0163) or private XML storage (XEP-0049)"
            return [Check("bookmarks", Status.FAIL, why, fix)], verdict.skipped(["rooms"], "no bookmarks")
        compat_store = NS_BOOKMARKS_COMPAT in info.features
        pep = any(i.category == "pubsub" and i.type_ == "pep" for i in info.identities)
        found = BookmarkSet()
        found.load_pep(pep_items or ())
        if not compat_store and legacy_items is not None:
            found.load_legacy(legacy_items)  # as the daemon does: the union, XEP-0402 wins
        effective, notes = found.resolve()
        wanted = wants(effective, self.config.rooms.default_nick)
        bookmark_check = verdict.judge_bookmarks(
            compat=compat_store,
            pep=pep,
            pep_node=pep_items is not None,
            pep_count=len(pep_items or ()),
            legacy_count=None if legacy_items is None else len(legacy_items),
            autojoin=len(wanted),
            rejected=len(notes),
            poll_interval_s=self.config.bookmarks.poll_interval_s,
        )
        rooms = sorted(wanted)[:MAX_ROOMS]
        checks = [verdict.judge_rooms(len(wanted), len(rooms))]
        probes = await self._probe_rooms([(r, wanted[r].nick, wanted[r].password is not None) for r in rooms])
        checks += [verdict.judge_room(p) for p in probes]
        return [bookmark_check], checks

    async def _pep_bookmarks(self) -> list[Any] | None:
        """The XEP-0402 items (read only), or None if there is no node."""
        try:
            response = await self._step(self.pubsub.get_items(self.own, NS_BOOKMARKS))
        except aioxmpp.errors.XMPPCancelError as exc:
            if exc.condition == aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
                return None
            raise
        return [raw_pep_item(i.id_, i.registered_payload) for i in response.payload.items]

    async def _legacy_bookmarks(self) -> list[Any] | None:
        """The XEP-0048 bookmarks in private XML (read only), or None if unreadable."""
        try:
            result = await self._step(self.private.get_private_xml(legacy_xso.Storage()))
        except (aioxmpp.errors.XMPPError, TimeoutError):
            return None
        storage = result.registered_payload
        if not isinstance(storage, legacy_xso.Storage):
            return []
        return [raw_legacy_item(c) for c in storage.bookmarks if isinstance(c, legacy_xso.Conference)]

    async def _probe_rooms(self, rooms: Sequence[tuple[str, str, bool]]) -> list[RoomProbe]:
        if not rooms:
            return []
        timeout = min(ROOMS_TIMEOUT_S, self._left())

        async def probe(room: str, nick: str, has_password: bool) -> RoomProbe:
            jid = aioxmpp.JID.fromstr(room)
            info, ping = await asyncio.gather(
                self._room_info(jid, timeout), self._self_ping(jid.replace(resource=nick), timeout)
            )
            error, identities, features = info
            condition, joined = ping
            return RoomProbe(room, nick, has_password, error, features, condition, joined, identities)

        return list(await asyncio.gather(*(probe(*r) for r in rooms)))

    async def _room_info(
        self, jid: aioxmpp.JID, timeout: float
    ) -> tuple[str | None, frozenset[str], frozenset[str]]:
        """(error, identities as "category/type", features) of disco#info on the room."""
        try:
            info = await asyncio.wait_for(self.disco.query_info(jid, require_fresh=True), timeout)
        except TimeoutError:
            return "timeout", frozenset(), frozenset()
        except aioxmpp.errors.XMPPError as exc:
            return _condition(exc), frozenset(), frozenset()
        except (ConnectionError, aioxmpp.errors.ErroneousStanza) as exc:
            return describe(exc), frozenset(), frozenset()
        identities = frozenset(f"{i.category}/{i.type_}" for i in info.identities)
        return None, identities, frozenset(info.features)

    async def _self_ping(self, occupant: aioxmpp.JID, timeout: float) -> tuple[str, bool | None]:
        """XEP-0410 self-ping of our occupant JID without joining: (answer, joined?)."""
        try:
            await asyncio.wait_for(aioxmpp.ping.ping(self.client, occupant), timeout)
        except TimeoutError:
            return "timeout", None
        except aioxmpp.errors.XMPPError as exc:
            condition = _condition(exc)
            outcome = ping_outcome(condition)
            joined = None if outcome is PingOutcome.UNDECIDED else outcome is not PingOutcome.GONE
            return condition, joined
        except (ConnectionError, aioxmpp.errors.ErroneousStanza) as exc:
            return describe(exc), None
        return "result", True

    async def _node_config(self) -> tuple[dict[str, list[str]] | None, str | None]:
        """(owner configuration of the bookmark node or None if there is none, error)."""
        try:
            form = await self._step(self.pubsub.get_node_config(None, NS_BOOKMARKS))
        except aioxmpp.errors.XMPPError as exc:
            if exc.condition == aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
                return None, None
            return None, _condition(exc)
        return {f.var: list(f.values) for f in form.fields if f.var}, None

    # -- live notifications on a scratch node ------------------------------------------------

    async def _scratch_checks(self, account_info: asyncio.Future[Any]) -> list[Check]:
        """Publish, retract and publish again on a scratch node of our own, then delete it.

        Notifications come the daemon's way: +notify for the node in our entity caps (once
        the server has asked for them). The second publish is the barrier: a retract
        notification, if the server sends one, arrives before it.
        """
        try:
            checks = await self._notification_checks(account_info)
        except Exception as exc:  # a refused publish, a lost connection, no answer
            why = _why(exc)
            checks = [
                Check(n, Status.WARN, f"the scratch node test failed: {why}")
                for n in ("publish-options", "pep notify", "retract notify")
            ]
        # Always, even after a failed publish (it may have created the node).
        error = await self._delete_scratch_node()
        self.presence.set_presence(aioxmpp.PresenceState(False))
        if error is not None:
            checks.append(
                Check(
                    "scratch node",
                    Status.WARN,
                    f"could not delete the doctor's scratch PEP node {self.node}: {error}",
                    "harmless (it holds one empty item); delete it from an XMPP console if you like",
                )
            )
        return checks

    async def _notification_checks(self, account_info: asyncio.Future[Any]) -> list[Check]:
        cfg = self.config.bookmarks
        intervals = (cfg.poll_interval_s, cfg.resync_interval_s)
        with contextlib.suppress(TimeoutError):
            await self._step(self.caps_queried.wait())  # no query (cached caps?): try anyway
        loop = asyncio.get_running_loop()
        self.published = {"probe-1": loop.create_future(), "probe-2": loop.create_future()}
        # The first publish as the daemon publishes a bookmark: XEP-0402 publish-options, else
        # the subset the server takes and the node configured afterwards.
        try:
            await self._step(
                self.pubsub.publish(None, self.node, Probe(), id_="probe-1", publish_options=publish_options())
            )
            options = verdict.judge_publish_options(True, None)
            self.options_refused = False
        except (aioxmpp.errors.XMPPError, RuntimeError) as exc:
            why = _condition(exc) if isinstance(exc, aioxmpp.errors.XMPPError) else "not supported"
            options = verdict.judge_publish_options(False, why)
            self.options_refused = True
            await self._step(
                self.pubsub.publish(
                    None, self.node, Probe(), id_="probe-1", publish_options=publish_options(full=False)
                )
            )
            with contextlib.suppress(aioxmpp.errors.XMPPError, TimeoutError):
                await self._step(self.pubsub.set_node_config(None, node_config(), self.node))
        try:
            await self._step(asyncio.shield(self.published["probe-1"]))
        except TimeoutError:
            return [
                options,
                verdict.judge_pep_notify(False, None, cfg.resync_interval_s),
                verdict.judge_retract_notify(None, False, intervals),
            ]
        await self._step(self.pubsub.retract(None, self.node, "probe-1", notify=True))
        await self._step(self.pubsub.publish(None, self.node, Probe(), id_="probe-2"))
        with contextlib.suppress(TimeoutError):
            await self._step(asyncio.shield(self.published["probe-2"]))
        compat_store = False
        with contextlib.suppress(Exception):
            compat_store = NS_BOOKMARKS_COMPAT in (await account_info).features
        return [
            options,
            verdict.judge_pep_notify(True, None, cfg.resync_interval_s),
            verdict.judge_retract_notify("probe-1" in self.retracted, compat_store, intervals),
        ]

    async def _delete_scratch_node(self) -> str | None:
        try:
            await asyncio.wait_for(self.pubsub.delete(None, self.node), STEP_TIMEOUT_S)
        except aioxmpp.errors.XMPPError as exc:
            if exc.condition == aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
                return None
            return _condition(exc)
        except (TimeoutError, ConnectionError) as exc:
            return describe(exc)
        return None
