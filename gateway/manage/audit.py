"""Who is making changes, and what an audit event records of them.

Each way in (the admin API, the CLI, the console, the portal) says who acts with ``acting``
around the changes it makes; ``ManagementService`` records every change under that name. A
context variable rather than a parameter: the service's methods stay what they were for every
caller, and a change made outside any ``acting`` is still recorded, as "unknown".
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from gateway.manage.rules import split_limits
from gateway.store import ApiKey, AuditEvent, User
from gateway.units import iso_time

__all__ = [
    "AUDIT_ACTIONS",
    "Actor",
    "acting",
    "cli_actor",
    "current_actor",
    "key_fields",
    "new_event",
    "user_fields",
]

# Every action an event can name, "<target type>.<what was done>".
AUDIT_ACTIONS = frozenset(
    {
        "user.add",
        "user.subscription",
        "user.rate_limits",
        "user.credits",
        "user.delete",
        "key.create",
        "key.revoke",
        "key.rotate",
        "key.rate_limits",
        "key.update",
        "import",
    }
)


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # an admin token's name, "cli:<os user>", "portal:<user id>"
    via: str  # "api", "cli", "console", "portal"
    request_id: str | None = None


_UNKNOWN = Actor("unknown", "unknown")
_ACTOR: ContextVar[Actor | None] = ContextVar("gateway_audit_actor", default=None)


@contextlib.contextmanager
def acting(name: str, via: str, request_id: str | None = None) -> Iterator[Actor]:
    """Changes made inside are recorded as made by ``name`` through ``via``."""
    actor = Actor(name, via, request_id)
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


def current_actor() -> Actor:
    return _ACTOR.get() or _UNKNOWN


def cli_actor() -> str:
    """``cli:<os user>``: who runs the CLI, as the operating system knows them. The name comes from
    LOGNAME or USER when set, which anyone can set: kept to printable ASCII without spaces, so it
    cannot forge a line of ``gateway audit``'s table."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's), nor LOGNAME or USER
        name = f"uid-{os.getuid()}"
    return "cli:" + "".join(c if "!" <= c <= "~" else "?" for c in name[:64])


def user_fields(user: User) -> dict[str, Any]:
    """What the audit records of a user."""
    return {"subscription": user.subscription, "rate_limits": split_limits(user.rate_limits)}


def key_fields(key: ApiKey) -> dict[str, Any]:
    """What the audit records of a key: never the key, never its hash."""
    return {
        "user_id": key.user_id,
        "name": key.name,
        "prefix": key.prefix,
        "expires_at": iso_time(key.expires_at),
        "revoked_at": iso_time(key.revoked_at),
        "replaced_by": key.replaced_by,
        "rate_limits": split_limits(key.rate_limits),
        "metadata": None if key.metadata is None else json.loads(key.metadata),
    }


_last_micros = 0


def new_event(
    at: float,
    action: str,
    target_type: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEvent:
    """An event by the current actor. Fields equal before and after are left out of both, so that
    an event shows what it changed; a creation's empty fields are left out."""
    assert action in AUDIT_ACTIONS, action
    if before is None and after is not None:
        after = {name: value for name, value in after.items() if value is not None}  # a creation: what it has
    elif before is not None and after is not None:
        changed = [name for name in after if before.get(name) != after[name]]
        before = {name: before.get(name) for name in changed}
        after = {name: after[name] for name in changed}
    actor = current_actor()
    # Microseconds in fixed-width hex, then randomness: ids sort by time, and two events of one
    # microsecond (two replicas) still differ. Within a process each id is above the last, so
    # events made in one microsecond (or under a clock set back) keep their order.
    global _last_micros
    _last_micros = max(int(at * 1_000_000), _last_micros + 1)
    event_id = f"{_last_micros:014x}{secrets.token_hex(5)}"
    return AuditEvent(
        id=event_id,
        at=at,
        actor=actor.name,
        via=actor.via,
        action=action,
        target_type=target_type,
        target=target,
        request_id=actor.request_id,
        before=None if before is None else json.dumps(before, separators=(",", ":")),
        after=None if after is None else json.dumps(after, separators=(",", ":")),
    )
