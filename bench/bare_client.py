"""The floor: a bare aioxmpp client that joins the same rooms as the daemon, with no logic.

Connect (STARTTLS, verified against ca_file, with minimix's aioxmpp compat fixes: without
them TLS verification cannot work with today's pyOpenSSL; --patches tls applies only that
one, --patches all, the default, every fix and fast path `import minimix.xmpp` applies), join every room listed in
ROOMS_FILE through aioxmpp.MUCClient with at most --concurrency joins in flight and
History(maxstanzas=0), then stay connected until SIGTERM/SIGINT and close the stream.
This follows /work/shared/reference/perf-floors (semaphore 50, TCP_NODELAY).

With --raw it skips MUCClient: it sends the join presences itself and waits for each
room's self-presence (status 110) in an inbound presence filter, keeping no room state;
a stricter floor (minimix also joins with raw presences).

Prints (stdout, one line each):
  bare connected t=<unix time>
  bare all joined n=<joined> errors=<failed> t=<unix time>
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import aioxmpp
import aioxmpp.connector
import aioxmpp.muc
import aioxmpp.muc.xso
import aioxmpp.security_layer

from bare_catchup import connection_args  # same directory; imports nothing more


def load_compat(patches: str) -> SimpleNamespace:
    """What a bare client needs of minimix's edge (security_layer, set_nodelay), with every
    fix and fast path applied ("all") or only the TLS hostname check ("tls": its modules are
    loaded from their files, so minimix.xmpp's compat.apply() never runs)."""
    if patches == "all":
        import minimix.xmpp  # noqa: F401  (applies every fix and fast path)
        from minimix.xmpp import account, compat

        return SimpleNamespace(security_layer=account.security_layer, set_nodelay=compat.set_nodelay)
    import minimix

    def load(relative: str) -> ModuleType:
        path = Path(minimix.__file__).parent / "xmpp" / relative
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # (dataclasses look it up)
        spec.loader.exec_module(module)
        return module

    load("compat/fixes/tls_hostname.py").apply()
    return SimpleNamespace(security_layer=load("account.py").security_layer,
                           set_nodelay=load("compat/fixes/tcp_nodelay.py").set_nodelay)


async def main(args: argparse.Namespace) -> int:
    compat = load_compat(args.patches)
    with open(args.rooms_file) as f:
        rooms = [line.strip() for line in f if line.strip()]
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(args.jid),
        compat.security_layer(args.password, args.ca_file),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    muc = None if args.raw else client.summon(aioxmpp.MUCClient)
    pending: dict[aioxmpp.JID, asyncio.Future] = {}

    def self_presence(presence: aioxmpp.Presence) -> aioxmpp.Presence | None:
        """--raw: resolve the join of the room a self-presence (or an error) comes from."""
        sender = presence.from_
        fut = pending.get(sender.bare()) if sender is not None else None
        if fut is None:
            return presence
        if not fut.done():
            user = presence.xep0045_muc_user
            if presence.type_ == aioxmpp.PresenceType.ERROR:
                fut.set_exception(RuntimeError(str(presence.error)))
            elif user is not None and 110 in {int(c) for c in user.status_codes}:
                fut.set_result(None)
        return None

    if args.raw:
        client.stream.app_inbound_presence_filter.register(self_presence, 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with client.connected():
        compat.set_nodelay(client)
        print(f"bare connected t={time.time():.6f}", flush=True)
        sem = asyncio.Semaphore(args.concurrency)
        errors = 0

        async def join(room: str) -> None:
            nonlocal errors
            async with sem:
                jid = aioxmpp.JID.fromstr(room)
                if muc is not None:
                    _, fut = muc.join(
                        jid,
                        args.nick,
                        history=aioxmpp.muc.xso.History(maxstanzas=0),
                        autorejoin=False,
                    )
                else:
                    fut = pending[jid] = loop.create_future()
                    presence = aioxmpp.Presence(
                        type_=aioxmpp.PresenceType.AVAILABLE, to=jid.replace(resource=args.nick)
                    )
                    presence.xep0045_muc = aioxmpp.muc.xso.GenericExt()
                    presence.xep0045_muc.history = aioxmpp.muc.xso.History(maxstanzas=0)
                    client.enqueue(presence)
                try:
                    await fut
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors += 1
                    print(
                        f"bare join failed room={room} error={exc!r}", file=sys.stderr, flush=True
                    )

        await asyncio.gather(*(join(r) for r in rooms))
        print(
            f"bare all joined n={len(rooms) - errors} errors={errors} t={time.time():.6f}",
            flush=True,
        )
        await stop.wait()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    connection_args(p)
    p.add_argument("--rooms-file", required=True, help="one bare room JID per line")
    p.add_argument("--nick", required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--raw", action="store_true", help="raw join presences instead of MUCClient")
    p.add_argument(
        "--patches",
        choices=("all", "tls"),
        default="all",
        help="minimix's aioxmpp compat fixes to apply (default all)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
