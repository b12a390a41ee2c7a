"""The rules every user and key field obeys, shared by the service (the CLI and the admin API) and
by ``gateway import`` (``transfer.py``), so that both refuse the same values in the same words."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence

from gateway.store import Subscription
from gateway.units import limit_texts, parse_limits

__all__ = [
    "MAX_DURATION",
    "InvalidField",
    "ServiceError",
    "check_limits",
    "check_metadata",
    "check_name",
    "check_subscription",
    "check_user_id",
    "holds_a_key",
    "split_limits",
]

# Header-safe and log-safe: printable ASCII, no spaces (the id is sent upstream in X-User-Id).
USER_ID_PATTERN = re.compile(r"^[!-~]{1,255}$")
NAME_MAX = 200
# A key's metadata, written as compact JSON: small enough to show in a table and carry in a cache.
METADATA_MAX_BYTES = 2048
MAX_DURATION = 100 * 365 * 86400.0  # beyond this a date can no longer be written


class ServiceError(Exception):
    """A request the service refuses; the message says what to do."""


class InvalidField(ServiceError):
    """A value is not acceptable; ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_day(value: str, field: str) -> str:
    """A UTC day as 'YYYY-MM-DD'."""
    try:
        if len(value) == 10:  # (fromisoformat also reads 20261201)
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise InvalidField("a day is written like 2026-12-01 (UTC)", field)


def check_user_id(user_id: str) -> str:
    if not USER_ID_PATTERN.match(user_id):
        raise InvalidField("a user id is 1 to 255 printable ASCII characters without spaces", "user_id")
    return user_id


def check_subscription(subscription: str) -> Subscription:
    if subscription == "active":
        return "active"
    if subscription == "inactive":
        return "inactive"
    raise InvalidField("a subscription is active or inactive", "subscription")


def check_name(name: str | None) -> str | None:
    if name is not None and (len(name) > NAME_MAX or not name.isprintable()):
        raise InvalidField(f"a key name is at most {NAME_MAX} printable characters", "name")
    return name


def check_limits(rate_limits: str | Sequence[str] | None) -> str | None:
    """The limits as stored ("1000/minute;100000/day"), or None for the default ones. ``,`` and
    ``;`` separate limits alike ("5/second,100/hour" is two)."""
    if rate_limits is None:
        return None
    try:
        parse_limits(rate_limits)
    except ValueError:
        raise InvalidField(
            "rate limits are written like 1000/minute;100000/day (or with a comma)", "rate_limits"
        ) from None
    return ";".join(limit_texts(rate_limits))


def split_limits(stored: str | None) -> list[str] | None:
    return None if stored is None else stored.split(";")


def check_metadata(metadata: object) -> str | None:
    """A key's metadata as stored (compact JSON text), or None to clear it: a JSON object of at
    most METADATA_MAX_BYTES, without NaN or infinities (which JSON cannot carry)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidField('metadata is a JSON object, like {"plan": "pro"} (or null to clear it)', "metadata")
    try:
        text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())  # (a lone surrogate, which JSON can carry, is no text to store)
    except (TypeError, ValueError, RecursionError):
        raise InvalidField(
            "metadata holds only JSON values (strings, finite numbers, true/false, null, lists, objects)", "metadata"
        ) from None
    if size > METADATA_MAX_BYTES:
        raise InvalidField(f"metadata is at most {METADATA_MAX_BYTES} bytes of JSON", "metadata")
    return text


def holds_a_key(text: str, prefixes: Sequence[str]) -> bool:
    """Whether ``text`` may hold a full key of one of ``prefixes`` anywhere in it ("Bearer
    mk_live_..."): what no name, id or note kept by the gateway may carry."""
    return any(prefix in text and len(text) > len(prefix) + 8 for prefix in prefixes)
