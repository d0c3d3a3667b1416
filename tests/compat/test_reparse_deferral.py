"""fixes.reparse_deferral: expat >= 2.6 holds back the end of a stanza that came in a read
of its own, until more data doubles what it holds."""

import xml.parsers.expat as pyexpat

import aioxmpp.xml
import pytest

from compat.streams import STREAM_HEADER, fed
from minimix.xmpp.compat.fixes import namespace_separator

START = b"<message from='room@muc.example.org/bob' type='groupchat' id='" + b"i" * 200
END = b"'><body>x</body></message>"


@pytest.mark.skipif(not hasattr(pyexpat.ParserCreate(), "SetReparseDeferralEnabled"),
                    reason="this Python's expat defers no reparsing (< 2.6): the defect cannot show")
def test_stock_parser_holds_back_the_end_of_a_stanza(monkeypatch):
    monkeypatch.setattr(aioxmpp.xml, "make_parser", namespace_separator._make_parser)  # without the fix
    got, _ = fed([STREAM_HEADER, START, END])
    assert got == []  # the message's last bytes wait for the next read


def test_a_stanza_is_read_by_the_feed_that_completes_it():
    (message,), _ = fed([STREAM_HEADER, START, END])
    assert (message.id_, message.body[None]) == ("i" * 200, "x")
