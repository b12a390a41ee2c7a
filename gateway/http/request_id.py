"""``X-Request-Id``: the client's own if it is a plain token, else one of ours.

A client's id is kept when it has 1 to 128 letters, digits, ``-``, ``_`` or ``.``, so it can be
logged and passed on as it is; anything else is replaced, never escaped or trimmed. Ours are a
random per-process prefix and a counter: unique without a system call per request.
"""

from __future__ import annotations

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
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"
