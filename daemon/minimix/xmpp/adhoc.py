"""XEP-0050 ad-hoc commands: the chat commands as forms, for clients with buttons.

Every command is two steps: the first request gets a form (list-single fields where
there is a choice), the submitted form becomes the same core command as the chat line
would, and its answer comes back as the note of the completed command.  Only the
account's own other resources see or run them (``is_allowed``); anyone else gets an
empty command list and ``forbidden``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aioxmpp
import aioxmpp.adhoc.xso as adhoc_xso
import aioxmpp.errors
import aioxmpp.forms

from minimix.core import commands as C
from minimix.core.events import ClientCommand
from minimix.core.relay import Mode
from minimix.xmpp.xso import STANZA_MAX_BYTES, fitting

F = aioxmpp.forms
DEFAULT = "(this client's default)"
ANSWER_TIMEOUT_S = 10.0
SESSIONS = 256
KEYWORD_ACTIONS = ("add", "remove", "list")
# What an answer may hold (a stanza the server refuses costs the whole stream): a note, the
# text of an error, and the rooms offered as choices (beyond: the room is typed in).
NOTE_MAX_BYTES = STANZA_MAX_BYTES // 2
ERROR_TEXT_MAX_BYTES = 1_000
CHOICES_MAX_BYTES = STANZA_MAX_BYTES // 2


def _field(var: str, label: str, type_: Any, options: list[str] | None = None, value: str | None = None,
           required: bool = True) -> F.Field:
    field = F.Field(type_=type_, var=var, label=label)
    field.required = required
    if options is not None:
        field.options.update({o: o for o in options})
    if value is not None:
        field.values[:] = [value]
    return field


def _rooms_field(var: str, label: str, rooms: list[str], value: str | None = None) -> F.Field:
    """A choice of ``rooms``, or a text field where the choices would not fit in the answer
    (an account in thousands of rooms)."""
    if sum(2 * len(room.encode()) + 48 for room in rooms) <= CHOICES_MAX_BYTES:  # <option label=…><value>…
        return _field(var, label, F.FieldType.LIST_SINGLE, rooms, value)
    return _field(var, f"{label} (its address)", F.FieldType.TEXT_SINGLE, value=value)


def _values(form: F.Data) -> dict[str, str]:
    return {f.var: (f.values[0] if f.values else "") for f in form.fields if f.var}


class AdhocCommands:
    """The command nodes, registered on aioxmpp's AdHocServer."""

    def __init__(
        self,
        client: aioxmpp.Client,
        post: Callable[[object], None],
        rooms: Callable[[], list[str]],
        is_own_client: Callable[[aioxmpp.JID], bool],
    ) -> None:
        self._post = post
        self._rooms = rooms
        self._sessions: OrderedDict[str, str] = OrderedDict()  # sessionid → node
        server = client.summon(aioxmpp.AdHocServer)
        self.nodes: dict[str, tuple[str, Callable[[], list[F.Field]] | None, Callable[[dict[str, str]], C.Command]]] = {
            "relay": ("Relay: what this client gets", self._relay_form, self._relay),
            "keywords": ("Keywords that count as a mention", self._keywords_form, self._keywords),
            "join": ("Join a room (bookmark it)", self._join_form, lambda v: C.Join(v["room"], v.get("nick") or None)),
            "leave": ("Leave a room (autojoin off)", self._room_form, lambda v: C.Leave(v["room"])),
            "nick": ("Change your nick in a room", self._nick_form, lambda v: C.Nick(v["room"], v["nick"])),
            "say": ("Say something in a room", self._say_form, lambda v: C.Say(v["room"], v["text"])),
            "rooms": ("Rooms and their state", None, lambda v: C.Rooms()),
            "status": ("Status", None, lambda v: C.Status()),
        }
        for node, (name, _, _) in self.nodes.items():
            server.register_stateless_command(
                node, name, self._handler(node), is_allowed=is_own_client
            )

    # -- forms ----------------------------------------------------------------------------

    def _relay_form(self) -> list[F.Field]:
        return [
            _field("mode", "Relay", F.FieldType.LIST_SINGLE, [m.value for m in Mode], "mentions"),
            _rooms_field("room", "Room", [DEFAULT, *self._rooms()], DEFAULT),
        ]

    def _relay(self, values: dict[str, str]) -> C.Command:
        room = values.get("room") or DEFAULT
        return C.Relay(Mode(values["mode"]), None if room == DEFAULT else room)

    def _keywords_form(self) -> list[F.Field]:
        return [
            _field("action", "Action", F.FieldType.LIST_SINGLE, list(KEYWORD_ACTIONS), "add"),
            _field("word", "Word", F.FieldType.TEXT_SINGLE, required=False),
        ]

    def _keywords(self, values: dict[str, str]) -> C.Command:
        action = values.get("action") or "list"
        if action not in KEYWORD_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(KEYWORD_ACTIONS)}, not {action[:40]!r}")
        word = values.get("word", "").strip()
        return C.Keywords("list") if action == "list" or not word else C.Keywords(action, word)

    def _join_form(self) -> list[F.Field]:
        return [
            _field("room", "Room address", F.FieldType.TEXT_SINGLE),
            _field("nick", "Nick (empty: your default)", F.FieldType.TEXT_SINGLE, required=False),
        ]

    def _room_form(self) -> list[F.Field]:
        return [_rooms_field("room", "Room", self._rooms())]

    def _nick_form(self) -> list[F.Field]:
        return [*self._room_form(), _field("nick", "New nick", F.FieldType.TEXT_SINGLE)]

    def _say_form(self) -> list[F.Field]:
        return [*self._room_form(), _field("text", "Text", F.FieldType.TEXT_SINGLE)]

    # -- the protocol -----------------------------------------------------------------------

    def _handler(self, node: str) -> Callable[[aioxmpp.IQ], Any]:
        async def handle(iq: aioxmpp.IQ) -> adhoc_xso.Command:
            request: adhoc_xso.Command = iq.payload
            name, form_fields, build = self.nodes[node]
            if request.action == adhoc_xso.ActionType.CANCEL:
                self._sessions.pop(request.sessionid or "", None)
                return adhoc_xso.Command(node, status=adhoc_xso.CommandStatus.CANCELED, sessionid=request.sessionid)
            submitted = request.first_payload
            if form_fields is not None and (submitted is None or request.sessionid not in self._sessions):
                return self._ask(node, name, form_fields())
            self._sessions.pop(request.sessionid or "", None)
            try:
                command = build(_values(submitted) if submitted is not None else {})
            except (KeyError, ValueError) as exc:
                raise aioxmpp.errors.XMPPModifyError(
                    aioxmpp.ErrorCondition.BAD_REQUEST, text=fitting(f"bad form: {exc}", ERROR_TEXT_MAX_BYTES)
                ) from None
            text = await self._run(iq.from_, command)
            return adhoc_xso.Command(
                node,
                status=adhoc_xso.CommandStatus.COMPLETED,
                sessionid=request.sessionid,
                notes=[adhoc_xso.Note(adhoc_xso.NoteType.INFO, fitting(text, NOTE_MAX_BYTES))],
            )

        return handle

    def _ask(self, node: str, title: str, fields: list[F.Field]) -> adhoc_xso.Command:
        sessionid = secrets.token_hex(8)
        self._sessions[sessionid] = node
        while len(self._sessions) > SESSIONS:
            self._sessions.popitem(last=False)
        form = F.Data(F.DataType.FORM)
        form.title = title
        form.fields.extend(fields)
        actions = adhoc_xso.Actions()
        actions.complete_is_allowed = True
        actions.execute = adhoc_xso.ActionType.COMPLETE
        return adhoc_xso.Command(
            node, status=adhoc_xso.CommandStatus.EXECUTING, sessionid=sessionid, payload=[form], actions=actions
        )

    async def _run(self, peer: aioxmpp.JID, command: C.Command) -> str:
        """Hand the command to the app's loop and wait for the core's answer."""
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._post(ClientCommand(peer.resource or "", command, answer))
        try:
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise aioxmpp.errors.XMPPWaitError(aioxmpp.ErrorCondition.RESOURCE_CONSTRAINT, text="no answer in time") from None
