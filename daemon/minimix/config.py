"""The configuration file: a TOML file checked against a small declarative schema.

Each ``[section]`` of the file is a frozen dataclass below; each key is a field declared with
:func:`setting`, which carries its default, a one-line doc and an optional check. Loading is
generic (:func:`load_config`), so a new key is one new field (and a paragraph in
``config.example.toml``, which a test keeps complete). Every problem is reported as a
:class:`ConfigError` whose message names the file and the key; no message ever contains the
password.

The password is not part of loading: :func:`minimix.password.resolve_password` reads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import platformdirs

APP_NAME = "minimix"
"""Bytes of a password command's stderr passed on; a command may write any amount."""
DEFAULT_PORT = 5222

LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says why, naming the file and the key."""


def default_config_path() -> Path:
    """Where the configuration lives unless ``--config`` says otherwise."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_state_dir() -> Path:
    """Where state lives unless the file or ``$STATE_DIRECTORY`` says otherwise."""
    return platformdirs.user_state_path(APP_NAME)


# --- the schema -----------------------------------------------------------------------------


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    check: Callable[[Any], None] | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    secret: bool = False,
) -> Any:
    """Declare one key of a section: its default (none: the key is required), a one-line doc,
    and an optional *check* that raises :class:`ValueError` with a reason. A *secret* value is
    left out of ``repr()``."""
    return field(
        default=default,
        default_factory=default_factory,
        repr=not secret,
        metadata={"doc": doc, "check": check},
    )


def _in_range(minimum: float, maximum: float | None = None) -> Callable[[float], None]:
    def check(value: float) -> None:
        if maximum is not None and not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")

    return check


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")

    return check


def _not_empty(value: str | tuple[str, ...]) -> None:
    if not value:
        raise ValueError("must not be empty")


def _bare_jid(jid: str) -> None:
    localpart, at, domain = jid.partition("@")
    if "/" in jid:
        raise ValueError(
            f"must be a bare JID without a resource (set account.resource), got {jid!r}"
        )
    if not (localpart and at and domain) or "@" in domain:
        raise ValueError(f"must be a bare JID like alice@example.org, got {jid!r}")
    bad = [c for c in jid if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs", "Cn")]
    bad += [c for c in localpart if c in _NOT_IN_LOCALPART]
    if bad:
        raise ValueError(f"{jid!r} is not a valid JID: it contains {bad[0]!r}")


_NOT_IN_LOCALPART = "\"&'/:<>@"  # RFC 7622 §3.3.1
MAX_NUMBER = 1e9  # any number in the file: beyond, something downstream overflows (timers, dates)


def _readable_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: not readable")


@dataclass(frozen=True, kw_only=True)
class AccountConfig:
    """``[account]``: who to log in as, where, and where the password comes from."""

    jid: str = setting(doc="Bare JID of the account (required).", check=_bare_jid)
    resource: str = setting("minimix", doc="Resource of the daemon's session.", check=_not_empty)
    password: str | None = setting(
        None,
        doc="The password itself (prefer password_command or password_file).",
        check=_not_empty,
        secret=True,
    )
    password_command: tuple[str, ...] | None = setting(
        None, doc="argv of a command printing the password on its first line.", check=_not_empty
    )
    password_file: Path | None = setting(
        None, doc="File with the password on its first line; mode 0600 or stricter."
    )
    host: str | None = setting(
        None, doc="Connect to this host instead of looking up SRV records.", check=_not_empty
    )
    port: int | None = setting(
        None, doc=f"Port on host (default {DEFAULT_PORT}).", check=_in_range(1, 65535)
    )
    ca_file: Path | None = setting(
        None, doc="Extra trust anchor (PEM) for the server's certificate.", check=_readable_file
    )

    def __post_init__(self) -> None:
        sources = [
            s
            for s in ("password", "password_command", "password_file")
            if getattr(self, s) is not None
        ]
        if len(sources) > 1:
            raise ValueError(f"set only one of {', '.join(sources)}")
        if self.port is not None and self.host is None:
            raise ValueError("port needs host (without host the server is found by SRV lookup)")

    @property
    def domain(self) -> str:
        return self.jid.partition("@")[2]

    @property
    def localpart(self) -> str:
        return self.jid.partition("@")[0]

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to connect to, or None to look up the domain's SRV records."""
        if self.host is None:
            return None
        return self.host, self.port or DEFAULT_PORT


@dataclass(frozen=True, kw_only=True)
class RoomsConfig:
    """``[rooms]``: how rooms are joined."""

    default_nick: str = setting(
        "", doc="Nick for rooms whose bookmark has none; empty: the JID's localpart."
    )
    join_concurrency: int = setting(
        50, doc="Most room joins in flight at once.", check=_in_range(1)
    )
    join_timeout_s: float = setting(
        60.0, doc="A join the room does not answer in this time is retried with backoff.",
        check=_in_range(1),
    )
    nick_fallback_suffix: str = setting(
        "_", doc="Appended to the nick when it is taken (409), once per attempt.", check=_not_empty
    )
    nick_fallback_max: int = setting(
        3, doc="Fallback nicks tried before backing off.", check=_in_range(0, 20)
    )
    nick_regain_interval_s: float = setting(
        60.0, doc="How often to ask for the wanted nick back while holding a fallback.",
        check=_in_range(1),
    )
    kick_rejoin: bool = setting(True, doc="Rejoin after a kick (307).")
    kick_rejoin_delay_s: float = setting(
        10.0, doc="Delay before rejoining after a kick; doubles with each further kick.",
        check=_in_range(0),
    )
    kick_rejoin_max: int = setting(
        3, doc="Give up after this many kicks within kick_window_s.", check=_in_range(1)
    )
    kick_window_s: float = setting(3600.0, doc="The window kicks are counted in.", check=_in_range(1))
    on_ban: str = setting(
        "disable-autojoin",
        doc="After a ban: disable-autojoin (rewrite the bookmark) or keep-bookmark.",
        check=_one_of("disable-autojoin", "keep-bookmark"),
    )
    backoff_base_s: float = setting(
        5.0, doc="First delay before rejoining a room after a failure; doubles each time.",
        check=_in_range(0.1),
    )
    backoff_cap_s: float = setting(
        300.0, doc="Longest delay between rejoin attempts.", check=_in_range(1)
    )
    backoff_jitter: float = setting(
        0.2, doc="Random extra delay, as a fraction of the delay.", check=_in_range(0, 1)
    )
    self_ping_idle_s: float = setting(
        300.0, doc="Self-ping (XEP-0410) a room silent for this long.", check=_in_range(1)
    )
    self_ping_retry_s: float = setting(
        30.0, doc="Ask again this soon after an undecided self-ping.", check=_in_range(1)
    )
    allow_create: bool = setting(
        False, doc="Keep a room that our join created (status 201) instead of destroying it."
    )
    reconnect_max_delay_s: float = setting(
        300.0, doc="Longest delay between reconnect attempts to the server.", check=_in_range(1)
    )


@dataclass(frozen=True, kw_only=True)
class BookmarksConfig:
    """``[bookmarks]``: keeping the bookmark list fresh."""

    resync_interval_s: float = setting(
        900.0,
        doc="Seconds between full re-fetches of the bookmarks (jittered).",
        check=_in_range(1),
    )
    poll_interval_s: float = setting(
        30.0,
        doc="Re-fetch interval on servers that do not push every bookmark change (no #compat).",
        check=_in_range(1),
    )


def _relay_modes(value: dict[str, str]) -> None:
    for pattern, mode in value.items():
        if mode not in ("all", "mentions", "off"):
            raise ValueError(f"{pattern!r}: must be one of 'all', 'mentions', 'off', got {mode!r}")


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """``[relay]``: room traffic for the user's own clients."""

    clients: dict[str, str] = setting(
        default_factory=dict,
        doc="Resource glob → relay mode, for clients that never send a command.",
        check=_relay_modes,
    )
    catchup_max: int = setting(
        500, doc="Most messages fetched from a room's archive after a reconnect.", check=_in_range(1)
    )
    playback_max: int = setting(
        200, doc="Most messages played back to a client that comes back online.", check=_in_range(1)
    )
    offline_mentions: str = setting(
        "store",
        doc="A mention for a client in mentions mode that is not connected: 'store' sends it to the "
            "account for the server to keep (and push to a phone), 'wait' keeps it for its playback.",
        check=_one_of("store", "wait"),
    )


@dataclass(frozen=True, kw_only=True)
class PresenceConfig:
    """``[presence]``: what the rooms see of the user."""

    offline_status: str = setting(
        "not connected", doc="Status text (with show xa) in rooms while none of your clients is online."
    )


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """``[storage]``: where state is kept."""

    state_dir: Path = setting(
        default_factory=default_state_dir,
        doc="Directory of the daemon's state; $STATE_DIRECTORY (systemd) takes precedence.",
    )
    retention_days: float = setting(
        7.0, doc="Relayed messages are kept this long for playback.", check=_in_range(0.01)
    )


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """``[logging]``."""

    level: LogLevel = setting("info", doc="Least severe level logged.")
    log_messages: bool = setting(
        False, doc="At level debug, also log the XML stream: message bodies, other people's words."
    )


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration; each field but ``path`` is a ``[section]`` of the file."""

    path: Path
    account: AccountConfig
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    bookmarks: BookmarksConfig = field(default_factory=BookmarksConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def sections() -> dict[str, type]:
    """The schema: section name → its dataclass (each field of which is one key)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config) if f.name != "path"}


# --- loading --------------------------------------------------------------------------------


def load_config(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and check the configuration file (*path*, else :func:`default_config_path`).

    Paths in the file may start with ``~``; relative ones are relative to the file's directory.
    ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``; the first of a colon-separated
    list) overrides ``storage.state_dir``. The password is not read: see :func:`minimix.password.resolve_password`.
    """
    path = (path or default_config_path()).expanduser().absolute()
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (start from config.example.toml)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None

    schema = sections()
    for name, table in document.items():
        if name not in schema:
            raise ConfigError(f"{path}: [{name}]: unknown section{_suggest(name, schema)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name}: expected a table [{name}], got {_toml_type(table)}")
    parsed = {
        name: _load_section(cls, name, document.get(name, {}), path) for name, cls in schema.items()
    }
    config = Config(path=path, **parsed)

    if not config.rooms.default_nick:
        config = _replace(config, "rooms", default_nick=config.account.localpart)
    if state_directory := env.get("STATE_DIRECTORY", "").split(":")[0]:
        config = _replace(config, "storage", state_dir=Path(state_directory))
    return config


def _replace(config: Config, section: str, **changes: Any) -> Config:
    return dataclasses.replace(
        config, **{section: dataclasses.replace(getattr(config, section), **changes)}
    )


def _load_section(cls: type, name: str, table: dict[str, Any], path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    keys = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in keys:
            raise ConfigError(f"{path}: {name}.{key}: unknown key{_suggest(key, keys)}")
    values = {}
    for key, spec in keys.items():
        if key not in table:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: {name}.{key}: required, but missing")
            continue
        try:
            value = _convert(table[key], hints[key], path.parent)
            if (check := spec.metadata["check"]) is not None:
                check(value)
        except ValueError as error:
            raise ConfigError(f"{path}: {name}.{key}: {error}") from None
        values[key] = value
    try:
        return cls(**values)
    except ValueError as error:  # a rule across keys (__post_init__)
        raise ConfigError(f"{path}: [{name}]: {error}") from None


def _convert(value: Any, tp: Any, base: Path) -> Any:
    """Turn a TOML *value* into the field type *tp*, or raise ValueError saying why.

    Messages name types, never the value, except for a choice among fixed words."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # X | None: None only means "absent"
        (inner,) = (arg for arg in typing.get_args(tp) if arg is not type(None))
        return _convert(value, inner, base)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is dict:  # dict[str, X] from a table
        _expect(value, dict)
        (_key, item) = typing.get_args(tp)
        return {str(k): _convert(v, item, base) for k, v in value.items()}
    if origin is tuple:  # tuple[X, ...] from an array
        _expect(value, list)
        (item, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(element, item, base) for element in value)
    if tp is float and type(value) is int:
        value = float(value)
    if tp in (float, int) and type(value) in (float, int) and not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ValueError(f"must be a finite number of at most {MAX_NUMBER:g}, got {value}")  # nan fails too
    if tp is Path:
        _expect(value, str)
        return base / Path(value).expanduser()  # an absolute path replaces base
    _expect(value, tp)
    return value


_TOML_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _toml_type(value: Any) -> str:
    return _TOML_TYPES.get(type(value), "a date/time")


def _expect(value: Any, tp: type) -> None:
    if type(value) is not tp:  # exact: a boolean is no integer
        raise ValueError(f"expected {_TOML_TYPES[tp]}, got {_toml_type(value)}")


def _suggest(word: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
    return f" ({hint})"


def loose_mode(st_mode: int) -> int | None:
    """The permission bits of a file that group or others may use (None: private). The rule
    for every file that holds a secret: the password file, the configuration file when it
    holds the password, the state dir and the daemon's files in it."""
    return st_mode & 0o777 if st_mode & 0o077 else None
