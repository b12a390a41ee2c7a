"""The PostgreSQL key store, through an asyncpg connection pool: the same schema, versions and
behaviour as the SQLite store, for deployments with several replicas.

The design notes: docs/internals.md, "gateway/store/postgres.py"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from gateway.store.base import (
    ADD_CREDITS,
    ADD_DAILY_USAGE,
    ADD_PORTAL_LINK,
    BUSIEST_KEYS,
    CREDIT_BALANCE,
    DROP_AUDIT_BEFORE,
    DROP_CLOSED_WINDOWS,
    DROP_PORTAL_LINKS_BEFORE,
    DROP_USAGE_BEFORE,
    FIND_KEY_BY_HASH,
    KEY_COLUMNS,
    KEY_DAILY_USAGE,
    KEY_UPDATABLE,
    LOAD_WINDOWS,
    RECORD_AUDIT,
    RECORD_CREDIT_CHANGE,
    REFILL_CREDITS,
    SAVE_WINDOW,
    SET_CREDITS,
    SPEND_CREDITS,
    STILL_ITS_OWN_END,
    TAKE_PORTAL_LINK,
    USAGE_BY_USER,
    USER_COLUMNS,
    USER_DAILY_USAGE,
    ApiKey,
    AuditEvent,
    AuditFilter,
    DailyUsage,
    StoreError,
    Subscription,
    UsageDelta,
    User,
    UserUsage,
    WindowCount,
    audit_query,
    audit_row,
    busy_key_from_row,
    daily_from_row,
    daily_rows,
    found_from_row,
    key_from_row,
    key_row,
    usage_from_row,
    user_from_row,
)
from gateway.store.schema import SCHEMA_VERSION, check_not_newer, migrations
from gateway.store.staging import staging_tables

if TYPE_CHECKING:
    from gateway.store.staging import ImportSession

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "redact"]

logger = logging.getLogger("gateway.error")

CHANNEL = "gateway_changes"
# Any fixed number: the advisory lock that serialises migrations of this schema.
MIGRATION_LOCK = 0x6761_7465_7761_7900
RECONNECT_SECONDS = 1.0
# How often the notification connection is asked to answer: one that died silently (a network
# that drops packets without a reset) would hear no change and never say so.
LISTEN_CHECK_SECONDS = 5.0

# The store's names for the kinds of value the schema and the import's staging tables use.
_TYPES = dict(real="DOUBLE PRECISION", big_integer="BIGINT", boolean="BOOLEAN")
MIGRATIONS = migrations(**_TYPES)

_KEY_COLUMNS = ", ".join(KEY_COLUMNS)
_KEY_FIELDS = len(KEY_COLUMNS)
# Additions of one user's keys under a limit wait for each other, until the transaction ends.
_LOCK_USERS_KEYS = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
# FOR SHARE: a retire_user (which updates the row) waits for this transaction's key, and revokes it;
# or this one waits for the retirement, and sees the user inactive.
_ACTIVE_USER = "SELECT 1 FROM users WHERE id = $1 AND subscription = 'active' AND updated_at <= $2 FOR SHARE"
_COUNT_ACTIVE_KEYS = (
    "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > $2)"
)
_INSERT_KEY = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ({', '.join(f'${i + 1}' for i in range(_KEY_FIELDS))})"
_USER_COLUMNS = ", ".join(USER_COLUMNS)
_FIND_KEY = FIND_KEY_BY_HASH + "$1"
_ADD_USAGE = (
    "UPDATE api_keys SET requests = requests + $1, rate_limited = rate_limited + $2, credits = credits + $3,"
    " last_used_at = greatest(last_used_at, $4) WHERE id = $5"
)


def _numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as PostgreSQL wants them ($1, $2, ...)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


_SAVE_WINDOW = _numbered(SAVE_WINDOW)
_DROP_CLOSED_WINDOWS = _numbered(DROP_CLOSED_WINDOWS)
_LOAD_WINDOWS = _numbered(LOAD_WINDOWS)
_ADD_DAILY_USAGE = _numbered(ADD_DAILY_USAGE)
_RECORD_AUDIT = _numbered(RECORD_AUDIT)
_DROP_AUDIT_BEFORE = _numbered(DROP_AUDIT_BEFORE)
_ADD_PORTAL_LINK = _numbered(ADD_PORTAL_LINK)
_DROP_PORTAL_LINKS_BEFORE = _numbered(DROP_PORTAL_LINKS_BEFORE)
_TAKE_PORTAL_LINK = _numbered(TAKE_PORTAL_LINK)
_KEY_DAILY_USAGE = _numbered(KEY_DAILY_USAGE)
_USER_DAILY_USAGE = _numbered(USER_DAILY_USAGE)
_DROP_USAGE_BEFORE = _numbered(DROP_USAGE_BEFORE)
_BUSIEST_KEYS = _numbered(BUSIEST_KEYS)
_CREDIT_BALANCE = _numbered(CREDIT_BALANCE)
_ADD_CREDITS = _numbered(ADD_CREDITS)
_SET_CREDITS = _numbered(SET_CREDITS)
_SPEND_CREDITS = _numbered(SPEND_CREDITS)
_REFILL_CREDITS = _numbered(REFILL_CREDITS)
_RECORD_CREDIT_CHANGE = _numbered(RECORD_CREDIT_CHANGE)


def redact(url: str) -> str:
    """The URL without its password (user:password@ or ?password=), for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:***@{host}"
    rest = re.sub(r"([?&](?:ssl)?password=)[^&]*", r"\1***", rest)
    return f"{scheme}{sep}{rest}"


class PostgresStore:
    shared = True
    clock: Callable[[], float] = staticmethod(time.monotonic)  # what unheard_for is measured with

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._changes = 0
        self._listener: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._unheard_since: float | None = None

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # ValueError: asyncpg's word for a URL it cannot read (a port that is not a number).
            raise StoreError(f"{redact(url)}: cannot connect: {exc}") from None
        store = cls(pool, url)
        try:
            if migrate:
                await store.migrate()
            else:
                await store._check_not_newer(await store.schema_version())
            await store._listen()
            store._watch = asyncio.get_running_loop().create_task(store._watch_listener())
        except BaseException:
            await store.close()
            raise
        return store

    # ------------------------------------------------------------------ change notifications

    def _heard(self, *_: object) -> None:
        self._changes += 1

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._url)
        try:
            await connection.add_listener(CHANNEL, self._heard)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._lost)
        self._listener = connection

    async def _watch_listener(self) -> None:
        """Ask the notification connection to answer now and then; one that does not is closed
        (and so reconnected, which counts as a change: notifications may have been missed)."""
        while not self._closing:
            await asyncio.sleep(LISTEN_CHECK_SECONDS)
            listener = self._listener
            if listener is None:
                continue
            try:
                await listener.fetchval("SELECT 1", timeout=LISTEN_CHECK_SECONDS / 2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("the store's change notifications stopped answering (%s)", type(exc).__name__)
                listener.terminate()  # calls _lost, which reconnects
                if self._listener is listener:
                    self._lost()

    def unheard_for(self) -> float | None:
        return None if self._unheard_since is None else self.clock() - self._unheard_since

    def _lost(self, *_: object) -> None:
        # Not counted as a change yet: if the server is down, nothing can be written, and keys known
        # good must keep working. Reconnecting counts as one (whatever was missed meanwhile).
        self._listener = None
        if self._unheard_since is None:
            self._unheard_since = self.clock()
        if not self._closing and self._reconnect is None:
            logger.warning("lost the store's change notifications; reconnecting")
            self._reconnect = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        while not self._closing:
            await asyncio.sleep(RECONNECT_SECONDS)
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                continue
            self._changes += 1  # whatever was missed meanwhile: every cached verdict goes
            self._unheard_since = None
            logger.warning("the store's change notifications are back")
            break
        self._reconnect = None

    def changes(self) -> int:
        return self._changes

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=5)
        await self._pool.close()

    # ------------------------------------------------------------------------- schema

    async def schema_version(self) -> int:
        exists = await self._pool.fetchval("SELECT to_regclass('gateway_schema') IS NOT NULL")
        if not exists:
            return 0
        return int(await self._pool.fetchval("SELECT version FROM gateway_schema"))

    async def check(self) -> None:
        try:
            await self._pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"{redact(self._url)}: {exc}") from None

    async def _check_not_newer(self, version: int) -> None:
        check_not_newer(version, str(redact(self._url)))

    async def migrate(self) -> int:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute("CREATE TABLE IF NOT EXISTS gateway_schema (version INTEGER NOT NULL)")
            version = await connection.fetchval("SELECT version FROM gateway_schema")
            if version is None:
                await connection.execute("INSERT INTO gateway_schema (version) VALUES (0)")
                version = 0
            await self._check_not_newer(version)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    await connection.execute(statement)
            if version < SCHEMA_VERSION:
                await connection.execute("UPDATE gateway_schema SET version = $1", SCHEMA_VERSION)
        return SCHEMA_VERSION

    async def _write(self, sql: str, *params: Any) -> str:
        """Run one write and announce it, in one transaction; the command's status ("UPDATE 1")."""
        async with self._pool.acquire() as connection, connection.transaction():
            status: str = await connection.execute(sql, *params)
            await connection.execute(f"NOTIFY {CHANNEL}")
        self._changes += 1
        return status

    # ------------------------------------------------------------------------------ users

    async def add_user(self, user: User) -> bool:
        status = await self._write(
            f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            user.id,
            user.subscription,
            user.created_at,
            user.updated_at,
            user.rate_limits,
        )
        return status == "INSERT 0 1"

    async def get_user(self, user_id: str) -> User | None:
        row = await self._pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return user_from_row(row) if row else None

    async def set_subscription(self, user_id: str, subscription: Subscription, now: float) -> User | None:
        status = await self._write(
            "UPDATE users SET subscription = $1, updated_at = $2 WHERE id = $3", subscription, now, user_id
        )
        return await self.get_user(user_id) if status != "UPDATE 0" else None

    async def set_user_rate_limits(self, user_id: str, rate_limits: str | None) -> User | None:
        await self._write("UPDATE users SET rate_limits = $1 WHERE id = $2", rate_limits, user_id)
        return await self.get_user(user_id)

    async def list_users(self) -> Sequence[User]:
        rows = await self._pool.fetch(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id")
        return [user_from_row(row) for row in rows]

    async def retire_user(self, user_id: str, now: float) -> tuple[User, int] | None:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"UPDATE users SET subscription = 'inactive', updated_at = $1 WHERE id = $2 RETURNING {_USER_COLUMNS}",
                now,
                user_id,
            )
            if row is None:
                return None  # nothing written: the transaction commits empty
            revoked = await connection.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL", now, user_id
            )
            # Its portal links, not yet opened, open nothing either (if it is made active again).
            await connection.execute("DELETE FROM portal_links WHERE user_id = $1", user_id)
            await connection.execute(f"NOTIFY {CHANNEL}")
        self._changes += 1
        return user_from_row(row), int(revoked.split()[-1])

    # ------------------------------------------------------------------------------- keys

    async def add_key(
        self,
        key: ApiKey,
        *,
        max_active: int | None = None,
        now: float = 0.0,
        active_user: bool = False,
        unchanged_since: float = math.inf,
    ) -> bool:
        if max_active is None and not active_user:
            await self._write(_INSERT_KEY, *key_row(key))
            return True
        async with self._pool.acquire() as connection, connection.transaction():
            active = (active_user, unchanged_since)
            if not await _checked(connection, key.user_id, now, max_active, active, more_than=False):
                return False  # nothing written: the transaction commits empty
            await connection.execute(_INSERT_KEY, *key_row(key))
            await connection.execute(f"NOTIFY {CHANNEL}")
        self._changes += 1
        return True

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return key_from_row(row) if row else None

    async def find_key(self, key_hash: str) -> tuple[ApiKey, User] | None:
        row = await self._pool.fetchrow(_FIND_KEY, key_hash)
        if row is None:
            return None
        return found_from_row(row)

    async def list_keys(self, user_id: str | None = None) -> Sequence[ApiKey]:
        if user_id is None:
            rows = await self._pool.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            rows = await self._pool.fetch(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id", user_id
            )
        return [key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, now: float) -> ApiKey | None:
        await self._write("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2", now, key_id)
        return await self.get_key(key_id)

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
        async with self._pool.acquire() as connection, connection.transaction():
            limit = max_active if grace_until is not None else None  # rotating now adds no active key
            active = (active_user, unchanged_since)
            if not await _checked(connection, new_key.user_id, now, limit, active, more_than=True):
                return False  # nothing written: the transaction commits empty
            if grace_until is None:
                replaced = await connection.execute(
                    "UPDATE api_keys SET replaced_by = $1, revoked_at = coalesce(revoked_at, $2)"
                    " WHERE id = $3 AND replaced_by IS NULL AND revoked_at IS NULL",
                    new_key.id,
                    now,
                    old_key_id,
                )
            else:
                replaced = await connection.execute(
                    "UPDATE api_keys SET replaced_by = $1, expires_at = least(coalesce(expires_at, $2), $2)"
                    " WHERE id = $3 AND replaced_by IS NULL AND revoked_at IS NULL",
                    new_key.id,
                    grace_until,
                    old_key_id,
                )
            if replaced == "UPDATE 0":
                return False  # nothing written: the transaction commits empty
            await connection.execute(_INSERT_KEY, *key_row(new_key))
            await connection.execute(f"NOTIFY {CHANNEL}")
        self._changes += 1
        return True

    async def set_rate_limits(self, key_id: str, rate_limits: str | None) -> ApiKey | None:
        await self._write("UPDATE api_keys SET rate_limits = $1 WHERE id = $2", rate_limits, key_id)
        return await self.get_key(key_id)

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        names = sorted(changes)
        assert names and KEY_UPDATABLE.issuperset(names), names  # column names from our own set only
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=1))
        condition = STILL_ITS_OWN_END if "expires_at" in changes else ""
        status = await self._write(
            f"UPDATE api_keys SET {assignments} WHERE id = ${len(names) + 1}{condition}",
            *(changes[name] for name in names),
            key_id,
        )
        return await self.get_key(key_id) if status != "UPDATE 0" else None

    # --------------------------------------------------------------------------- audit

    async def record_audit(self, event: AuditEvent) -> None:
        await self._pool.execute(_RECORD_AUDIT, *audit_row(event))

    async def audit_events(self, matching: AuditFilter, before_id: str | None, limit: int) -> Sequence[AuditEvent]:
        sql, params = audit_query(matching, before_id, limit)
        return [AuditEvent(*row) for row in await self._pool.fetch(_numbered(sql), *params)]

    async def drop_audit_before(self, at: float) -> None:
        await self._pool.execute(_DROP_AUDIT_BEFORE, at)

    async def add_portal_link(
        self, digest: str, user_id: str, return_url: str | None, expires_at: float, now: float
    ) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_DROP_PORTAL_LINKS_BEFORE, now)
            await connection.execute(_ADD_PORTAL_LINK, digest, user_id, return_url, expires_at)

    async def take_portal_link(self, digest: str) -> tuple[str, str | None, float] | None:
        row = await self._pool.fetchrow(_TAKE_PORTAL_LINK, digest)
        return None if row is None else (row[0], row[1], row[2])

    async def add_usage(self, deltas: Mapping[str, UsageDelta], day: str) -> None:
        # Increments, never totals: flushes from several replicas add up.
        rows = [(d.requests, d.rate_limited, d.credits, d.last_used_at, k) for k, d in deltas.items()]
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(_ADD_USAGE, rows)
            await connection.executemany(_ADD_DAILY_USAGE, daily_rows(deltas, day))

    async def credit_balance(self, user_id: str) -> tuple[int, str | None, float | None] | None:
        row = await self._pool.fetchrow(_CREDIT_BALANCE, user_id)
        return None if row is None else (int(row[0]), row[1], row[2])

    async def change_credits(
        self, user_id: str, *, add: int = 0, set_to: int | None = None, reason: str, at: float
    ) -> int | None:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(_CREDIT_BALANCE + " FOR UPDATE", user_id)
            if row is None:
                return None
            change = add if set_to is None else set_to - int(row[0])
            if set_to is None:
                balance = await connection.fetchval(_ADD_CREDITS, change, user_id)
            else:
                balance = await connection.fetchval(_SET_CREDITS, set_to, at, user_id)
            await connection.execute(_RECORD_CREDIT_CHANGE, user_id, at, change, balance, reason)
            await connection.execute(f"NOTIFY {CHANNEL}")
        self._changes += 1
        return int(balance)

    async def refill_credits(self, user_id: str, *, amount: int, period: str, at: float, pending: int = 0) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            before = await connection.fetchrow(_CREDIT_BALANCE + " FOR UPDATE", user_id)
            balance = await connection.fetchval(
                _REFILL_CREDITS, period, pending, amount, amount, pending, amount, at, user_id, period
            )
            if balance is not None and before is not None:
                change = int(balance) - int(before[0])
                await connection.execute(_RECORD_CREDIT_CHANGE, user_id, at, change, balance, f"refill {period}")

    async def spend_credits(self, spent: Sequence[tuple[str, float, int]], at: float) -> list[bool]:
        taken = []
        async with self._pool.acquire() as connection, connection.transaction():
            for user_id, since, credits in spent:
                balance = await connection.fetchval(_SPEND_CREDITS, credits, user_id, since)
                if balance is not None:
                    await connection.execute(_RECORD_CREDIT_CHANGE, user_id, at, -credits, balance, "spent")
                taken.append(balance is not None)
        return taken

    async def daily_usage(
        self, *, key_id: str | None = None, user_id: str | None = None, since: str, until: str
    ) -> Sequence[DailyUsage]:
        sql, owner = (_KEY_DAILY_USAGE, key_id) if key_id is not None else (_USER_DAILY_USAGE, user_id)
        return [daily_from_row(row) for row in await self._pool.fetch(sql, owner, since, until)]

    async def busiest_keys(self, day: str, limit: int) -> Sequence[tuple[ApiKey, DailyUsage]]:
        return [busy_key_from_row(row) for row in await self._pool.fetch(_BUSIEST_KEYS, day, limit)]

    async def drop_usage_before(self, day: str) -> None:
        await self._pool.execute(_DROP_USAGE_BEFORE, day)

    async def save_windows(self, windows: Sequence[WindowCount], now: float) -> None:
        rows = [(w.scope, w.owner, w.spec, w.hits, w.ends_at) for w in windows]
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(_SAVE_WINDOW, rows)
            await connection.execute(_DROP_CLOSED_WINDOWS, now)

    async def load_windows(self, now: float) -> Sequence[WindowCount]:
        async with self._pool.acquire() as connection:
            return [WindowCount(*row) for row in await connection.fetch(_LOAD_WINDOWS, now)]

    async def iter_users(self) -> AsyncIterator[User]:
        async with self._pool.acquire() as connection, connection.transaction():
            async for row in connection.cursor(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id"):
                yield user_from_row(row)

    async def iter_keys(self) -> AsyncIterator[ApiKey]:
        async with self._pool.acquire() as connection, connection.transaction():
            async for row in connection.cursor(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"):
                yield key_from_row(row)

    @contextlib.asynccontextmanager
    async def import_session(self) -> AsyncIterator[ImportSession]:
        async with self._pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            session = _PostgresImport(connection, transaction)
            try:
                for statement in staging_tables(**_TYPES, suffix=" ON COMMIT DROP"):
                    await connection.execute(statement)
                yield session
            finally:
                if not session.committed:
                    await transaction.rollback()
        if session.committed:
            self._changes += 1

    async def usage_by_user(self, user_id: str | None = None) -> Sequence[UserUsage]:
        if user_id is None:
            rows = await self._pool.fetch(USAGE_BY_USER + " GROUP BY user_id ORDER BY user_id")
        else:
            rows = await self._pool.fetch(
                USAGE_BY_USER + " WHERE user_id = $1 GROUP BY user_id ORDER BY user_id", user_id
            )
        return [usage_from_row(row) for row in rows]


class _PostgresImport:
    """An import in one transaction on one connection; rows staged with COPY."""

    distinct = "IS DISTINCT FROM"

    def __init__(self, connection: asyncpg.Connection, transaction: Any) -> None:
        self._connection = connection
        self._transaction = transaction
        self.committed = False

    async def stage(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        await self._connection.copy_records_to_table(table, records=rows, columns=list(columns))

    async def begin_write(self) -> None:
        """Already in the transaction: PostgreSQL's rows lock as they are written."""

    async def execute(self, sql: str) -> None:
        await self._connection.execute(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._connection.fetch(sql)]

    async def commit(self) -> None:
        await self._connection.execute(f"NOTIFY {CHANNEL}")
        await self._transaction.commit()
        self.committed = True


async def _checked(
    connection: Any,
    user_id: str,
    now: float,
    max_active: int | None,
    active: tuple[bool, float],
    *,
    more_than: bool,
) -> bool:
    """Whether a key of ``user_id`` may be added in this transaction: its subscription active and
    unchanged since ``active[1]`` (if ``active[0]``), and its active keys under ``max_active`` (at
    most, with ``more_than``: a rotation's grace overlaps by one), under the per-user lock held
    until the transaction ends."""
    if active[0] and await connection.fetchval(_ACTIVE_USER, user_id, active[1]) is None:
        return False
    if max_active is None:
        return True
    await connection.execute(_LOCK_USERS_KEYS, user_id)
    count = await connection.fetchval(_COUNT_ACTIVE_KEYS, user_id, now)
    return bool(count <= max_active if more_than else count < max_active)
