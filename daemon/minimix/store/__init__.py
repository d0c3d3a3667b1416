"""The store: one SQLite file in the state dir, written only by the app's loop, with its
journal and ``sm-acked`` beside it (see store.sqlite for what it promises, docs/store.md
for why)."""

from minimix.store.bounds import KEPT_TEXT_MAX, KEPT_XML_MAX, kept
from minimix.store.database import ACK_MARK_FILENAME, FILENAME, JOURNAL_MAX
from minimix.store.errors import StoreError, store_error
from minimix.store.files import AckMark, Journal
from minimix.store.schema import MIGRATIONS
from minimix.store.sqlite import Store

__all__ = [
    "ACK_MARK_FILENAME",
    "FILENAME",
    "JOURNAL_MAX",
    "KEPT_TEXT_MAX",
    "KEPT_XML_MAX",
    "MIGRATIONS",
    "AckMark",
    "Journal",
    "Store",
    "StoreError",
    "kept",
    "store_error",
]
