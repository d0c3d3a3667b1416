"""The two files beside the store, written with one ``write`` each: the journal (a batch's
writes, on record before its sends) and ``sm-acked`` (the XEP-0198 count last
acknowledged)."""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Statement = tuple[str, Any, bool]  # (sql, parameters, executemany)


class Journal:
    """The store's groups of writes, each appended here before what depends on it goes out
    (one ``write`` of a few KB: the page cache has it when the process is killed), and
    committed to SQLite after (see :meth:`Store.grouped`).  A record is its length, its
    CRC-32 and ``(seq, statements)`` in :mod:`marshal`'s format (2 us for a relay's group,
    where JSON takes 11); a torn last record (killed while writing it) fails its CRC and
    is ignored: nothing that depended on it went out.  The file is the daemon's own, in
    its private state dir, and what it reads back is checked to be statements."""

    HEADER = struct.Struct("<II")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0

    def append(self, seq: int, statements: list[Statement]) -> None:
        payload = marshal.dumps((seq, statements))
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self.size = os.fstat(self._fd).st_size
        record = self.HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        written = os.write(self._fd, record)
        self.size += written
        if written != len(record):  # a short write (a full disk): not on record
            raise OSError(f"journal: {written} of {len(record)} bytes written")

    def records(self) -> Iterator[tuple[int, list[Statement]]]:
        """The whole records, in order; stops at the first that is not (a torn tail)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        at, header = 0, self.HEADER.size
        while at + header <= len(data):
            length, crc = self.HEADER.unpack_from(data, at)
            payload = data[at + header : at + header + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                seq, statements = marshal.loads(payload)
                checked = [(sql, params, bool(many)) for sql, params, many in statements
                           if isinstance(sql, str) and isinstance(params, tuple | list)]
            except (EOFError, ValueError, TypeError):
                return
            if not isinstance(seq, int) or len(checked) != len(statements):
                return
            yield seq, checked
            at += header + length

    def clear(self) -> None:
        if self._fd is None:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.path, 0)
        else:
            os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AckMark:
    """The XEP-0198 count of received stanzas we last acknowledged, and its session's id:
    a small file beside the store, rewritten in place before every acknowledgement goes out.

    After a crash, the start-up probe must quote the server a count it will accept:
    Prosody refuses a resumption whose count is below what we already acknowledged, and
    then closes the stream without saying how many of our stanzas it had.  The count saved
    with the relays in the store lags behind (the stream acknowledges what arrives after
    the last relay, often several times a second); committing it to SQLite before every
    acknowledgement would cost more than the relay.  One ``pwrite`` of a few bytes costs
    a microsecond and survives the process being killed (the page cache has it).
    """

    SIZE = 256  # "<count> <session id>", padded with spaces: one write, in place

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._last: tuple[str, int] | None = None

    def read(self) -> tuple[str, int] | None:
        """(session id, count) as last written, or None (no file, or not ours)."""
        try:
            text = self.path.read_bytes()[: self.SIZE].decode("ascii")
            count, sm_id = text.split()
            if not sm_id or not count.isdigit():
                return None
            return sm_id, int(count) & 0xFFFFFFFF
        except (OSError, ValueError):
            return None

    def write(self, sm_id: str, count: int) -> None:
        if self._last == (sm_id, count):
            return
        record = f"{count} {sm_id}".encode("ascii", "replace")
        if len(record) >= self.SIZE:  # no such session id in practice; never a wrong one
            record = b""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(self._fd, record.ljust(self.SIZE), 0)
        self._last = (sm_id, count)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
