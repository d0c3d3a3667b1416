"""The catch-up floor: a bare aioxmpp client that fetches the same MAM pages as the daemon.

Connect (STARTTLS verified against --ca-file, minimix's aioxmpp compat fixes, TCP_NODELAY),
then for every room of CURSORS_FILE at once fetch what came after the room's cursor:
`minimix.xmpp.mam.catch_up` with the daemon's own limit and page size, i.e. the same
`urn:xmpp:mam:2` queries (the archive's count since the cursor, then RSM pages of
<max>100</max> forwards from the cursor when that count is within the limit, else
backwards from the end with after-id) and the parsing of the results with aioxmpp's XSOs, as any aioxmpp
client (--read-raw: as the daemon reads them, without XSOs: the compat fast path's router). No room is joined and
nothing is stored or relayed. Then stay connected until SIGTERM/SIGINT (so that the bench
can read the process's CPU time) and close the stream.

CURSORS_FILE: one room a line, "ROOM AFTER_ID AFTER_STAMP" (the daemon's room_state).

Prints (stdout, one line each):
  bare connected t=<unix time>
  bare caught up n=<messages> rooms=<rooms> more=<more> errors=<failed> t=<unix time>
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import aioxmpp
import aioxmpp.connector


async def main(args: argparse.Namespace) -> int:
    import minimix.xmpp  # noqa: F401  (applies every compat fix and fast path)
    from minimix.xmpp import compat, mam
    from minimix.xmpp.account import security_layer

    rooms = []
    with open(args.cursors_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                rooms.append((aioxmpp.JID.fromstr(parts[0]), (parts[1], float(parts[2]))))
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(args.jid),
        security_layer(args.password, args.ca_file),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    archives = mam.Archives(client)
    if args.read_raw:  # the router reads the results of the archives being queried
        compat.set_hooks(client.stream, compat.StreamHooks(archives=archives.queried, on_archived=archives.take))
    total = more_total = errors = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with client.connected():
        compat.set_nodelay(client)
        print(f"bare connected t={time.time():.6f}", flush=True)

        async def one(room: aioxmpp.JID, after: tuple[str, float]) -> None:
            nonlocal total, more_total, errors
            try:
                pages: list[int] = []
                found, more, streamed = await mam.catch_up(
                    archives, room, after, args.limit, True, on_page=lambda page: pages.append(len(page))
                )
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors += 1
                print(
                    f"bare catch-up failed room={room} error={exc!r}", file=sys.stderr, flush=True
                )
                return
            total += len(found) + streamed
            more_total += more

        await asyncio.gather(*(one(room, after) for room, after in rooms))
        print(
            f"bare caught up n={total} rooms={len(rooms)} more={more_total} errors={errors} "
            f"t={time.time():.6f}",
            flush=True,
        )
        await stop.wait()
    return 0


def connection_args(p: argparse.ArgumentParser) -> None:
    """How a bare client logs in: the same account and server as the daemon."""
    p.add_argument("--jid", required=True, help="full JID (with resource)")
    p.add_argument("--password", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca-file", required=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    connection_args(p)
    p.add_argument("--cursors-file", required=True, help="ROOM AFTER_ID AFTER_STAMP per line")
    p.add_argument("--limit", type=int, default=500, help="messages per room at most (catchup_max)")
    p.add_argument("--read-raw", action="store_true",
                   help="read the results as the daemon does (the router), not with aioxmpp's XSOs")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
