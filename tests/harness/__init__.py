"""Integration-test harness: bounded waiting, an independent slixmpp test client, and a
runner for the daemon as a user starts it."""

from .client import (
    BOOKMARKS_NODE,
    Bookmark,
    ConnectError,
    DiscoInfo,
    LegacyBookmark,
    Occupant,
    StanzaError,
    TestClient,
    parse_bookmark,
)
from .daemon import DaemonProcess, daemon_config, to_toml
from .stanzas import NS, el_of, error_of, muc_codes, tostring
from .wait import DEFAULT_TIMEOUT, wait_until

__all__ = [
    "BOOKMARKS_NODE",
    "DEFAULT_TIMEOUT",
    "NS",
    "Bookmark",
    "ConnectError",
    "DaemonProcess",
    "DiscoInfo",
    "LegacyBookmark",
    "Occupant",
    "StanzaError",
    "TestClient",
    "daemon_config",
    "el_of",
    "error_of",
    "muc_codes",
    "parse_bookmark",
    "to_toml",
    "tostring",
    "wait_until",
]
