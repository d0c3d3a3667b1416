"""Logging: one event per line, ``event key=value …``, for journald or for a terminal.

All logging goes through one pipeline: minimix's own structlog loggers hand their events to
the standard library, and a single :class:`structlog.stdlib.ProcessorFormatter` on the root
handler renders them together with the records of other libraries (aioxmpp, apscheduler,
asyncio).

- Under systemd (the stream is no terminal) each line starts with its sd-daemon priority
  ``<N>`` so ``journalctl -p warning`` works, carries no timestamp (journald adds one), and
  stays one line: newlines inside values, tracebacks included, are written as ``\\n``.
- On a terminal, structlog's coloured console output with timestamps.

Secrets never reach the output, at any level: values of keys named like ``password`` or
``secret`` are masked, and every string registered with :func:`add_secret` is replaced by
``***`` wherever it shows up — in events, values, tracebacks and other libraries' messages,
also base64-encoded inside a longer payload such as a SASL PLAIN ``<auth/>``. The content of
XML ``<password>`` elements (room passwords in stanzas logged at debug level) is masked too.
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

_handler: logging.Handler | None = None


def setup(
    level: str = "info",
    stream: TextIO | None = None,
    mode: Mode = "auto",
    env: Mapping[str, str] = os.environ,
) -> None:
    """Send all logging to *stream* (default: ``sys.stdout``) at *level* and above.

    *mode* ``auto`` picks ``console`` on a terminal, else ``journal``. (``$JOURNAL_STREAM``
    would add nothing: the stream journald reads is a socket, never a terminal, and the variable
    is inherited by terminals started from user services, such as gnome-terminal-server.)
    Other libraries log at warning and above unless *level* is ``debug``. Calling it again
    replaces the previous setup.
    """
    global _handler
    if level not in _PRIORITIES:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_PRIORITIES)}")
    threshold = logging.getLevelNamesMapping()[level.upper()]
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

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(threshold if threshold <= logging.DEBUG else max(threshold, LIBRARY_LEVEL))
    logging.getLogger(ROOT_LOGGER).setLevel(threshold)
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    """Change the level of a running setup (a reload)."""
    if level not in _PRIORITIES:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_PRIORITIES)}")
    threshold = logging.getLevelNamesMapping()[level.upper()]
    logging.getLogger().setLevel(threshold if threshold <= logging.DEBUG else max(threshold, LIBRARY_LEVEL))
    logging.getLogger(ROOT_LOGGER).setLevel(threshold)


def reset() -> None:
    """Undo :func:`setup` (for tests): stdlib and structlog defaults again. Secrets stay."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT_LOGGER).setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    structlog.reset_defaults()


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
            structlog.dev.ConsoleRenderer(colors=colors) if console else render_journal,
        ],
    )


# --- secrets --------------------------------------------------------------------------------


class _Secrets:
    """The strings to redact, as one regular expression."""

    def __init__(self) -> None:
        self._strings: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, strings: Iterable[str]) -> None:
        self._strings.update(s for s in strings if s)
        # Longest first, so a secret containing another is redacted whole.
        ordered = sorted(self._strings, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        text = _PASSWORD_ELEMENT.sub(rf"\1{REDACTED}\2", text)
        return self._pattern.sub(REDACTED, text) if self._pattern else text


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

_logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def render_journal(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    """``<priority>event key=value … logger=name`` on one line (see sd-daemon(3))."""
    priority = _PRIORITIES.get(event_dict.pop("level", "info"), _PRIORITIES["info"])
    event = str(event_dict.pop("event", "")).replace("\n", "\\n")
    logger_name = event_dict.pop("logger", None)
    fields = _logfmt(logger, name, {**event_dict, "logger": logger_name})
    return f"<{priority}>{event} {fields}"
