"""What users, keys and usage look like outside: the JSON the CLI's --json and the admin API print.

One place, so the two cannot drift. A stored key shows its id and prefix, never the key or its
hash; a created key is the one document that holds the full key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.manage.rules import split_limits
from gateway.manage.service import CreatedKey
from gateway.store import ApiKey, AuditEvent, DailyUsage, User, UserUsage
from gateway.units import iso_time

__all__ = [
    "DAILY_FIELDS",
    "KEY_FIELDS",
    "USAGE_FIELDS",
    "audit_document",
    "created_document",
    "daily_usage_document",
    "iso",
    "key_document",
    "usage_document",
    "user_document",
]

# One day of usage history, in this order.
DAILY_FIELDS = ("day", "requests", "rate_limited", "credits", "refused_credits")

# What a stored key shows, in this order (key_document).
KEY_FIELDS = (
    "id",
    "prefix",
    "name",
    "user_id",
    "status",
    "created_at",
    "expires_at",
    "last_used_at",
    "requests",
    "rate_limited",
    "credits",
    "legacy",
    "rate_limits",
    "replaced_by",
    "metadata",
)


# ISO 8601 in UTC, to the second: 2026-11-22T02:10:00Z.
iso = iso_time


def user_document(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "subscription": user.subscription,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "rate_limits": split_limits(user.rate_limits),
    }


def key_document(key: ApiKey, now: float) -> dict[str, Any]:
    """What may be shown of a stored key: never the key, never its hash."""
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "user_id": key.user_id,
        "status": key.status(now),
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "requests": key.requests,
        "rate_limited": key.rate_limited,
        "credits": key.credits,
        "legacy": key.legacy,
        "rate_limits": split_limits(key.rate_limits),
        # Set once the key is rotated: its replacement's id (it stays active through a grace period).
        "replaced_by": key.replaced_by,
        # The operator's notes on the key; never sent upstream.
        "metadata": None if key.metadata is None else json.loads(key.metadata),
    }


def created_document(created: CreatedKey) -> dict[str, Any]:
    record = created.record
    return {
        "id": record.id,
        "key": created.key,
        "prefix": record.prefix,
        "user_id": record.user_id,
        "name": record.name,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "rate_limits": split_limits(record.rate_limits),
    }


# What a user's usage shows, in this order (usage_document).
USAGE_FIELDS = (
    "user_id",
    "requests",
    "rate_limited",
    "credits",
    "last_used_at",
    "legacy_keys",
    "legacy_last_used_at",
)


def usage_document(usage: UserUsage) -> dict[str, Any]:
    return {
        "user_id": usage.user_id,
        "requests": usage.requests,
        "rate_limited": usage.rate_limited,
        "credits": usage.credits,
        "last_used_at": iso(usage.last_used_at),
        # Until both say "none", the old key format cannot be retired.
        "legacy_keys": usage.legacy_keys,
        "legacy_last_used_at": iso(usage.legacy_last_used_at),
    }


def daily_usage_document(owner: dict[str, str], first: str, last: str, days: Sequence[DailyUsage]) -> dict[str, Any]:
    """A key's or a user's usage per UTC day (days without usage left out), and the sums."""
    rows = [{name: getattr(day, name) for name in DAILY_FIELDS} for day in days]
    totals = {name: sum(row[name] for row in rows) for name in DAILY_FIELDS[1:]}
    return owner | {"granularity": "day", "from": first, "to": last, "days": rows, "totals": totals}


def audit_document(event: AuditEvent) -> dict[str, Any]:
    """An audit event: when, who and how, what, and the fields it changed (never a key or a hash)."""
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "via": event.via,
        "action": event.action,
        "target_type": event.target_type,
        "target": event.target,
        "request_id": event.request_id,
        "before": None if event.before is None else json.loads(event.before),
        "after": None if event.after is None else json.loads(event.after),
    }
