"""Cursor pagination for the admin API's lists (keys, users).

A list is in the order (created_at, id); a cursor is the position of a page's last item,
opaque to clients (base64 of JSON). The next page starts after it, so items added meanwhile
neither repeat nor shift a page.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["MAX_PAGE", "Position", "decode_cursor", "page"]

T = TypeVar("T")

MAX_PAGE = 200

# Where an item sits in a list: its creation time, then its id.
Position = tuple[float, str]


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


def decode_cursor(cursor: object) -> Position:
    """ValueError for anything but a cursor this API gave."""
    try:
        created_at, item_id = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
        return float(created_at), str(item_id)
    except (ValueError, TypeError, OverflowError, RecursionError):  # a tampered one, however made
        raise ValueError("not a cursor this API gave") from None


def page(
    items: Sequence[T], position: Callable[[T], Position], after: Position | None, limit: int
) -> tuple[list[T], str | None]:
    """The ``limit`` items after ``after`` (``items`` in position order), and the next page's cursor
    (None on the last page)."""
    rest = [item for item in items if after is None or position(item) > after]
    shown = rest[:limit]
    return shown, encode_cursor(position(shown[-1])) if len(rest) > limit else None
