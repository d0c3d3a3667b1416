"""A reconnect loop for a daemon: MinimixClient, aioxmpp.Client with its loop replaced.

Defect (for a daemon): Client._main/_main_impl
- gives up for good after 4 failed initial attempts unless told otherwise, and its backoff
  has no jitter (a daemon started before the network must keep trying, and a thousand
  daemons must not come back in step);
- retries a stream error other than conflict at once, without any backoff;
- takes ``override_peer`` as a preference only: after it fails it still tries the domain's
  SRV and A records (a configured host must be the only one tried);
- reports no failed attempt, so the daemon cannot say "retrying in N s".  (A stream that was
  up and failed is not a failed attempt: on_stream_suspended reports it, once.)
MinimixClient keeps aioxmpp's stream negotiation, XEP-0198 resumption included, untouched;
a refused login ends it with FatalLoginError.
Upstream: none filed.
Can go when: aioxmpp's Client takes a delay function, reports failed attempts and can pin
its peer (tests/compat/test_reconnect.py: test_stock_client_falls_back_to_srv fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiosasl
import aioxmpp
import aioxmpp.callbacks
import aioxmpp.connector
import aioxmpp.errors
import aioxmpp.node
import aioxmpp.security_layer
import dns.resolver
import OpenSSL.SSL


class FatalLoginError(Exception):
    """The server refused the credentials: retrying cannot help."""


class MinimixClient(aioxmpp.Client):
    """aioxmpp.Client with a daemon's reconnect loop.

    ``delay_for(attempt)`` gives the wait before reconnect attempt ``attempt``
    (1-based, reset by each established stream); ``on_connect_failed(exc, delay)``
    fires before each wait.  ``pin_peer=True`` makes ``override_peer`` exclusive.
    """

    on_connect_failed = aioxmpp.callbacks.Signal()

    def __init__(
        self,
        local_jid: aioxmpp.JID,
        security_layer: aioxmpp.security_layer.SecurityLayer,
        *,
        delay_for: Callable[[int], float],
        pin_peer: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("logger", logging.getLogger("aioxmpp.client"))
        super().__init__(local_jid, security_layer, max_initial_attempts=None, **kwargs)
        self._delay_for = delay_for
        self._pin_peer = pin_peer
        self._failed_attempts = 0
        self._lost: BaseException | None = None  # what ended the last stream that was up

    async def _connect(self) -> tuple[Any, Any, Any]:
        override_peer = []
        if self.stream.sm_enabled and self.stream.sm_location:
            host, port = self.stream.sm_location
            override_peer.append((str(host), port, aioxmpp.connector.STARTTLSConnector()))
        override_peer += self.override_peer
        kwargs = {
            "negotiation_timeout": self.negotiation_timeout.total_seconds(),
            "loop": self._loop,
            "logger": self.logger,
        }
        if not self._pin_peer or not self.override_peer:
            return await aioxmpp.node.connect_xmlstream(
                self._local_jid, self._security_layer, override_peer=override_peer, **kwargs
            )
        errors: list[BaseException] = []
        result = await aioxmpp.node._try_options(
            override_peer, errors, self._local_jid, self._security_layer, **kwargs
        )
        if result is None:
            for exc in errors:
                if isinstance(exc, aioxmpp.errors.TLSFailure):
                    raise exc
            raise aioxmpp.errors.MultiOSError(
                f"failed to connect to {override_peer[-1][0]}:{override_peer[-1][1]}", errors
            )
        return result

    async def _main_impl(self) -> None:  # mirrors aioxmpp 0.13.3, with _connect()
        failure_future = self._failure_future
        tls_transport, xmlstream, features = await self._connect()
        self._had_connection = True
        try:
            features, sm_resumed = await self._negotiate_stream(xmlstream, features)
            if self._is_suspended:
                self.on_stream_resumed()
            self._is_suspended = False
            self._failed_attempts = 0
            exc = self._lost = await failure_future
            self.logger.info("stream failed: %s", exc)
            raise exc
        except asyncio.CancelledError:
            await self.stream.close()
            raise
        except aioxmpp.errors.StreamError:
            if self.stream.sm_enabled:
                self.stream.stop_sm()
            raise
        finally:
            self.stream.stop()

    async def _main(self) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.stream.on_failure.context_connect(self._stream_failure))
            stack.enter_context(self.stream.on_stream_destroyed.context_connect(self._stream_destroyed))
            while True:
                self._failure_future = asyncio.Future()
                try:
                    await self._main_impl()
                except aiosasl.AuthenticationFailure as exc:
                    # The server said not-authorized; aiosasl then asks the password provider
                    # again, ours declines, and the error reads "aborted by user".
                    if self.stream.sm_enabled:
                        self.stream.stop_sm()
                    raise FatalLoginError("the server refused the credentials (SASL)") from exc
                except aiosasl.SASLError as exc:
                    # mechanism trouble, temporary-auth-failure…: worth another try
                    if self.stream.sm_enabled:
                        self.stream.stop_sm()
                    await self._wait_before_retry(exc)
                except (
                    OSError,
                    EOFError,
                    ValueError,  # the domain has no XMPP service (yet): DNS may change
                    dns.resolver.NoNameservers,
                    OpenSSL.SSL.Error,
                    # aioopenssl sets the handshake waiter twice when verification fails on
                    # the first handshake step; that surfaces here instead of the TLS error.
                    asyncio.InvalidStateError,
                    aioxmpp.errors.StreamError,
                    aioxmpp.errors.StreamNegotiationFailure,
                    aioxmpp.errors.SecurityNegotiationFailure,
                ) as exc:
                    await self._wait_before_retry(exc)

    async def _wait_before_retry(self, exc: BaseException) -> None:
        self._failed_attempts += 1
        delay = self._delay_for(self._failed_attempts)
        if exc is not self._lost:  # a lost stream is reported once, as such (on_stream_suspended)
            self.on_connect_failed(exc, delay)
        await asyncio.sleep(delay)
