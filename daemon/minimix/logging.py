"""Logging: one event per line, ``event key=value …``, for journald or for a terminal.

All logging goes through one pipeline: minimix's own structlog loggers hand their events to
the standard library, and a single :class:`structlog.stdlib.ProcessorFormatter` on the root
handler renders them together with the records of other libraries (aioxmpp, apscheduler,
asyncio).

- Under systemd (the stream is no terminal) each line starts with its sd-daemon priority
  ``<N>`` so ``journalctl -p warning`` works, carries no timestamp (journald adds one), and
  stays one line: newlines inside values, tracebacks included, are written as ``\\n``.
- On a terminal, structlog's coloured console output with timestamps.

Every control character (C0, DEL, C1, U+2028/U+2029), every bidi override or isolate and
every backslash is written as an escape (``\\r``, ``\\x85``, ``\\u202e``, ``\\\\``), in
events, keys and values, in both modes: what someone else wrote (a kick reason) can neither
break a line nor make a terminal show it as something else.

Secrets never reach the output, at any level: values of keys named like ``password`` or
``secret`` are masked, and every string registered with :func:`add_secret` is replaced by
``***`` wherever it shows up — in events, values, tracebacks and other libraries' messages,
also base64-encoded inside a longer payload such as a SASL PLAIN ``<auth/>``. The content of
XML ``<password>`` elements and of SASL elements (``<auth/>``, ``<response/>``…) is masked too.

Other people's words stay out as well: the stream content other libraries log (the bytes
aioxmpp sends and receives, stanzas and payloads as objects) is shown only as its kind and
size, ``<312 bytes>``, ``<Message>`` — see :func:`hide_content` — unless ``log_messages`` is
set *and* the level is debug.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

Mode = Literal["auto", "journal", "console"]

REDACTED = "***"
ROOT_LOGGER = "minimix"
LIBRARY_LEVEL = logging.WARNING
"""Least severe level shown from other libraries, unless the level is debug."""

_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""sd-daemon(3) priority of each level; ``<N>`` at the start of a line sets it in journald."""
_SECRET_KEY = re.compile(r"(^|_)(password|passwd|passphrase|secret|token)$", re.IGNORECASE)
_PASSWORD_ELEMENT = re.compile(r"(<password(?:\s[^>]*)?>)[^<]+(</password>)")
# SASL (RFC 6120 6.4): what the client sends carries the password (PLAIN: in base64, where a
# short one cannot be found), what the server sends is no business of the log either. Up to
# the next tag or the end: a dump cut in the middle of an element is masked too.
_SASL_ELEMENT = re.compile(r"(<(?:\w+:)?(?:auth|response|challenge|success)\b[^<>]*>)[^<]+")

_handler: logging.Handler | None = None


def setup(
    level: str = "info",
    stream: TextIO | None = None,
    mode: Mode = "auto",
    env: Mapping[str, str] = os.environ,
    log_messages: bool = False,
) -> None:
    """Send all logging to *stream* (default: ``sys.stdout``) at *level* and above.

    *mode* ``auto`` picks ``console`` on a terminal, else ``journal``. (``$JOURNAL_STREAM``
    would add nothing: the stream journald reads is a socket, never a terminal, and the variable
    is inherited by terminals started from user services, such as gnome-terminal-server.)
    Other libraries log at warning and above unless *level* is ``debug``; the stream content
    they log is shown only if *log_messages* is set too. Calling it again replaces the previous
    setup.
    """
    global _handler
    threshold = _threshold(level)
    stream = stream or sys.stdout
    if mode == "auto":
        mode = "console" if stream.isatty() else "journal"

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: a logger bound before setup() would keep the old configuration.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(mode, colors=stream.isatty() and "NO_COLOR" not in env))
    handler.addFilter(_hide_stream_content)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    _apply_level(threshold, log_messages)
    logging.captureWarnings(True)


def set_level(level: str, log_messages: bool = False) -> None:
    """Change the level (and *log_messages*) of a running setup (a reload)."""
    _apply_level(_threshold(level), log_messages)


def _threshold(level: str) -> int:
    if level not in _PRIORITIES:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_PRIORITIES)}")
    return logging.getLevelNamesMapping()[level.upper()]


def _apply_level(threshold: int, log_messages: bool) -> None:
    global _show_content
    logging.getLogger().setLevel(threshold if threshold <= logging.DEBUG else max(threshold, LIBRARY_LEVEL))
    logging.getLogger(ROOT_LOGGER).setLevel(threshold)
    _show_content = log_messages and threshold <= logging.DEBUG


def reset() -> None:
    """Undo :func:`setup` (for tests): stdlib and structlog defaults again. Secrets stay."""
    global _handler, _show_content
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT_LOGGER).setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    structlog.reset_defaults()
    _show_content = False


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structured logger; *name* defaults to ``minimix`` (pass ``__name__`` in modules)."""
    return structlog.stdlib.get_logger(name or ROOT_LOGGER)


def _formatter(mode: Mode, *, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    console = mode == "console"
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars],
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            *(
                [structlog.processors.TimeStamper("%Y-%m-%d %H:%M:%S", utc=False)]
                if console
                else []
            ),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            mask_secret_fields,
            redact_secrets,
            *(
                [escape_for_console, structlog.dev.ConsoleRenderer(colors=colors)]
                if console
                else [render_journal]
            ),
        ],
    )


# --- stream content ---------------------------------------------------------------------------

_show_content = False
"""``[logging] log_messages`` at debug level: stream content is shown as it is."""
_content_types: tuple[type, ...] = (bytes, bytearray, memoryview)
_content_loggers: frozenset[str] = frozenset()
_CONTAINER_DEPTH = 3  # a stanza inside a list inside a dict… deeper than that: the lot is hidden


def hide_content(*types: type, loggers: Iterable[str] = ()) -> None:
    """Never show values of *types* (stanzas: what others wrote, room passwords) in log records,
    nor any text argument of the records of *loggers* (a library's parser reporting what it
    could not read), unless ``log_messages`` is set at debug level. Bytes are always hidden:
    the only bytes libraries log are those of the stream. The message stays, with
    ``<Message>`` or ``<312 bytes>`` in place of each such value."""
    global _content_types, _content_loggers
    _content_types = tuple(dict.fromkeys((*_content_types, *types)))
    _content_loggers = _content_loggers | frozenset(loggers)


class _Hidden:
    """What a record shows in place of a hidden value, with ``%s`` and ``%r`` alike."""

    def __init__(self, value: object) -> None:
        if isinstance(value, bytes | bytearray | memoryview):
            self.text = f"<{len(value)} bytes>"
        elif isinstance(value, str):
            self.text = f"<{len(value)} characters>"
        else:
            self.text = f"<{type(value).__name__}>"

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def _hidden(value: object, text_too: bool, depth: int = 0) -> object:
    """*value*, or a copy of it, with the stream content in it replaced by :class:`_Hidden`."""
    if isinstance(value, _content_types) or (text_too and isinstance(value, str)):
        return _Hidden(value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        if depth >= _CONTAINER_DEPTH:
            return _Hidden(value)
        if isinstance(value, dict):
            items = {k: _hidden(v, text_too, depth + 1) for k, v in value.items()}
            changed = any(items[k] is not v for k, v in value.items())
            return items if changed else value
        elements = [_hidden(v, text_too, depth + 1) for v in value]
        if all(new is old for new, old in zip(elements, value, strict=True)):
            return value
        return elements if isinstance(value, list) else tuple(elements)
    return value


def _hide_stream_content(record: logging.LogRecord) -> bool:
    """The handler's filter: hide the stream content in *record* (see :func:`hide_content`)."""
    if _show_content:
        return True
    text_too = record.name in _content_loggers
    if not isinstance(record.msg, str):  # an object, or structlog's event dict
        record.msg = _hidden(record.msg, False)
    if record.args:
        record.args = _hidden(record.args, text_too)  # a tuple, or one mapping
    if text_too and record.exc_info and record.exc_info[1] is not None:
        # A parser's exception quotes what it could not parse ("invalid literal … 'text'").
        record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__})"
        record.exc_info, record.exc_text = None, None
    return True


# --- secrets --------------------------------------------------------------------------------


class _Secrets:
    """The strings to redact, as one regular expression."""

    def __init__(self) -> None:
        self._strings: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, strings: Iterable[str]) -> None:
        self._strings.update(s for s in strings if s)
        self._pattern = _alternatives(self._strings)

    def redact(self, text: str) -> str:
        if "<" in text:  # most values have no XML: spare them two scans
            text = _PASSWORD_ELEMENT.sub(rf"\1{REDACTED}\2", text)
            text = _SASL_ELEMENT.sub(rf"\1{REDACTED}", text)
        return self._pattern.sub(REDACTED, text) if self._pattern else text


def _alternatives(strings: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret containing another is redacted whole.
    ordered = sorted(strings, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


_secrets = _Secrets()


MIN_REDACTED = 8  # characters: a shorter secret is a common word, or part of every word


def add_secret(value: str) -> None:
    """Never log *value*, nor its base64 encoding inside a longer base64 payload.

    A secret shorter than :data:`MIN_REDACTED` is left in free text: replacing every "x" or
    every "failed" mangles the whole log and gives the secret away by where the stars are.
    (minimix never logs a password itself; fields named like one are masked whatever their
    value, and so is any ``<password/>`` element.)"""
    if len(value) >= MIN_REDACTED:
        _secrets.add([value, *base64_fragments(value.encode())])


def base64_fragments(secret: bytes) -> set[str]:
    """The text that encodes *secret* in any base64 payload containing it.

    Each base64 character stands for 6 bits, so how *secret* is encoded depends on its byte
    offset in the payload modulo 3 (SASL PLAIN's ``authzid NUL user NUL password`` may put it
    anywhere). For each of the three offsets, keep the characters made of the secret's bits
    only: they do not depend on the bytes around it. (The character at each end that mixes
    in outside bits keeps at most 4 bits of the secret visible.) Fragments shorter than 4
    characters, from secrets shorter than 4 bytes, are left out: they would mask common text.
    """
    fragments = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode("ascii")
        first = -(-8 * offset // 6)  # ceil: the first character after the preceding bits
        end = 8 * (offset + len(secret)) // 6  # floor: the characters before trailing bits
        fragments.add(encoded[first:end])
    return {fragment for fragment in fragments if len(fragment) >= 4}


def redact(text: str, secrets: Iterable[str]) -> str:
    """*text* without any of *secrets*, whatever their length, nor their base64.

    For text known to come from where a secret does (a password command's stderr): there,
    even a one-letter password is the password, not a common word."""
    pattern = _alternatives({f for s in secrets if s for f in (s, *base64_fragments(s.encode()))})
    return pattern.sub(REDACTED, text) if pattern else text


def mask_secret_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask the values of keys named like ``password``, ``room_password``, ``secret``…"""
    for key, value in event_dict.items():
        if value is not None and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
    return event_dict


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace registered secrets in every value (the event and any exception included).

    It runs before rendering, which may escape characters of a secret; a value that is no
    string is replaced by its redacted ``str()`` only if that contains a secret."""
    for key, value in event_dict.items():
        if value is None or isinstance(value, bool | int | float):
            continue
        text = value if isinstance(value, str) else str(value)
        if (redacted := _secrets.redact(text)) != text:
            event_dict[key] = redacted
    return event_dict


# --- rendering ------------------------------------------------------------------------------

# C0 and C1 controls and DEL (a CR makes journalctl show "[blob data]", an ESC drives the
# terminal), the line and paragraph separators (line breaks to some readers), the bidi
# overrides and isolates (a terminal shows the text after one in another order), lone
# surrogates (unencodable: the record would be lost), and the backslash that starts an escape.
_ESCAPED = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match[0]
    if escape := _NAMED_ESCAPES.get(char):
        return escape
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """*text* on one line and shown as it is: see :data:`_ESCAPED`."""
    return _ESCAPED.sub(_escape_one, text)


def render_field(key: str, value: object) -> str:
    """``key=value``: quoted if the value has a space, ``=`` or ``"`` (logfmt), escaped."""
    if value is None:
        return f"{escape(key)}="
    text = escape(("true" if value else "false") if isinstance(value, bool) else str(value))
    if any(c in text for c in ' ="'):
        text = '"' + text.replace('"', '\\"') + '"'
    return f"{escape(key)}={text}"


def render_journal(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    """``<priority>event key=value … logger=name`` on one line (see sd-daemon(3))."""
    priority = _PRIORITIES.get(event_dict.pop("level", "info"), _PRIORITIES["info"])
    event = escape(str(event_dict.pop("event", "")))
    logger_name = event_dict.pop("logger", None)
    fields = " ".join(render_field(k, v) for k, v in {**event_dict, "logger": logger_name}.items())
    return f"<{priority}>{event} {fields}"


_MULTILINE = ("exception", "stack")
"""Fields the console shows on lines of their own (tracebacks): their newlines stay."""


def escape_for_console(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Escape the event, keys and values before structlog's console renderer (which shows
    strings as they are and other values by ``repr()``)."""
    escaped = {}
    for key, value in event_dict.items():
        text = str(value if isinstance(value, str) or key == "event" else repr(value))
        lines = text.split("\n") if key in _MULTILINE else [text]
        escaped[escape(key)] = "\n".join(map(escape, lines))
    return escaped
