"""What aioxmpp and asyncio log: stream content, and noise at error level.

Defect (for a daemon): aioxmpp logs what it sends and receives, at debug level, under
whichever logger its caller gave: the raw bytes ("SENT %r", "RECV %r": message bodies,
bookmarks, the SASL exchange), stanzas and payloads as objects ("incoming iq: %r", a
bookmark list, "unhandleable IQ request … payload=%r" at warning), and the attribute value
its parser could not read (aioxmpp.xso.model).  The log pipeline hides bytes itself; here it
learns the rest, so that none of it is shown under any logger name, the probe's and the
doctor's streams included, unless the user asks for it ([logging] log_messages at debug).

Also noise: every clean TLS close by the server (a restart) makes asyncio log "Fatal read
error on STARTTLS transport" with a ZeroReturnError traceback at ERROR, and aioxmpp warns
about each failed connection attempt and refused resumption, which minimix reports itself,
once, in its own words.  A certificate that fails verification adds two asyncio tracebacks
("Fatal error on tls handshake", "Exception in callback …" from aioopenssl), a refused login
aioxmpp's "main failed" traceback, and a server that resets the connection while we close
it "Fatal error on tls shutdown": minimix's own line says what happened.  Stanzas still
queued when the daemon stops fail aioxmpp's futures for them ("Future exception was never
retrieved").  Those go to DEBUG.
Upstream: none filed (what a library logs at debug is its business; a daemon must filter).
Can go when: never, as long as aioxmpp logs stanzas (tests/compat/test_log_content.py:
test_stock_logs_show_what_bob_said).
"""

from __future__ import annotations

import asyncio
import logging

import aioxmpp.stream
import aioxmpp.xso
import OpenSSL.SSL

from minimix import logging as minimix_logging
from minimix.xmpp.compat.fixes.reconnect import FatalLoginError

_DEMOTED = ("connection failed: ", "failed to resume stream")
_TLS_NOISE = ("Fatal read error", "Fatal error on tls handshake", "Fatal error on tls shutdown", "Exception in callback")


class Demote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        exc = record.exc_info[1] if record.exc_info else None
        if (
            msg.startswith(_DEMOTED)
            or (msg.startswith(_TLS_NOISE) and isinstance(exc, OpenSSL.SSL.Error | asyncio.InvalidStateError))
            or (msg.startswith("main failed") and isinstance(exc, FatalLoginError))
            # stanzas still queued when the daemon stops: aioxmpp's futures for them fail
            # (IQs whose waiting task was cancelled by the stop: "stanza aborted")
            or (msg.startswith("Future exception was never retrieved")
                and (isinstance(exc, aioxmpp.stream.DestructionRequested | ConnectionError)
                     or (isinstance(exc, RuntimeError) and str(exc) == "stanza aborted")))
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def apply() -> None:
    minimix_logging.hide_content(aioxmpp.xso.XSO, loggers=["aioxmpp.xso.model"])
    for name in ("asyncio", "aioxmpp.client"):
        logging.getLogger(name).addFilter(Demote())
