"""fastpath.memo: JID preparation and XML name checks, computed once per distinct input
where stock aioxmpp computes them for every stanza."""

import io

import aioxmpp
import aioxmpp.structs
import aioxmpp.xml
import pytest

from compat import streams  # noqa: F401  (applies the fast paths)
from minimix.xmpp.compat.fastpath import memo

NICK_JID = "Room@Conference.Example.org/Ünïcode Nick"


def counted(function):
    calls: list[tuple] = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return wrapper, calls


def a_message() -> aioxmpp.Message:
    message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("a@b/c"))
    message.body[None] = "hi"
    return message


def test_stock_prepares_the_same_jid_every_time(monkeypatch):
    prep, calls = counted(memo._orig_prep["resourceprep"])
    monkeypatch.setattr(aioxmpp.structs, "resourceprep", prep)
    for _ in range(3):
        memo._orig_jid_fromstr(aioxmpp.JID, NICK_JID)
    assert len(calls) == 3


def test_jid_preparation_is_memoised():
    for name in memo.PREP_FUNCTIONS:
        assert hasattr(getattr(aioxmpp.structs, name), "cache_info"), name
    aioxmpp.structs.resourceprep.cache_clear()
    memo.jid_from_string.cache_clear()
    for _ in range(3):
        jid = aioxmpp.JID.fromstr(NICK_JID)
    assert aioxmpp.JID.fromstr(NICK_JID, strict=False) == jid
    info = aioxmpp.structs.resourceprep.cache_info()
    assert (info.misses, info.hits) == (2, 0)  # once per strictness: the JID is reused after
    info = memo.jid_from_string.cache_info()
    assert (info.misses, info.hits) == (2, 2)
    assert jid == aioxmpp.JID("room", "conference.example.org", "Ünïcode Nick")
    assert aioxmpp.JID.fromstr("a@b/c") is aioxmpp.JID.fromstr("a@b/c")
    with pytest.raises(ValueError):  # errors are still errors (and not cached as results)
        aioxmpp.JID.fromstr("a@b/\u0000")


def test_stock_checks_every_name_of_every_stanza(monkeypatch):
    check, calls = counted(memo._orig_xml_name_check)
    monkeypatch.setattr(aioxmpp.xml, "xmlValidateNameValue_str", check)
    aioxmpp.xml.serialize_single_xso(a_message())
    once = len(calls)
    for _ in range(2):
        aioxmpp.xml.serialize_single_xso(a_message())
    assert once > 0 and len(calls) == 3 * once


def test_xml_name_validation_is_memoised_and_still_validates():
    check = aioxmpp.xml.xmlValidateNameValue_str
    assert hasattr(check, "cache_info")
    check.cache_clear()
    for _ in range(3):
        aioxmpp.xml.serialize_single_xso(a_message())
    info = check.cache_info()
    assert info.hits > info.misses > 0  # the second and third time: from the cache
    for name, valid in [("message", True), ("x-y.z_1", True), ("1abc", False), ("a b", False), ("", False)]:
        assert check(name) is valid, name
    generator = aioxmpp.xml.XMPPXMLGenerator(io.BytesIO(), short_empty_elements=True)
    generator.startDocument()
    with pytest.raises(ValueError):
        generator.startElementNS(("urn:x", "bad name"), None, {})
