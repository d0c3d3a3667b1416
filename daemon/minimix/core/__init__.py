"""The pure core of minimix: facts in, decisions out.

Nothing in this package does I/O, reads a clock or imports aioxmpp, asyncio,
apscheduler, structlog, sqlite3 or sockets.  Callers pass ``now`` (seconds since
the epoch, a float) and a :class:`random.Random` where jitter is needed; the core
returns :mod:`~minimix.core.actions` for the edge to carry out.
"""
