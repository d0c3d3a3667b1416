"""xml:lang='', which fails the stanza or child it is on.

Defect: aioxmpp's LanguageTag refuses an empty xml:lang, which is XML's way to say "no
language" (XML 1.0 §2.12).  On a stanza it fails the stanza (an IQ goes unanswered); on a
child, the child (a <body xml:lang=''/> lost its text).  It reads as none.
Upstream: none filed.
Can go when: aioxmpp reads xml:lang='' as no language (tests/compat/test_empty_lang.py:
test_stock_empty_language_fails_the_stanza fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp.xso

_orig_lang_parse = aioxmpp.xso.LanguageTag.parse


def _lang_parse(self: Any, value: str) -> Any:
    return _orig_lang_parse(self, value) if value else None


def apply() -> None:
    aioxmpp.xso.LanguageTag.parse = _lang_parse
