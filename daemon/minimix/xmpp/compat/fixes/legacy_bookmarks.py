"""One malformed XEP-0048 bookmark, which costs every legacy bookmark.

Defect: aioxmpp's XEP-0048 XSO parses autojoin as a strict xs:boolean and jid as a required
JID, so one malformed legacy bookmark (autojoin="yes", a bad JID, a missing jid: all stored
as they are by servers) makes the whole private-XML response unparseable and every legacy
bookmark is lost.  They are read as strings; the core validates each bookmark on its own
and skips only the bad one.
Upstream: none filed.
Can go when: aioxmpp reads each bookmark leniently (tests/compat/test_legacy_bookmarks.py:
test_stock_legacy_parsing_fails_on_one_bad_bookmark fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp.bookmarks.xso
import aioxmpp.xso


def legacy_descriptor(name: str) -> Any:
    """The descriptor itself (class attribute access gives a query wrapper around it)."""
    return getattr(aioxmpp.bookmarks.xso.Conference, name).xq_descriptor


def apply() -> None:
    for name in ("autojoin", "jid"):
        descriptor = legacy_descriptor(name)
        descriptor.type_ = aioxmpp.xso.String()
        descriptor.default = None
