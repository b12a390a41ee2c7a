"""A change counter shared by every process on one host: 8 bytes in a memory-mapped file.

Every write to a SQLite store bumps it after its transaction commits; every gateway process reads
it on every request, which costs a memory read, not a system call or a query. When the value
differs from the one a process last saw, that process drops its cached key verdicts, so a
revocation made by the CLI in another process fails the very next request everywhere, however
long the cache TTL.

Bumps take an exclusive ``flock`` so that two writers never write the same next value; a reader
needs no lock, because a torn read can only look like a change (one needless cache refill).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

__all__ = ["ChangeCounter"]

_COUNTER = struct.Struct("<Q")


class ChangeCounter:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Readable and writable by the group too: the CLI may run as another user than the server.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            if os.fstat(self._fd).st_size < _COUNTER.size:
                os.ftruncate(self._fd, _COUNTER.size)
            self._map = mmap.mmap(self._fd, _COUNTER.size)
        except BaseException:
            os.close(self._fd)
            raise

    def value(self) -> int:
        return int(_COUNTER.unpack_from(self._map)[0])

    def bump(self) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = (self.value() + 1) % (1 << 64)
            _COUNTER.pack_into(self._map, 0, value)
            return value
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
