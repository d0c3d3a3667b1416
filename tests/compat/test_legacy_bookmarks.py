"""fixes.legacy_bookmarks: one malformed XEP-0048 bookmark costs every legacy bookmark."""

import io

import aioxmpp.bookmarks.xso as legacy_xso
import aioxmpp.xml
import aioxmpp.xso
import pytest

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.compat.fixes.legacy_bookmarks import legacy_descriptor

LEGACY = (
    b"<storage xmlns='storage:bookmarks'>"
    b"<conference jid='ok@conference.localhost' autojoin='true'><nick>al</nick></conference>"
    b"<conference jid='other@conference.localhost' autojoin='yes'/>"
    b"<conference autojoin='1'/>"
    b"</storage>"
)


def parse_legacy():
    return aioxmpp.xml.read_single_xso(io.BytesIO(LEGACY), legacy_xso.Storage)


def test_one_malformed_legacy_bookmark_does_not_lose_the_others():
    storage = parse_legacy()
    assert [(c.jid, c.autojoin) for c in storage.bookmarks] == [
        ("ok@conference.localhost", "true"),
        ("other@conference.localhost", "yes"),
        (None, "1"),
    ]


def test_stock_legacy_parsing_fails_on_one_bad_bookmark():
    autojoin, jid = legacy_descriptor("autojoin"), legacy_descriptor("jid")
    saved = [(d, d.type_, d.default) for d in (autojoin, jid)]
    autojoin.type_, autojoin.default = aioxmpp.xso.Bool(), False  # as in aioxmpp 0.13.3
    jid.type_, jid.default = aioxmpp.xso.JID(), aioxmpp.xso.model._PropBase.NO_DEFAULT
    try:
        with pytest.raises(ValueError):
            parse_legacy()
    finally:
        for descriptor, type_, default in saved:
            descriptor.type_, descriptor.default = type_, default
    assert parse_legacy() is not None
