"""The SQLite key store, through aiosqlite (one connection, one worker thread).

WAL mode, so readers never wait for the writer; a busy timeout, so a CLI write while the server
runs waits instead of failing. The schema version lives in ``PRAGMA user_version`` and is migrated
forward inside ``BEGIN IMMEDIATE``, so concurrent starters migrate once. The change counter
(``changes.py``) is the file ``<database>-changes`` beside the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

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
from gateway.store.changes import ChangeCounter
from gateway.store.schema import SCHEMA_VERSION, check_not_newer, migrations
from gateway.store.staging import staging_tables

if TYPE_CHECKING:
    from gateway.store.staging import ImportSession

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "sqlite_path"]

BUSY_TIMEOUT_MS = 5000

# The store's names for the kinds of value the schema and the import's staging tables use.
_TYPES = dict(real="REAL", big_integer="INTEGER", boolean="INTEGER")
MIGRATIONS = migrations(**_TYPES)

_KEY_COLUMNS = ", ".join(KEY_COLUMNS)
_KEY_FIELDS = len(KEY_COLUMNS)
_INSERT_KEY = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ({', '.join('?' * _KEY_FIELDS)})"
_COUNT_ACTIVE_KEYS = (
    "SELECT count(*) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
)
_ACTIVE_USER = "SELECT 1 FROM users WHERE id = ? AND subscription = 'active' AND updated_at <= ?"
_INSERT_KEY_CHECKED = (
    f"INSERT INTO api_keys ({_KEY_COLUMNS}) SELECT {', '.join('?' * _KEY_FIELDS)}"
    f" WHERE (? = 0 OR EXISTS ({_ACTIVE_USER}))"
    f" AND (? IS NULL OR ({_COUNT_ACTIVE_KEYS}) < ?)"
)
_USER_COLUMNS = ", ".join(USER_COLUMNS)
_FIND_KEY = FIND_KEY_BY_HASH + "?"


async def _use_wal(db: aiosqlite.Connection) -> None:
    """Switch the database to WAL (it stays so in the file).

    Only the first start-up switches; SQLite answers a switch that collides with another
    process's transaction with "locked" at once, without its busy handler, so retry that a
    bounded number of times.
    """
    for attempt in range(100):
        try:
            async with db.execute("PRAGMA journal_mode") as cursor:
                row = await cursor.fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            await db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            await asyncio.sleep(0.02)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` -> relative.db, ``sqlite:////abs/x.db`` -> /abs/x.db."""
    return Path(url.removeprefix("sqlite:///"))


def _file_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


class SQLiteStore:
    # A file on this host: a lock that keeps this process from reading keeps writers out too.
    shared = False

    def unheard_for(self) -> float | None:
        return None  # the change counter is a file on this host: always read

    def __init__(self, db: aiosqlite.Connection, counter: ChangeCounter, path: Path) -> None:
        # One connection serves every coroutine of the process: a write must not land inside
        # another's open transaction (a rotation, a usage flush, an import), so each holds this.
        self._writing = asyncio.Lock()
        self._db = db
        self._counter = counter
        self.path = path
        self._file_id = _file_id(path)

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> SQLiteStore:
        path = sqlite_path(url)
        if not path.parent.is_dir():
            raise StoreError(f"{url}: the folder {path.parent} does not exist; create it or change store.url")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{url}: cannot open the database: {exc}") from None
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await _use_wal(db)
            await db.execute("PRAGMA foreign_keys = ON")
            # Beside the database file itself, as SQLite's WAL is: a path through a symbolic link
            # must reach the same counter, or a write through one would go unseen through the other.
            counter = ChangeCounter(Path(str(path.resolve()) + "-changes"))
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise StoreError(f"{url}: cannot use the database: {exc}") from None
        store = cls(db, counter, path)
        try:
            if migrate:
                await store.migrate()
            else:
                await store._check_not_newer(await store.schema_version())
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()
        self._counter.close()

    def changes(self) -> int:
        return self._counter.value()

    async def schema_version(self) -> int:
        row = await self._one("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def check(self) -> None:
        try:
            await self.schema_version()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        # An open SQLite file keeps working after it is deleted or replaced, but the CLI and any
        # other process then write elsewhere: revocations would never reach this process.
        try:
            current = await asyncio.to_thread(_file_id, self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from None
        if current != self._file_id:
            raise StoreError(f"{self.path} was replaced after the gateway opened it; restart the gateway")

    async def _check_not_newer(self, version: int) -> None:
        check_not_newer(version, str(self.path))

    async def migrate(self) -> int:
        async with self._writing:
            return await self._migrate()

    async def _migrate(self) -> int:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            version = await self.schema_version()
            await self._check_not_newer(version)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    await self._db.execute(statement)
            if version < SCHEMA_VERSION:
                await self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        """Run one write in its own transaction, then bump the change counter; the rows changed."""
        async with self._writing:
            cursor = await self._db.execute(sql, params)
        self._counter.bump()
        return cursor.rowcount

    # ------------------------------------------------------------------------------ users

    async def add_user(self, user: User) -> bool:
        try:
            await self._write(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (user.id, user.subscription, user.created_at, user.updated_at, user.rate_limits),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    # Each read runs whole in one call on aiosqlite's thread, its statement stepped to the end: a
    # caller cancelled midway (a look-up timeout, a client gone) cannot leave a statement open
    # that would hold this connection's read snapshot, and so hide later writes (a revocation).
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params))

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return user_from_row(row) if row else None

    async def set_subscription(self, user_id: str, subscription: Subscription, now: float) -> User | None:
        changed = await self._write(
            "UPDATE users SET subscription = ?, updated_at = ? WHERE id = ?", (subscription, now, user_id)
        )
        return await self.get_user(user_id) if changed else None

    async def set_user_rate_limits(self, user_id: str, rate_limits: str | None) -> User | None:
        await self._write("UPDATE users SET rate_limits = ? WHERE id = ?", (rate_limits, user_id))
        return await self.get_user(user_id)

    async def list_users(self) -> Sequence[User]:
        return [
            user_from_row(row) for row in await self._all(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id")
        ]

    async def retire_user(self, user_id: str, now: float) -> tuple[User, int] | None:
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                found = await self._db.execute(
                    "UPDATE users SET subscription = 'inactive', updated_at = ? WHERE id = ?", (now, user_id)
                )
                if found.rowcount == 0:
                    await self._db.execute("ROLLBACK")
                    return None
                revoked = await self._db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now, user_id)
                )
                # Its portal links, not yet opened, open nothing either (if it is made active again).
                await self._db.execute("DELETE FROM portal_links WHERE user_id = ?", (user_id,))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        self._counter.bump()
        user = await self.get_user(user_id)
        assert user is not None  # a user is never deleted
        return user, revoked.rowcount

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
            await self._write(_INSERT_KEY, key_row(key))
            return True
        # One statement, and SQLite has one writer: the checks and the insert cannot interleave.
        checks = (int(active_user), key.user_id, unchanged_since, max_active, key.user_id, now, max_active)
        return await self._write(_INSERT_KEY_CHECKED, (*key_row(key), *checks)) == 1

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return key_from_row(row) if row else None

    async def find_key(self, key_hash: str) -> tuple[ApiKey, User] | None:
        row = await self._one(_FIND_KEY, (key_hash,))
        if row is None:
            return None
        return found_from_row(row)

    async def list_keys(self, user_id: str | None = None) -> Sequence[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: tuple[str, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id = ?"
            params = (user_id,)
        return [key_from_row(row) for row in await self._all(sql + " ORDER BY created_at, id", params)]

    async def revoke_key(self, key_id: str, now: float) -> ApiKey | None:
        await self._write("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?", (now, key_id))
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
        async with self._writing:
            active = (active_user, unchanged_since)
            return await self._rotate_key(old_key_id, new_key, now, grace_until, max_active, active)

    async def _rotate_key(
        self,
        old_key_id: str,
        new_key: ApiKey,
        now: float,
        grace_until: float | None,
        max_active: int | None,
        active: tuple[bool, float],
    ) -> bool:
        await self._db.execute("BEGIN IMMEDIATE")  # the database's one writer until COMMIT
        try:
            refused = False
            if active[0]:
                async with self._db.execute(_ACTIVE_USER, (new_key.user_id, active[1])) as cursor:
                    refused = await cursor.fetchone() is None
            if not refused and grace_until is not None and max_active is not None:
                async with self._db.execute(_COUNT_ACTIVE_KEYS, (new_key.user_id, now)) as cursor:
                    row = await cursor.fetchone()
                refused = row is not None and row[0] > max_active
            if refused:
                await self._db.execute("ROLLBACK")
                return False
            if grace_until is None:
                replaced = await self._db.execute(
                    "UPDATE api_keys SET replaced_by = ?, revoked_at = coalesce(revoked_at, ?)"
                    " WHERE id = ? AND replaced_by IS NULL AND revoked_at IS NULL",
                    (new_key.id, now, old_key_id),
                )
            else:
                replaced = await self._db.execute(
                    "UPDATE api_keys SET replaced_by = ?, expires_at = min(coalesce(expires_at, ?), ?)"
                    " WHERE id = ? AND replaced_by IS NULL AND revoked_at IS NULL",
                    (new_key.id, grace_until, grace_until, old_key_id),
                )
            if replaced.rowcount == 0:
                await self._db.execute("ROLLBACK")
                return False
            await self._db.execute(_INSERT_KEY, key_row(new_key))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        self._counter.bump()
        return True

    async def set_rate_limits(self, key_id: str, rate_limits: str | None) -> ApiKey | None:
        await self._write("UPDATE api_keys SET rate_limits = ? WHERE id = ?", (rate_limits, key_id))
        return await self.get_key(key_id)

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        names = sorted(changes)
        assert names and KEY_UPDATABLE.issuperset(names), names  # column names from our own set only
        assignments = ", ".join(f"{name} = ?" for name in names)
        condition = STILL_ITS_OWN_END if "expires_at" in changes else ""
        changed = await self._write(
            f"UPDATE api_keys SET {assignments} WHERE id = ?{condition}", (*(changes[name] for name in names), key_id)
        )
        return await self.get_key(key_id) if changed else None

    # --------------------------------------------------------------------------- audit

    async def record_audit(self, event: AuditEvent) -> None:
        async with self._writing:
            await self._db.execute(RECORD_AUDIT, audit_row(event))

    async def audit_events(self, matching: AuditFilter, before_id: str | None, limit: int) -> Sequence[AuditEvent]:
        sql, params = audit_query(matching, before_id, limit)
        return [AuditEvent(*row) for row in await self._all(sql, params)]

    async def drop_audit_before(self, at: float) -> None:
        async with self._writing:
            await self._db.execute(DROP_AUDIT_BEFORE, (at,))

    async def add_portal_link(
        self, digest: str, user_id: str, return_url: str | None, expires_at: float, now: float
    ) -> None:
        async with self._writing:
            await self._db.execute(DROP_PORTAL_LINKS_BEFORE, (now,))
            await self._db.execute(ADD_PORTAL_LINK, (digest, user_id, return_url, expires_at))

    async def take_portal_link(self, digest: str) -> tuple[str, str | None, float] | None:
        async with self._writing:
            rows = list(await self._db.execute_fetchall(TAKE_PORTAL_LINK, (digest,)))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def add_usage(self, deltas: Mapping[str, UsageDelta], day: str) -> None:
        async with self._writing:
            await self._add_usage(deltas, day)

    async def _add_usage(self, deltas: Mapping[str, UsageDelta], day: str) -> None:
        rows = [
            {
                "requests": d.requests,
                "rate_limited": d.rate_limited,
                "credits": d.credits,
                "used": d.last_used_at,
                "id": k,
            }
            for k, d in deltas.items()
        ]
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.executemany(_ADD_USAGE, rows)
            await self._db.executemany(ADD_DAILY_USAGE, daily_rows(deltas, day))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def credit_balance(self, user_id: str) -> tuple[int, str | None, float | None] | None:
        row = await self._one(CREDIT_BALANCE, (user_id,))
        return None if row is None else (int(row[0]), row[1], row[2])

    async def change_credits(
        self, user_id: str, *, add: int = 0, set_to: int | None = None, reason: str, at: float
    ) -> int | None:
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                row = await self._one(CREDIT_BALANCE, (user_id,))
                if row is None:
                    await self._db.execute("ROLLBACK")
                    return None
                change = add if set_to is None else set_to - int(row[0])
                if set_to is None:
                    [[balance]] = await self._db.execute_fetchall(ADD_CREDITS, (change, user_id))
                else:
                    [[balance]] = await self._db.execute_fetchall(SET_CREDITS, (set_to, at, user_id))
                await self._db.execute(RECORD_CREDIT_CHANGE, (user_id, at, change, balance, reason))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        self._counter.bump()  # a change the running gateways must see
        return int(balance)

    async def refill_credits(self, user_id: str, *, amount: int, period: str, at: float, pending: int = 0) -> None:
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                before = await self._one(CREDIT_BALANCE, (user_id,))
                rows = await self._db.execute_fetchall(
                    REFILL_CREDITS, (period, pending, amount, amount, pending, amount, at, user_id, period)
                )
                if rows and before is not None:
                    balance = int(next(iter(rows))[0])
                    await self._db.execute(
                        RECORD_CREDIT_CHANGE, (user_id, at, balance - int(before[0]), balance, f"refill {period}")
                    )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def spend_credits(self, spent: Sequence[tuple[str, float, int]], at: float) -> list[bool]:
        taken = []
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for user_id, since, credits in spent:
                    rows = list(await self._db.execute_fetchall(SPEND_CREDITS, (credits, user_id, since)))
                    for (balance,) in rows:
                        await self._db.execute(RECORD_CREDIT_CHANGE, (user_id, at, -credits, balance, "spent"))
                    taken.append(bool(rows))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        return taken

    async def daily_usage(
        self, *, key_id: str | None = None, user_id: str | None = None, since: str, until: str
    ) -> Sequence[DailyUsage]:
        sql, owner = (KEY_DAILY_USAGE, key_id) if key_id is not None else (USER_DAILY_USAGE, user_id)
        return [daily_from_row(row) for row in await self._all(sql, (owner, since, until))]

    async def busiest_keys(self, day: str, limit: int) -> Sequence[tuple[ApiKey, DailyUsage]]:
        return [busy_key_from_row(row) for row in await self._all(BUSIEST_KEYS, (day, limit))]

    async def drop_usage_before(self, day: str) -> None:
        async with self._writing:
            await self._db.execute(DROP_USAGE_BEFORE, (day,))

    async def save_windows(self, windows: Sequence[WindowCount], now: float) -> None:
        rows = [(w.scope, w.owner, w.spec, w.hits, w.ends_at) for w in windows]
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(SAVE_WINDOW, rows)
                await self._db.execute(DROP_CLOSED_WINDOWS, (now,))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def load_windows(self, now: float) -> Sequence[WindowCount]:
        return [WindowCount(*row) for row in await self._all(LOAD_WINDOWS, (now,))]

    async def iter_users(self) -> AsyncIterator[User]:
        async with self._db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id") as cursor:
            while rows := await cursor.fetchmany(1000):
                for row in rows:
                    yield user_from_row(row)

    async def iter_keys(self) -> AsyncIterator[ApiKey]:
        async with self._db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id") as cursor:
            while rows := await cursor.fetchmany(1000):
                for row in rows:
                    yield key_from_row(row)

    @contextlib.asynccontextmanager
    async def import_session(self) -> AsyncIterator[ImportSession]:
        # The connection's write lock is held for each staging batch and from begin_write to the
        # end, not while the file streams in: an admin revocation meanwhile waits for one batch.
        session = _SQLiteImport(self._db, self._writing)
        async with self._writing:
            for statement in staging_tables(**_TYPES):
                await self._db.execute(statement)
        try:
            yield session
        finally:
            if not session.locked:
                await self._writing.acquire()
            try:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                await self._db.execute("DROP TABLE temp.import_users")
                await self._db.execute("DROP TABLE temp.import_keys")
            finally:
                self._writing.release()
        if session.committed:
            self._counter.bump()

    async def usage_by_user(self, user_id: str | None = None) -> Sequence[UserUsage]:
        sql = USAGE_BY_USER
        params: tuple[str, ...] = ()
        if user_id is not None:
            sql, params = sql + " WHERE user_id = ?", (user_id,)
        return [usage_from_row(row) for row in await self._all(sql + " GROUP BY user_id ORDER BY user_id", params)]


_ADD_USAGE = (
    "UPDATE api_keys SET requests = requests + :requests, rate_limited = rate_limited + :rate_limited,"
    " credits = credits + :credits, last_used_at = coalesce(max(last_used_at, :used), :used, last_used_at)"
    " WHERE id = :id"
)


class _SQLiteImport:
    """An import on the store's connection: staging in the connection's temporary database (which
    takes no lock on the store file), then one BEGIN IMMEDIATE for the checks and the merge."""

    distinct = "IS NOT"

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        self._db = db
        self._writing = writing
        self.locked = False  # holding the connection's write lock, from begin_write on
        self.committed = False

    async def stage(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        async with self._writing:
            await self._db.execute("BEGIN")
            try:
                await self._db.executemany(f"INSERT INTO temp.{table} ({', '.join(columns)}) VALUES ({marks})", rows)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def begin_write(self) -> None:
        await self._writing.acquire()
        self.locked = True
        await self._db.execute("BEGIN IMMEDIATE")

    async def execute(self, sql: str) -> None:
        await self._db.execute(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._db.execute_fetchall(sql)]

    async def commit(self) -> None:
        await self._db.execute("COMMIT")
        self.committed = True
