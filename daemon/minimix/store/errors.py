"""What can go wrong with the store, and which of it may pass by itself (docs/store.md)."""

from __future__ import annotations

import errno
import sqlite3


class StoreError(Exception):
    """The store cannot be used; nothing was moved aside or deleted.  ``transient``: the
    cause may pass by itself (a lock another program holds, an I/O error, a full disk), so
    a later start may work; otherwise someone must act first, as the message says."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# SQLite's primary result codes of a cause that may pass by itself (the others: a file
# that cannot be opened or written for good, a statement that can never succeed).
_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
              sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_INTERRUPT}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# ... and the errno values of the same kind, for the journal's file
_TRANSIENT_ERRNO = {errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.ENOMEM}


class _IntegrityCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged (it may not raise by itself)."""


def _result_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # extended codes: the low byte


def _is_corrupt(exc: BaseException) -> bool:
    """Whether SQLite itself says the file is damaged: the one reason to move it aside."""
    return isinstance(exc, _IntegrityCheckFailed) or _result_code(exc) in _CORRUPT


def store_error(exc: BaseException, doing: str) -> StoreError:
    """``exc`` (an :class:`sqlite3.Error` or :class:`OSError`) as a :class:`StoreError`."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        return StoreError(f"{doing}: {exc}", transient=exc.errno in _TRANSIENT_ERRNO)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StoreError(f"{doing}: {exc} ({name})", transient=_result_code(exc) in _TRANSIENT)
