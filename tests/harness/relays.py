"""Reading what the daemon sent one of the user's clients: relays and plain answers.

A relay is a chat message from the daemon's full JID with a readable fallback body
("[room] nick: text") and the room's original message forwarded whole
(``<forwarded><delay/><message/></forwarded>``). These readers never require the
``<forwarded/>`` part, so a relay that lost it is still counted (and can be checked).
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .stanzas import NS, el_of
from .wait import wait_until

_BODY = re.compile(
    r"^\[(?P<label>[^\]]*)\] (?P<nick>.*?)(?P<private> \(private\))?: (?P<text>.*)$", re.S
)


@dataclass(frozen=True)
class RelayRecord:
    """One relay as a client received it."""

    stanza: object  # the slixmpp message
    id: str
    body: str  # the fallback body: "[label] nick: text"
    label: str | None
    nick: str | None
    text: str | None  # what the room message said (from the fallback body)
    inner: ET.Element | None  # the forwarded original, if any
    delay: dt.datetime | None  # the <delay/> of the <forwarded/>, if any

    def stanza_id(self, by: str) -> str | None:
        """The XEP-0359 id the room (`by`) gave the forwarded original, if it carries one."""
        if self.inner is None:
            return None
        for sid in self.inner.findall("sid:stanza-id", NS):
            if sid.get("by") == by:
                return sid.get("id")
        return None

    @property
    def inner_body(self) -> str | None:
        return None if self.inner is None else self.inner.findtext("client:body", namespaces=NS)


def parse_stamp(stamp: str | None) -> dt.datetime | None:
    """An XEP-0082 date-time ("2026-01-02T03:04:05.678Z", with or without fraction)."""
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def is_relay(m, daemon_jid: str) -> bool:
    x = el_of(m)
    if str(m["from"]) != daemon_jid or m["type"] != "chat":
        return False
    if x.find("forward:forwarded", NS) is not None:
        return True
    return any(f.get("for") == NS["forward"] for f in x.findall("fallback:fallback", NS))


def is_answer(m, daemon_jid: str) -> bool:
    """A chat message from the daemon that is not a relay (a command's answer, a notice)."""
    return str(m["from"]) == daemon_jid and m["type"] == "chat" and not is_relay(m, daemon_jid)


def relay_record(m) -> RelayRecord:
    x = el_of(m)
    body = m["body"]
    parsed = _BODY.match(body or "")
    fwd = x.find("forward:forwarded", NS)
    inner = fwd.find("client:message", NS) if fwd is not None else None
    delay = fwd.find("delay:delay", NS) if fwd is not None else None
    return RelayRecord(
        stanza=m,
        id=m["id"],
        body=body,
        label=parsed["label"] if parsed else None,
        nick=parsed["nick"] if parsed else None,
        text=parsed["text"] if parsed else None,
        inner=inner,
        delay=parse_stamp(delay.get("stamp")) if delay is not None else None,
    )


def relays_to(c, daemon_jid: str, since: int = 0) -> list[RelayRecord]:
    """Every relay `c` received (from index `since` of c.messages), in order."""
    return [relay_record(m) for m in list(c.messages[since:]) if is_relay(m, daemon_jid)]


def answers_to(c, daemon_jid: str, since: int = 0) -> list[str]:
    """The bodies of the daemon's other chat messages to `c` (answers, notices), in order."""
    return [m["body"] for m in list(c.messages[since:]) if is_answer(m, daemon_jid)]


@dataclass(frozen=True)
class Tally:
    """Received against expected: what came twice, what never came, what was not expected."""

    expected: int
    received: int
    duplicates: dict[str, int]  # text -> times received (> 1)
    gaps: list[str]  # expected, never received
    unexpected: list[str]  # received, not expected
    in_order: bool  # the first copy of each expected text came in the expected order

    @property
    def exact(self) -> bool:
        return not self.duplicates and not self.gaps and not self.unexpected and self.in_order

    def summary(self) -> str:
        dups = sum(n - 1 for n in self.duplicates.values())
        return (
            f"{self.received} received / {self.expected} expected: {dups} duplicates, "
            f"{len(self.gaps)} gaps, {len(self.unexpected)} unexpected, "
            f"{'in order' if self.in_order else 'OUT OF ORDER'}"
        )


def tally(received: Iterable[str | None], expected: list[str]) -> Tally:
    received = [r for r in received if r is not None]
    counts = Counter(received)
    wanted = set(expected)
    firsts = []
    for text in received:
        if text in wanted and text not in firsts:
            firsts.append(text)
    return Tally(
        expected=len(expected),
        received=len(received),
        duplicates={t: n for t, n in counts.items() if n > 1},
        gaps=[t for t in expected if t not in counts],
        unexpected=[t for t in counts if t not in wanted],
        in_order=firsts == [t for t in expected if t in counts],
    )


# -- with a conftest User (user.full_jid, user.bob) ------------------------------------------


def texts(user, c, since: int = 0) -> list[str | None]:
    """What the room messages relayed to `c` said, in order (from the fallback bodies)."""
    return [r.text for r in relays_to(c, user.full_jid, since)]


def wait_text(user, c, text: str, since: int = 0, timeout: float | None = None) -> RelayRecord:
    """The relay to `c` of the room message saying `text`."""
    return wait_until(
        lambda: next((r for r in relays_to(c, user.full_jid, since) if r.text == text), None),
        timeout,
        message=lambda: (
            f"{c.jid} never got a relay of {text!r}; the last ones: {texts(user, c, since)[-10:]}"
        ),
    )


def post(user, room: str, said: list[str]) -> dict[str, str | None]:
    """Bob says each text in `room`; once the room echoed the last one:
    {text: the stanza-id the room gave it}."""
    mark = len(user.bob.messages)
    for text in said:
        user.bob.say(room, text)
    user.bob.wait_groupchat(room, said[-1], since=mark)
    ids: dict[str, str | None] = {}
    for m in list(user.bob.messages[mark:]):
        if m["type"] == "groupchat" and m["body"] in said:
            sid = next(
                (s for s in el_of(m).findall("sid:stanza-id", NS) if s.get("by") == room), None
            )
            ids[m["body"]] = sid.get("id") if sid is not None else None
    return ids
