"""The XMPP session: the connection's life, and the wiring of the edge's concerns to it.

It turns what arrives into events (posted with the ``post`` callback the app gives it;
never acting on them itself), and hands what the core decided to the concern that carries
it out: :attr:`Session.muc` (rooms), :attr:`Session.delivery` (relays and replies),
:attr:`Session.bookmarks`, :attr:`Session.catchups` (room archives).  Anything that needs
an answer from the network runs as a tracked task and reports back as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aioxmpp
import aioxmpp.connector
import aioxmpp.disco
import aioxmpp.node
import aioxmpp.nonza
import aioxmpp.ping
import aioxmpp.private_xml
import aioxmpp.protocol
import aioxmpp.structs
import structlog

from minimix.core.events import RelayBounced, SessionEstablished, SessionLost
from minimix.xmpp import compat, inbound, mam, phones
from minimix.xmpp.account import Account, security_layer
from minimix.xmpp.adhoc import AdhocCommands
from minimix.xmpp.bookmarks import Bookmarks
from minimix.xmpp.caps import announce_caps
from minimix.xmpp.delivery import Delivery
from minimix.xmpp.events import (
    CapsQueried,
    ClientStopped,
    ConnectFailed,
    LoginFailed,
    StreamResumed,
    StreamSuspended,
)
from minimix.xmpp.link import Link, describe
from minimix.xmpp.muc import Rooms
from minimix.xmpp.xso import NS_BOOKMARKS, NS_CAPS, NS_MUC

log = structlog.get_logger("minimix.xmpp")
log_std = logging.getLogger("aioxmpp.client")


class Session:
    """One account's XMPP session, kept up until :meth:`stop`."""

    muc: Rooms
    delivery: Delivery
    bookmarks: Bookmarks
    catchups: mam.CatchUps

    def __init__(
        self,
        account: Account,
        post: Callable[[object], None],
        *,
        reconnect_delay: Callable[[int], float],
        rooms: Callable[[], list[str]] = list,
        ack_mark: Callable[[str, int], None] | None = None,
        on_received: Callable[[], None] | None = None,
    ) -> None:
        self.account = account
        self.link = Link(account, post)
        self._reconnect_delay = reconnect_delay
        self._rooms = rooms  # the rooms the user may pick from in ad-hoc forms
        self._ack_mark = ack_mark  # records each XEP-0198 count we acknowledge (StreamHooks)
        # Called once the stanzas received in one go have become events: their owner may
        # handle them now rather than on the loop's next turn (StreamHooks.on_taken).
        self._on_received = on_received
        self._destroyed_since_suspend = False

    @property
    def client(self) -> compat.MinimixClient | None:
        return self.link.client

    @property
    def online(self) -> bool:
        return self.link.online

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Build the client (inside the running loop: aioxmpp needs it) and connect."""
        acc = self.account
        peer = []
        if acc.host:
            peer = [(acc.host, acc.port, aioxmpp.connector.STARTTLSConnector())]
        client = compat.MinimixClient(
            acc.jid,
            security_layer(acc.password, acc.ca_file),
            delay_for=self._reconnect_delay,
            override_peer=peer,
            pin_peer=bool(acc.host),
        )
        self.link.client = client
        self._setup_services(client)
        stream = client.stream
        compat.set_hooks(stream, compat.StreamHooks(
            rooms=self.muc.nicks, on_room_stanza=self.muc.take,
            archives=self.catchups.archives.queried, on_archived=self.catchups.archives.take,
            on_taken=self._on_received, ack_mark=self._mark_acked if self._ack_mark is not None else None,
        ))  # fmt: skip
        stream.app_inbound_presence_filter.register(self._inbound_presence, 0)
        stream.app_inbound_message_filter.register(self._inbound_message, 0)
        stream.service_inbound_message_filter.register(self.bookmarks.node_emptied, -1)
        client.on_stream_established.connect(self._on_established)
        client.on_stream_destroyed.connect(self._on_destroyed)
        client.on_stream_suspended.connect(self._on_suspended)
        client.on_stream_resumed.connect(self._on_resumed)
        client.on_connect_failed.connect(self._on_connect_failed)
        client.on_failure.connect(self._on_failure)
        client.on_stopped.connect(lambda: self.link.post(ClientStopped(None)))
        client.start()

    def _mark_acked(self, sm_id: str, count: int) -> None:
        if self._ack_mark is None:
            return
        try:
            self._ack_mark(sm_id, count)
        except OSError as exc:  # a crash would then be settled with the count saved with the relays
            log.warning("cannot record the stream count acknowledged; carrying on without", error=describe(exc))
            self._ack_mark = None

    def _setup_services(self, client: aioxmpp.Client) -> None:
        disco = client.summon(aioxmpp.DiscoServer)
        # aioxmpp's DiscoServer already says client/bot: exactly what minimix is. Its name is
        # what clients list for this resource (Dino's tooltip of your own account).
        disco.set_identity_names("client", "bot", {aioxmpp.structs.LanguageTag.fromstr("en"): "minimix"})
        client.summon(aioxmpp.PingService)  # answers XEP-0199 pings (and says so in disco)
        for feature in (NS_MUC, NS_BOOKMARKS + "+notify", phones.NS_MDS + "+notify", NS_CAPS):
            disco.register_feature(feature)
        disco_client = client.summon(aioxmpp.DiscoClient)
        pubsub = client.summon(aioxmpp.PubSubClient)
        private = client.summon(aioxmpp.private_xml.PrivateXMLService)
        client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True), {None: "minimix"}, priority=-1)
        AdhocCommands(client, self.link.post, self._rooms, self.link.is_own_client)
        self.muc = Rooms(self.link, disco_client)
        self.delivery = Delivery(self.link)
        self.bookmarks = Bookmarks(self.link, pubsub, private, disco_client)
        self.catchups = mam.CatchUps(self.link, mam.Archives(client))
        pubsub.on_item_published.connect(self.bookmarks.on_published)
        pubsub.on_item_retracted.connect(self.bookmarks.on_retracted)
        announce_caps(client, disco, self._on_caps_query)

    def _on_caps_query(self, peer: aioxmpp.JID | None) -> None:
        """The server asking (Prosody: from the account's bare JID; ejabberd: from our own
        full JID), which then pushes bookmark changes — not one of the user's clients
        looking at us."""
        own = self.link.own
        me = self.client.local_jid if self.client is not None else self.account.jid
        if peer is None or peer in (own, me, own.replace(localpart=None)):
            self.link.post(CapsQueried())

    async def probe_previous_session(self, sm_id: str, inbound: int, timeout: float = 15.0) -> int | None:
        """How many of our stanzas the server had from a previous run's XEP-0198 session.

        Before the daemon's own session starts: log in, ask to resume the old session, read
        the count from <resumed h=…/> or <failed h=…/> (Prosody remembers it for expired
        sessions too), and close.  None when the server does not say.
        """
        acc = self.account
        peer = [(acc.host, acc.port, aioxmpp.connector.STARTTLSConnector())] if acc.host else []
        security = security_layer(acc.password, acc.ca_file)
        xmlstream = None
        try:
            async with asyncio.timeout(timeout):
                if peer:
                    errors: list[BaseException] = []
                    result = await aioxmpp.node._try_options(
                        peer, errors, acc.jid, security, negotiation_timeout=timeout,
                        loop=asyncio.get_running_loop(), logger=log_std,
                    )
                    if result is None:
                        return None
                    _, xmlstream, features = result
                else:
                    _, xmlstream, features = await aioxmpp.node.connect_xmlstream(
                        acc.jid, security, logger=log_std  # its stream logs as the session's does
                    )
                try:
                    features[aioxmpp.nonza.StreamManagementFeature]
                except KeyError:
                    return None
                answer = await aioxmpp.protocol.send_and_wait_for(
                    xmlstream,
                    [aioxmpp.nonza.SMResume(previd=sm_id, counter=inbound)],
                    [aioxmpp.nonza.SMResumed, aioxmpp.nonza.SMFailed],
                )
                return answer.counter
        except Exception as exc:  # TLS closes, refusals, timeouts: the server did not say
            log.info("could not ask the server about the previous session", error=describe(exc))
            return None
        finally:
            if xmlstream is not None:
                with contextlib.suppress(Exception):
                    xmlstream.abort()

    async def stop(self, timeout: float = 5.0) -> None:
        self.link.cancel_tasks()
        client = self.client
        if client is None or not client.running:
            return
        stopped = client.on_stopped.future()
        failed = client.on_failure.future()
        client.stop()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED), timeout)

    def send_now(self) -> None:
        """Write what is queued for the server at once, not on the stanza loop's next turn."""
        client = self.client
        if client is not None and client.established:
            compat.send_queued(client.stream)

    async def drain(self, timeout: float) -> None:
        """Wait until what was sent is acknowledged by the server (XEP-0198), or ``timeout``:
        a clean stop leaves no relay in flight (a closed session's count is gone)."""
        client = self.client
        if client is None or not self.online:
            return
        stream = client.stream
        with contextlib.suppress(Exception):
            await asyncio.wait_for(aioxmpp.ping.ping(client, self.link.own.replace(localpart=None)), timeout)
            if stream.sm_enabled and stream.sm_unacked_list:
                stream._xmlstream.send_xso(aioxmpp.nonza.SMRequest())
                async with asyncio.timeout(timeout):
                    while stream.sm_enabled and stream.sm_unacked_list:
                        await asyncio.sleep(0.01)  # bounded by the timeout above
        await asyncio.sleep(0)  # let the acks' reports reach the app's queue

    # -- stream events -------------------------------------------------------------------

    def _on_established(self) -> None:
        assert self.client is not None
        compat.set_nodelay(self.client)
        log.info("session established", jid=str(self.client.local_jid))
        self.catchups.new_session()
        self.link.post(SessionEstablished())
        self.bookmarks.fetch()

    def _on_destroyed(self) -> None:
        self._destroyed_since_suspend = True
        self.link.post(SessionLost())

    def _on_suspended(self, exc: BaseException | None) -> None:
        self._destroyed_since_suspend = False  # a new outage: resumed unless destroyed
        self.link.post(StreamSuspended(describe(exc)))

    def _on_resumed(self) -> None:
        # aioxmpp fires this after a *new* stream too (destroyed + established): skip that.
        if not self._destroyed_since_suspend:
            assert self.client is not None
            compat.set_nodelay(self.client)
            self.link.post(StreamResumed())

    def _on_connect_failed(self, exc: BaseException, delay: float) -> None:
        self.link.post(ConnectFailed(describe(exc), delay))

    def _on_failure(self, exc: BaseException) -> None:
        if isinstance(exc, compat.FatalLoginError):
            self.link.post(LoginFailed(str(exc)))
        else:
            self.link.post(ClientStopped(describe(exc)))

    # -- inbound -------------------------------------------------------------------------

    def _inbound_presence(self, presence: aioxmpp.Presence) -> aioxmpp.Presence | None:
        sender = presence.from_
        if sender is None:
            return presence
        if self.link.is_own_client(sender):
            self.link.post(inbound.client_presence(sender.resource, presence))
            return None
        room = str(sender.bare())
        if room not in self.muc.nicks:
            return presence
        self.muc.on_presence(room, presence)
        return None

    def _inbound_message(self, message: aioxmpp.Message) -> aioxmpp.Message | None:
        """Room traffic and the user's clients' messages become events; the rest is dropped.

        Strangers get nothing back (the daemon must not reflect anything to them), and a
        forwarded or carbon-copied stanza is never taken for a live one.
        """
        sender = message.from_
        if sender is None:
            return None
        room = str(sender.bare())
        kind = message.type_
        if room in self.muc.nicks:
            self.muc.on_message(room, message)
        elif kind == aioxmpp.MessageType.ERROR:
            if self.link.is_own_client(sender) and message.id_:  # the core knows its relay ids
                self.link.post(RelayBounced(sender.resource, message.id_))  # a relay given back
        elif self.link.is_own_client(sender) and kind in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL):
            for event in inbound.client_message(sender.resource, message):
                self.link.post(event)
        return None
