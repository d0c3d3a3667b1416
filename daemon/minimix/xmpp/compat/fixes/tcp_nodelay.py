"""Nagle's algorithm on the XMPP connection.

Defect: aioopenssl does not set TCP_NODELAY, which gives small stanzas a ~45 ms tail (Nagle
and the peer's delayed ACK).  :func:`set_nodelay` is called after every stream
establishment and resumption (a new socket each time).
Upstream: none filed (aioopenssl's transport, not aioxmpp's).
Can go when: aioopenssl sets TCP_NODELAY on its sockets (tests/compat/test_tcp_nodelay.py:
test_stock_connection_leaves_nagle_on fails).
"""

from __future__ import annotations

import contextlib
import socket

import aioxmpp


def set_nodelay(client: aioxmpp.Client) -> bool:
    xmlstream = getattr(client.stream, "_xmlstream", None)
    transport = getattr(xmlstream, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    return False
