"""XEP-0461 replies from the user's clients: the quote fallback (XEP-0428) cut off, and a
range that makes no sense never garbling the text nor losing the message."""

from __future__ import annotations

import io

import aioxmpp
import aioxmpp.xml
import pytest

import minimix.xmpp  # noqa: F401  (patches and XSOs)
from minimix.xmpp.xso import NS_REPLY, strip_fallback


def reply(body: str, *ranges: tuple[str | None, str | None]) -> aioxmpp.Message:
    bodies = "".join(
        "<body" + (f" start='{s}'" if s is not None else "") + (f" end='{e}'" if e is not None else "") + "/>"
        for s, e in ranges
    )
    xml = (
        f"<message xmlns='jabber:client' type='chat' id='r1'><body>{body}</body>"
        f"<reply xmlns='{NS_REPLY}' id='mmx-1'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_REPLY}'>{bodies}</fallback></message>"
    )
    return aioxmpp.xml.read_single_xso(io.BytesIO(xml.encode()), aioxmpp.Message)


def stripped(body: str, *ranges) -> str:
    return strip_fallback(body, reply(body, *ranges), NS_REPLY)


def test_the_quote_is_cut_off():
    assert stripped("> bob: lunch?\nyes!", ("0", "14")) == "yes!"


def test_a_reply_that_is_all_quote_leaves_nothing():
    assert stripped("> bob: lunch?", ("0", "13")) == ""


@pytest.mark.parametrize(
    "bad",
    [("3", "1"), ("x", "2"), ("0", "99"), ("-1", "2"), ("1", "")],
)
def test_a_range_that_makes_no_sense_leaves_the_text_whole(bad):
    """A backwards range once doubled part of the text ("shohort"); one that is not two
    numbers made aioxmpp drop the whole message, with no answer."""
    assert stripped("short", bad) == "short"


def test_an_open_range_runs_to_the_end():
    assert stripped("> quoted", ("0", None)) == ""
