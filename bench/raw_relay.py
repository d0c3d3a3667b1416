"""The relay floor: the least any relay of minimix's format could do, for the latency runs.

A process logged in as another resource of the daemon's account (stdlib asyncio and ssl,
STARTTLS verified against --ca-file, SASL PLAIN, TCP_NODELAY; with --sm, XEP-0198 enabled
and every <r/> answered at once, in the same write as the relay, as the daemon does). It
joins --room and, for every groupchat message from it with a body, sends --to the relay
minimix sends (`minimix.xmpp.delivery.RELAY_HINTS`: type=chat, the fallback body, the
receipt request, the hints, the original forwarded whole with a <delay/>), nothing else.

It has no XML parser: it cuts the top-level elements out of what Prosody writes by their
tags (Prosody writes each stanza whole, and escapes '>' in attribute values), keeps no
state, stores nothing and checks nothing. No real client can do less; a relay that parses
what it forwards, decides who gets it and keeps a log for playback does more. It sends no
available presence (the account's other resources never see it) and its session's priority
is never positive: nothing but the room's traffic reaches it.

Prints (stdout): `floor ready t=<unix time>` once joined, then runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import re
import signal
import socket
import ssl
import sys
import time
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from bare_catchup import connection_args  # same directory; imports nothing more
from minimix.xmpp.delivery import RELAY_HINTS

STREAM = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to={domain} version='1.0'>"
)
FROM_RX = re.compile(rb"""from=(['"])(.*?)\1""")
TYPE_GROUPCHAT = re.compile(rb"""^<message[^>]*\stype=(['"])groupchat\1""")
TAG_RX = re.compile(rb"<([A-Za-z:]+)")
BODY_RX = re.compile(rb"<body>(.*?)</body>", re.S)


class Stream:
    """What the server sent, cut into top-level elements (see the module's docstring)."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.buf = b""

    async def until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker`` (the negotiation phase)."""
        while marker not in self.buf:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the stream")
            self.buf += data
        i = self.buf.index(marker) + len(marker)
        head, self.buf = self.buf[:i], self.buf[i:]
        return head

    def elements(self) -> list[bytes]:
        """The complete top-level elements buffered, removed from the buffer."""
        out = []
        buf = self.buf
        pos = 0
        while True:
            start = buf.find(b"<", pos)
            if start < 0:
                break
            tag_end = buf.find(b">", start)
            if tag_end < 0:
                break
            if buf[tag_end - 1 : tag_end] == b"/":
                out.append(buf[start : tag_end + 1])
                pos = tag_end + 1
                continue
            m = TAG_RX.match(buf, start)
            if m is None:  # </stream:stream>: the stream ends
                raise ConnectionError("the server closed the stream")
            close = b"</" + m[1] + b">"
            end = buf.find(close, tag_end)
            if end < 0:
                break
            out.append(buf[start : end + len(close)])
            pos = end + len(close)
        self.buf = buf[pos:]
        return out


async def main(args: argparse.Namespace) -> int:
    bare, _, resource = args.jid.partition("/")
    local, _, domain = bare.partition("@")
    reader, writer = await asyncio.open_connection(args.host, args.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = Stream(reader)
    header = STREAM.format(domain=quoteattr(domain)).encode()

    writer.write(header)
    await s.until(b"</stream:features>")
    writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await s.until(b"/>")
    ctx = ssl.create_default_context(cafile=args.ca_file)
    await writer.start_tls(ctx, server_hostname=domain)
    s.buf = b""

    writer.write(header)
    await s.until(b"</stream:features>")
    token = base64.b64encode(f"\0{local}\0{args.password}".encode()).decode()
    writer.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
    if b"<success" not in await s.until(b">"):
        print("floor: login refused", file=sys.stderr, flush=True)
        return 1
    s.buf = b""

    writer.write(header)
    await s.until(b"</stream:features>")
    writer.write(
        f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{escape(resource)}</resource></bind></iq>".encode()
    )
    await s.until(b"</iq>")
    if args.sm:
        writer.write(b"<enable xmlns='urn:xmpp:sm:3'/>")
        await s.until(b"/>")
    me = f"{args.room}/{args.nick}"
    writer.write(
        f"<presence to={quoteattr(me)}><x xmlns='http://jabber.org/protocol/muc'>"
        f"<history maxstanzas='0'/></x></presence>".encode()
    )
    handled = 0  # stanzas received since <enable/> (XEP-0198's h)
    joined = False
    while not joined:  # until the room's self-presence (status 110)
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the stream")
        s.buf += data
        for el in s.elements():
            if el.startswith(b"<r "):
                writer.write(f"<a xmlns='urn:xmpp:sm:3' h='{handled}'/>".encode())
            elif el.startswith((b"<message", b"<presence", b"<iq")):
                handled += 1
                joined = joined or (el.startswith(b"<presence") and b"code='110'" in el)
    print(f"floor ready t={time.time():.6f}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    to = quoteattr(args.to)
    room_tag = escape(args.room.partition("@")[0])
    n = 0

    async def relay() -> None:
        with contextlib.suppress(ConnectionError):
            await relay_all()
        stop.set()

    ack_pending = False

    def ack() -> None:
        nonlocal ack_pending
        ack_pending = False
        writer.write(f"<a xmlns='urn:xmpp:sm:3' h='{handled}'/>".encode())

    async def relay_all() -> None:
        nonlocal handled, n, ack_pending
        while True:
            data = await reader.read(65536)
            if not data:
                return
            s.buf += data
            out = []
            for el in s.elements():
                if el.startswith(b"<r "):
                    if not args.ack_delay_ms:
                        out.append(f"<a xmlns='urn:xmpp:sm:3' h='{handled}'/>".encode())
                    elif not ack_pending:
                        ack_pending = True
                        loop.call_later(args.ack_delay_ms / 1000, ack)
                    continue
                if not el.startswith((b"<message", b"<presence", b"<iq")):
                    continue
                handled += 1
                if not TYPE_GROUPCHAT.match(el):
                    continue
                body = BODY_RX.search(el)
                if body is None:
                    continue
                nick = FROM_RX.search(el)[2].partition(b"/")[2].decode()
                n += 1
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                out.append(
                    f"<message to={to} type='chat' id='floor-{n}'><body>[{room_tag}] {escape(nick)}: "
                    f"{body[1].decode()}</body>{RELAY_HINTS}<forwarded xmlns='urn:xmpp:forward:0'>"
                    f"<delay xmlns='urn:xmpp:delay' stamp='{stamp}'/><message xmlns='jabber:client'"
                    f"{el[8:].decode()}</forwarded></message>".encode()
                )
            if out:
                writer.write(b"".join(out))

    task = asyncio.ensure_future(relay())
    await stop.wait()
    task.cancel()
    writer.write(b"</stream:stream>")
    writer.close()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    connection_args(p)
    p.add_argument("--room", required=True, help="the room's bare JID")
    p.add_argument("--nick", required=True)
    p.add_argument("--to", required=True, help="the client's full JID the relays go to")
    p.add_argument("--sm", action="store_true", help="enable XEP-0198 and answer every <r/> at once")
    p.add_argument("--ack-delay-ms", type=float, default=0,
                   help="answer <r/> this much later instead, once for all asked meanwhile")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
