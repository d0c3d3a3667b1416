"""Expat holding back the end of a stanza (Python 3.13, expat >= 2.6).

Defect: since expat 2.6.0 (CVE-2023-52425 "reparse deferral") a parser that stopped at an
incomplete token looks at it again only once the data after it has doubled.  For a stream
that is the wrong trade: the end of a stanza that came in a read of its own waits for later
reads (the next stanza, a keepalive minutes later), and its kept text (fastpath.kept_text)
is no longer held by then.  Python 3.13 has it (its own expat 2.6.3, Debian 13's 2.9.0: 46
tests of `make unit` failed there); Python 3.11 and 3.12 built with expat 2.5 do not.  The
stream's parser reads every feed as far as it goes, as before 2.6.0.  What that costs, a
token that arrives in many small reads parsed again from its start on each, stays within
what the server lets through as one stanza (Prosody: 256 KiB).
Upstream: none filed.
Can go when: aioxmpp turns deferral off for its stream parser
(tests/compat/test_reparse_deferral.py: test_stock_parser_holds_back_the_end_of_a_stanza
fails; it is skipped where expat has no deferral).
Applied after namespace_separator: it wraps the make_parser that one installs.
"""

from __future__ import annotations

from typing import Any

import aioxmpp.xml


def read_each_feed_whole(expat: Any) -> None:
    if hasattr(expat, "SetReparseDeferralEnabled"):  # Python >= 3.13, 3.12.3, 3.11.9
        expat.SetReparseDeferralEnabled(False)


def apply() -> None:
    make_parser = aioxmpp.xml.make_parser

    def _make_parser() -> Any:
        reader = make_parser()
        reset = reader.reset

        def reset_reading_whole() -> None:  # xml.sax builds the expat parser here, at the first feed
            reset()
            read_each_feed_whole(reader._parser)

        reader.reset = reset_reading_whole
        return reader

    aioxmpp.xml.make_parser = _make_parser
