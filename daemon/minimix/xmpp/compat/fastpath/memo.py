"""Pure functions aioxmpp runs on every stanza, memoised: JID preparation and XML names.

Cost: aioxmpp runs nodeprep/nameprep/resourceprep (pure Python stringprep) for every JID of
every stanza, the same few hundred JIDs over and over: 23–37 % of the CPU of joining rooms
and of relaying (profiled; bench/README, Profiles).  And the JID itself (immutable), which
even from prepared parts costs ~10 us to build: three per room message (from, to, the
stanza-id's by), a tenth of parsing one.  And aioxmpp's XMPPXMLGenerator checks every
element, attribute and prefix name it writes character by character against the XML name
ranges (xmlValidateNameValue_str, nested generators): 24 % of the daemon's CPU while
relaying.  All three are pure functions of their arguments, over a small set of values:
memoised, bounded (a forwarded original may carry any names, a room any nicks).
Test: tests/compat/test_memo.py (each computed once per distinct input where stock
aioxmpp computes it every time).
"""

from __future__ import annotations

import functools

import aioxmpp
import aioxmpp.structs
import aioxmpp.xml

STRINGPREP_CACHE = 16384
XML_NAME_CACHE = 4096
PREP_FUNCTIONS = ("nodeprep", "nameprep", "resourceprep")
_orig_prep = {name: getattr(aioxmpp.structs, name) for name in PREP_FUNCTIONS}
_orig_jid_fromstr = aioxmpp.structs.JID.fromstr.__func__
_orig_xml_name_check = aioxmpp.xml.xmlValidateNameValue_str


@functools.lru_cache(maxsize=STRINGPREP_CACHE)
def jid_from_string(cls: type, s: str, strict: bool) -> aioxmpp.JID:
    return _orig_jid_fromstr(cls, s, strict=strict)


def _jid_fromstr(cls: type, s: str, *, strict: bool = True) -> aioxmpp.JID:
    return jid_from_string(cls, s, strict)


def apply() -> None:
    for name, original in _orig_prep.items():
        setattr(aioxmpp.structs, name, functools.lru_cache(maxsize=STRINGPREP_CACHE)(original))
    aioxmpp.structs.JID.fromstr = classmethod(_jid_fromstr)
    aioxmpp.xml.xmlValidateNameValue_str = functools.lru_cache(maxsize=XML_NAME_CACHE)(_orig_xml_name_check)
