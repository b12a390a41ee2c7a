"""The key store's contract: users and API keys, behind one interface (``connect.py`` chooses the
backend by ``store.url``).

Records are small frozen dataclasses; times are Unix seconds (float, UTC). The store keeps only
the SHA-256 of each key. Every write also advances the store's *change counter*, which every
gateway process reads on every request (``changes()``, no I/O) to drop its cached verdicts the
moment anything changed, whoever changed it: see ``auth/verify.py``.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from gateway.store.staging import ImportSession

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuditFilter",
    "KeyStatus",
    "KeyStore",
    "NewerSchemaError",
    "StoreError",
    "Subscription",
    "User",
    "UsageDelta",
    "UserUsage",
    "DailyUsage",
    "WindowCount",
]

Subscription = Literal["active", "inactive"]
KeyStatus = Literal["active", "revoked", "expired"]


class StoreError(Exception):
    """The store cannot be used; the message says what to do."""


class NewerSchemaError(StoreError):
    """The store was written by a newer version of the gateway."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    subscription: Subscription
    created_at: float
    updated_at: float
    # Its own limits over all its keys together ("1000/minute;100000/day"), or None for
    # rate_limits.per_user.
    rate_limits: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: str
    name: str | None
    prefix: str
    key_hash: str
    created_at: float
    # When the key stops working: its lifetime's end, or a rotation's grace period's end. Read
    # against each server's own clock.
    expires_at: float | None = None
    # Set once the key is revoked: it is dead from then on, whatever any clock says, so a
    # server whose clock lags the revoker's cannot let it through.
    revoked_at: float | None = None
    last_used_at: float | None = None
    # The key that replaced this one in a rotation.
    replaced_by: str | None = None
    # Its own rate limits ("1000/minute;100000/day"), or None for rate_limits.default.
    rate_limits: str | None = None
    # Usage: requests sent upstream, requests refused with 429, credits charged.
    requests: int = 0
    rate_limited: int = 0
    credits: int = 0
    # Adopted from an earlier system by gateway import: known by its hash, without our checksum.
    legacy: bool = False
    # The operator's own notes on the key: a small JSON object, as text; never sent upstream.
    metadata: str | None = None

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            # A rotation's grace period has ended: the key was revoked, with a delay.
            return "revoked" if self.replaced_by else "expired"
        return "active"

    def __repr__(self) -> str:
        # The hash is not the key, but it is what a key is checked against: keep it out of logs.
        return f"ApiKey(id={self.id!r}, user_id={self.user_id!r}, prefix={self.prefix!r})"


# What ``KeyStore.update_key`` may change: fields an operator sets on a key after its creation.
KEY_UPDATABLE = frozenset({"name", "expires_at", "metadata"})
# Added to update_key's WHERE when it sets expires_at: a revoked or rotated key's end stands,
# whatever a write racing the revocation or rotation read before it.
STILL_ITS_OWN_END = " AND revoked_at IS NULL AND replaced_by IS NULL"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One change to users or keys: who made it, how, to what, and the fields before and after
    (never a key or its hash). Ids sort by time: newest first is descending id order."""

    id: str
    at: float
    actor: str  # an admin token's name, "cli:<os user>", "portal:<user id>"
    via: str  # "api", "cli", "console", "portal", "import"
    action: str  # "key.revoke", "user.add", ...
    target_type: str  # "user" or "key"
    target: str  # the user's or the key's id
    request_id: str | None
    before: str | None  # JSON objects, as text
    after: str | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to read: those matching every field given."""

    target: str | None = None
    actor: str | None = None
    action: str | None = None
    since: float | None = None  # at or after


AUDIT_COLUMNS = tuple(f.name for f in fields(AuditEvent))
RECORD_AUDIT = f"INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})"
DROP_AUDIT_BEFORE = "DELETE FROM audit_events WHERE at < ?"
ADD_PORTAL_LINK = "INSERT INTO portal_links (digest, user_id, return_url, expires_at) VALUES (?, ?, ?, ?)"
DROP_PORTAL_LINKS_BEFORE = "DELETE FROM portal_links WHERE expires_at <= ?"
# Taken and gone in one statement: two requests with the same link cannot both have it.
TAKE_PORTAL_LINK = "DELETE FROM portal_links WHERE digest = ? RETURNING user_id, return_url, expires_at"


def audit_query(matching: AuditFilter, before_id: str | None, limit: int) -> tuple[str, list[Any]]:
    """The audit events ``matching``, newest first, ids below ``before_id`` (a page's cursor);
    "?" placeholders."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (("target", matching.target), ("actor", matching.actor), ("action", matching.action)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    if matching.since is not None:
        conditions.append("at >= ?")
        params.append(matching.since)
    if before_id is not None:
        conditions.append("id < ?")
        params.append(before_id)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    params.append(limit)
    return f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events{where} ORDER BY id DESC LIMIT ?", params


def audit_row(event: AuditEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in AUDIT_COLUMNS)


# The stores' column names and order: ApiKey's and User's fields, one column each.
KEY_COLUMNS = tuple(f.name for f in fields(ApiKey))
USER_COLUMNS = tuple(f.name for f in fields(User))


# Saving and reading windows (both stores; each store replaces the "?" placeholders with its own).
SAVE_WINDOW = (
    "INSERT INTO rate_windows (scope, owner, spec, hits, ends_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (scope, owner, spec) DO UPDATE SET hits = excluded.hits, ends_at = excluded.ends_at"
)
DROP_CLOSED_WINDOWS = "DELETE FROM rate_windows WHERE ends_at <= ?"
LOAD_WINDOWS = "SELECT scope, owner, spec, hits, ends_at FROM rate_windows WHERE ends_at > ?"


# Usage per day (both stores; "?" placeholders, numbered for PostgreSQL by its store).
ADD_DAILY_USAGE = (
    "INSERT INTO usage_daily (key_id, day, requests, rate_limited, credits, refused_credits)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, day) DO UPDATE SET"
    " requests = usage_daily.requests + excluded.requests,"
    " rate_limited = usage_daily.rate_limited + excluded.rate_limited,"
    " credits = usage_daily.credits + excluded.credits,"
    " refused_credits = usage_daily.refused_credits + excluded.refused_credits"
)
KEY_DAILY_USAGE = (
    "SELECT day, requests, rate_limited, credits, refused_credits FROM usage_daily"
    " WHERE key_id = ? AND day >= ? AND day <= ? ORDER BY day"
)
USER_DAILY_USAGE = (
    "SELECT d.day, sum(d.requests), sum(d.rate_limited), sum(d.credits), sum(d.refused_credits)"
    " FROM usage_daily d JOIN api_keys k ON k.id = d.key_id"
    " WHERE k.user_id = ? AND d.day >= ? AND d.day <= ? GROUP BY d.day ORDER BY d.day"
)
DROP_USAGE_BEFORE = "DELETE FROM usage_daily WHERE day < ?"
# The keys with the most requests on a day (the console's overview): a key's columns, then its day's.
BUSIEST_KEYS = (
    "SELECT "
    + ", ".join(f"k.{c}" for c in ("id", "user_id", "name", "prefix", "key_hash", "created_at"))
    + ", d.day, d.requests, d.rate_limited, d.credits, d.refused_credits"
    " FROM usage_daily d JOIN api_keys k ON k.id = d.key_id"
    " WHERE d.day = ? AND d.requests > 0 ORDER BY d.requests DESC, d.key_id LIMIT ?"
)


def daily_rows(deltas: Mapping[str, UsageDelta], day: str) -> list[tuple[Any, ...]]:
    """ADD_DAILY_USAGE's rows for ``deltas``."""
    return [(k, day, d.requests, d.rate_limited, d.credits, d.refused_credits) for k, d in deltas.items()]


def daily_from_row(row: Sequence[Any]) -> DailyUsage:
    return DailyUsage(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def busy_key_from_row(row: Sequence[Any]) -> tuple[ApiKey, DailyUsage]:
    """A BUSIEST_KEYS row: the key (its identity only: no limits, usage or state) and its day."""
    return ApiKey(*tuple(row)[:6]), daily_from_row(tuple(row)[6:])


# The credit wallet (both stores; "?" placeholders).
CREDIT_BALANCE = "SELECT credit_balance, credits_refilled, credits_set_at FROM users WHERE id = ?"
RECORD_CREDIT_CHANGE = "INSERT INTO credit_changes (user_id, at, change, balance, reason) VALUES (?, ?, ?, ?, ?)"
ADD_CREDITS = "UPDATE users SET credit_balance = credit_balance + ? WHERE id = ? RETURNING credit_balance"
SET_CREDITS = "UPDATE users SET credit_balance = ?, credits_set_at = ? WHERE id = ? RETURNING credit_balance"
SPEND_CREDITS = (
    "UPDATE users SET credit_balance = credit_balance - ?"
    " WHERE id = ? AND (credits_set_at IS NULL OR credits_set_at <= ?) RETURNING credit_balance"
)
# A refill that raises the balance (as it stands with the refiller's spending not yet written,
# "pending") sets it, as an operator's --set does: what was spent in the period before, and not
# yet written, is not taken off the new period's credits.
REFILL_CREDITS = (
    "UPDATE users SET credits_refilled = ?,"
    " credit_balance = CASE WHEN credit_balance - ? < ? THEN ? ELSE credit_balance END,"
    " credits_set_at = CASE WHEN credit_balance - ? < ? THEN ? ELSE credits_set_at END"
    " WHERE id = ? AND (credits_refilled IS NULL OR credits_refilled < ?) RETURNING credit_balance"
)


# Usage summed per user (both stores; legacy is 0/1 in SQLite, a boolean in PostgreSQL).
USAGE_BY_USER = (
    "SELECT user_id, sum(requests), sum(rate_limited), sum(credits), max(last_used_at),"
    " sum(CASE WHEN legacy AND revoked_at IS NULL THEN 1 ELSE 0 END),"
    " max(CASE WHEN legacy THEN last_used_at END) FROM api_keys"
)


def usage_from_row(row: Sequence[Any]) -> UserUsage:
    return UserUsage(row[0], int(row[1]), int(row[2]), int(row[3]), row[4], int(row[5]), row[6])


# The look-up by hash, a key's columns then its user's; each store appends its placeholder.
FIND_KEY_BY_HASH = (
    "SELECT "
    + ", ".join(f"k.{c}" for c in KEY_COLUMNS)
    + ", u.subscription, u.created_at, u.updated_at, u.rate_limits FROM api_keys k JOIN users u ON u.id = k.user_id"
    " WHERE k.key_hash = "
)


def user_from_row(row: Sequence[Any]) -> User:
    return User(*tuple(row)[: len(USER_COLUMNS)])


def found_from_row(row: Sequence[Any]) -> tuple[ApiKey, User]:
    """A FIND_KEY_BY_HASH row: the key and its user."""
    key = key_from_row(row)
    subscription, created_at, updated_at, rate_limits = tuple(row)[len(KEY_COLUMNS) :]
    return key, User(key.user_id, subscription, created_at, updated_at, rate_limits)


def key_row(key: ApiKey) -> tuple[Any, ...]:
    """The key's values in KEY_COLUMNS order, as the stores insert them."""
    return tuple(getattr(key, name) for name in KEY_COLUMNS)


def key_from_row(row: Sequence[Any]) -> ApiKey:
    """An ApiKey from a row that starts with the KEY_COLUMNS (SQLite gives legacy as 0 or 1)."""
    fields = dict(zip(KEY_COLUMNS, row, strict=False))
    fields["legacy"] = bool(fields["legacy"])
    return ApiKey(**fields)


@dataclass(slots=True)
class UsageDelta:
    """Usage of one key since the last flush, added to its counters and to its day's."""

    requests: int = 0
    rate_limited: int = 0
    credits: int = 0
    last_used_at: float | None = None
    # Requests refused because the user's credits could not pay for them (the wallet).
    refused_credits: int = 0

    def merge(self, other: UsageDelta) -> None:
        self.requests += other.requests
        self.rate_limited += other.rate_limited
        self.credits += other.credits
        self.refused_credits += other.refused_credits
        if other.last_used_at is not None:
            self.last_used_at = max(self.last_used_at or 0.0, other.last_used_at)


@dataclass(frozen=True, slots=True)
class WindowCount:
    """One rate-limit window as a process counted it in memory, saved so that a restart resumes it."""

    scope: str  # whose window: "key"
    owner: str  # that key's id
    spec: str  # the limit, as "<amount>/<seconds>" ("100/60" for 100/minute)
    hits: int
    ends_at: float  # Unix time at which the window closes


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One UTC day of a key's usage, or of all a user's keys together."""

    day: str  # 'YYYY-MM-DD'
    requests: int
    rate_limited: int
    credits: int
    refused_credits: int


@dataclass(frozen=True, slots=True)
class UserUsage:
    user_id: str
    requests: int
    rate_limited: int
    credits: int
    last_used_at: float | None
    # Keys of an earlier system (imported) that are not revoked, and their latest use.
    legacy_keys: int = 0
    legacy_last_used_at: float | None = None


class KeyStore(Protocol):
    """What the gateway needs of a store. An unknown id is answered with None or False, not an exception."""

    # Whether others can write to it while this process cannot reach it (a database server, not
    # a file beside the process): then what this process last read ages, and is trusted for a
    # bounded time only.
    shared: bool

    def unheard_for(self) -> float | None:
        """For how many seconds this process has not been able to hear of writes made by others
        (a shared store's notifications are lost), or None while it can. No I/O."""
        ...

    async def close(self) -> None: ...

    def changes(self) -> int:
        """The change counter: differs from its last value once anything was written. No I/O."""
        ...

    async def schema_version(self) -> int: ...

    async def check(self) -> None:
        """Raise StoreError, saying why, unless the store answers a query and is still the one
        the other processes (CLI, replicas) write to."""
        ...

    async def migrate(self) -> int:
        """Bring the schema up to date; the version it is at afterwards."""
        ...

    async def add_user(self, user: User) -> bool:
        """False if a user with that id exists already (nothing written)."""
        ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def set_subscription(self, user_id: str, subscription: Subscription, now: float) -> User | None: ...

    async def list_users(self) -> Sequence[User]: ...

    async def retire_user(self, user_id: str, now: float) -> tuple[User, int] | None:
        """Revoke every key of the user not revoked yet (expired ones too: a revocation holds
        whatever a server's clock says) and make it inactive, in one transaction; the user and how
        many keys were revoked now, and its portal links deleted. None if unknown. The user, its
        keys and its usage stay."""
        ...

    async def set_user_rate_limits(self, user_id: str, rate_limits: str | None) -> User | None: ...

    async def add_key(
        self,
        key: ApiKey,
        *,
        max_active: int | None = None,
        now: float = 0.0,
        active_user: bool = False,
        unchanged_since: float = math.inf,
    ) -> bool:
        """Add the key; with ``max_active``, only while its user has fewer keys active at ``now``
        (not revoked, not expired); with ``active_user``, only while its user's subscription is
        active, and unchanged since ``unchanged_since`` (its ``updated_at``). Both are checked in
        the insert's own transaction, so that concurrent additions cannot pass the limit together
        and a key cannot slip in beside a retire_user that revokes every key. False: not added."""
        ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def find_key(self, key_hash: str) -> tuple[ApiKey, User] | None:
        """The key with this hash and its user: one indexed lookup."""
        ...

    async def list_keys(self, user_id: str | None = None) -> Sequence[ApiKey]: ...

    async def revoke_key(self, key_id: str, now: float) -> ApiKey | None:
        """Revoke the key (an earlier revocation stands); None if unknown."""
        ...

    async def rotate_key(
        self,
        old_key_id: str,
        new_key: ApiKey,
        *,
        now: float,
        grace_until: float | None,
        max_active: int | None = None,
        active_user: bool = False,
        unchanged_since: float = math.inf,
    ) -> bool:
        """Add ``new_key`` and, in the same transaction, revoke the old one now, or make it expire at
        ``grace_until`` (never later than it would have anyway). False, with nothing written, when
        the old key has been replaced or revoked already (a retried or concurrent rotation, a
        revocation under way); with a grace and ``max_active``, when the user has more than
        ``max_active`` keys active at ``now`` (a grace lets the old and the new key overlap by
        one, not chain into more); with ``active_user``, when the user's subscription is not
        active. Checked as add_key checks them."""
        ...

    async def set_rate_limits(self, key_id: str, rate_limits: str | None) -> ApiKey | None: ...

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        """Set the KEY_UPDATABLE fields in ``changes``; the key after. None, with nothing written,
        if unknown, or if ``changes`` sets expires_at and the key was revoked or rotated."""
        ...

    async def record_audit(self, event: AuditEvent) -> None:
        """Add an audit event. Not a change (like add_usage): caches stay warm."""
        ...

    async def audit_events(self, matching: AuditFilter, before_id: str | None, limit: int) -> Sequence[AuditEvent]:
        """Audit events ``matching``, newest first, with ids below ``before_id``."""
        ...

    async def drop_audit_before(self, at: float) -> None:
        """Forget audit events older than ``at`` (audit.retention)."""
        ...

    async def add_portal_link(
        self, digest: str, user_id: str, return_url: str | None, expires_at: float, now: float
    ) -> None:
        """Keep a portal link by its token's digest; links expired by ``now`` are forgotten (they
        open nothing)."""
        ...

    async def take_portal_link(self, digest: str) -> tuple[str, str | None, float] | None:
        """The link's (user id, return url, expires at), removed as it is read: None if unknown
        or taken already."""
        ...

    async def add_usage(self, deltas: Mapping[str, UsageDelta], day: str) -> None:
        """Add each key's usage to its counters and to its counts of ``day`` (UTC, 'YYYY-MM-DD'),
        in one transaction. Not a change: it leaves the change counter alone, so caches stay warm."""
        ...

    async def credit_balance(self, user_id: str) -> tuple[int, str | None, float | None] | None:
        """The user's credit balance, the refill period last applied, and when an operator last
        set it; None if no such user."""
        ...

    async def change_credits(
        self, user_id: str, *, add: int = 0, set_to: int | None = None, reason: str, at: float
    ) -> int | None:
        """Add to the balance, or set it; the change is recorded. The new balance (None: no user)."""
        ...

    async def refill_credits(self, user_id: str, *, amount: int, period: str, at: float, pending: int = 0) -> None:
        """Raise the balance to ``amount`` unless ``period``'s refill is applied already (recorded);
        ``pending``: what the caller spent and has not written yet (the balance it raises is that less)."""
        ...

    async def spend_credits(self, spent: Sequence[tuple[str, float, int]], at: float) -> list[bool]:
        """Take spent credits, (user, since, credits), off the balances, recorded, in one
        transaction; credits spent since a time before the balance was last set are dropped (the
        operator's balance stands). Whether each was taken off."""
        ...

    async def daily_usage(
        self, *, key_id: str | None = None, user_id: str | None = None, since: str, until: str
    ) -> Sequence[DailyUsage]:
        """Usage per day from ``since`` to ``until`` (inclusive, 'YYYY-MM-DD'), of one key or of
        all the keys of one user; days without usage are left out."""
        ...

    async def busiest_keys(self, day: str, limit: int) -> Sequence[tuple[ApiKey, DailyUsage]]:
        """The ``limit`` keys with the most requests on ``day``, most first, each with its day's
        usage; the keys carry their identity only (id, user, name, prefix)."""
        ...

    async def drop_usage_before(self, day: str) -> None:
        """Forget the days before ``day`` (usage.history_days); the lifetime counters keep them."""
        ...

    async def save_windows(self, windows: Sequence[WindowCount], now: float) -> None:
        """Write these windows over what is saved for them, and drop every window closed by
        ``now``, in one transaction. Not a change (like add_usage)."""
        ...

    async def load_windows(self, now: float) -> Sequence[WindowCount]:
        """The saved windows still open at ``now``."""
        ...

    async def usage_by_user(self, user_id: str | None = None) -> Sequence[UserUsage]: ...

    def iter_users(self) -> AsyncIterator[User]:
        """Every user, streamed (gateway export)."""
        ...

    def iter_keys(self) -> AsyncIterator[ApiKey]:
        """Every key, streamed (gateway export)."""
        ...

    def import_session(self) -> contextlib.AbstractAsyncContextManager[ImportSession]:
        """Staging tables and one transaction for gateway import (``manage/transfer.py``)."""
        ...


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the store could not be used (locked, read-only, disk full, gone),
    as opposed to a bug: the database driver's errors, I/O errors and StoreError."""
    if isinstance(exc, StoreError | OSError | sqlite3.Error | TimeoutError):
        return True
    # asyncpg's errors (the server's, and the connection's), without importing it for SQLite.
    return type(exc).__module__.startswith("asyncpg")
