"""``X-Request-Id``: the client's own if it is a plain token, else one of ours.

A client's id is kept when it has 1 to 128 letters, digits, ``-``, ``_`` or ``.``, so it can be
logged and passed on as it is; anything else is replaced, never escaped or trimmed. Ours are a
counter hashed with a per-process secret (keyed BLAKE2b, 96 bits): unique, without a system call
per request (0.4 µs), and not to be guessed from the ones a client sees. ``upstream.check_request_id``
relies on that: a client that smuggles a request to the upstream cannot give its stray answer the
id of the request that will read it.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from typing import Final

__all__ = ["HEADER", "RequestIds", "acceptable"]

HEADER: Final = b"x-request-id"
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def acceptable(values: list[bytes]) -> bytes | None:
    """The id the client sent, if it sent exactly one acceptable one."""
    if len(values) == 1 and _ACCEPTABLE.fullmatch(values[0]):
        return values[0]
    return None


class RequestIds:
    def __init__(self) -> None:
        self._keyed = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=12)
        self._counter = itertools.count(1)

    def new(self) -> str:
        """24 hex digits."""
        hashed = self._keyed.copy()
        hashed.update(next(self._counter).to_bytes(8, "little"))
        return hashed.hexdigest()
