"""``gateway import`` and ``gateway export``: users and key hashes as JSON Lines, all or nothing.

The design notes: docs/internals.md, "gateway/manage/transfer.py"."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.auth.keys import key_id_for_hash
from gateway.manage.rules import (
    InvalidField,
    check_limits,
    check_metadata,
    check_name,
    check_subscription,
    check_user_id,
    holds_a_key,
)
from gateway.store.base import ApiKey, KeyStore, User
from gateway.store.staging import STAGED_KEY_COLUMNS, STAGED_USER_COLUMNS, ImportSession

__all__ = ["ImportReport", "decode_line", "export_lines", "run_import"]

BATCH = 5000
MAX_ERRORS_SHOWN = 20

USER_FIELDS = {"type", "id", "subscription", "created_at", "rate_limits"}
KEY_FIELDS = {
    "type",
    "user_id",
    "sha256",
    "prefix",
    "id",
    "name",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "requests",
    "credits",
    "rate_limited",
    "rate_limits",
    "replaced_by",
    "legacy",
    "metadata",
}
_HEX = frozenset("0123456789abcdef")
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# What a merge sets on a key that is already stored: (column, expression over {old} and {new}).
_KEY_UPDATES = (
    ("name", "{new}.name"),
    ("prefix", "{new}.prefix"),
    # An import may bring an expiry closer, never push it back or remove it (a rotation's grace
    # end here is an expiry too): the earlier of the two, NULL meaning never.
    (
        "expires_at",
        "CASE WHEN {old}.expires_at IS NULL OR {new}.expires_at < {old}.expires_at"
        " THEN {new}.expires_at ELSE {old}.expires_at END",
    ),
    ("revoked_at", "coalesce({old}.revoked_at, {new}.revoked_at)"),
    (
        "last_used_at",
        "CASE WHEN {old}.last_used_at IS NULL OR {new}.last_used_at > {old}.last_used_at"
        " THEN coalesce({new}.last_used_at, {old}.last_used_at) ELSE {old}.last_used_at END",
    ),
    ("requests", "CASE WHEN {new}.requests > {old}.requests THEN {new}.requests ELSE {old}.requests END"),
    (
        "rate_limited",
        "CASE WHEN {new}.rate_limited > {old}.rate_limited THEN {new}.rate_limited ELSE {old}.rate_limited END",
    ),
    ("credits", "CASE WHEN {new}.credits > {old}.credits THEN {new}.credits ELSE {old}.credits END"),
    ("rate_limits", "coalesce({new}.rate_limits, {old}.rate_limits)"),
    ("replaced_by", "coalesce({new}.replaced_by, {old}.replaced_by)"),
    # A line without metadata keeps what is stored (as rate_limits): an export of another system
    # that has none does not wipe it.
    ("metadata", "coalesce({new}.metadata, {old}.metadata)"),
)


class LineError(Exception):
    pass


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportReport:
    lines: int = 0
    users: Counts = field(default_factory=Counts)
    keys: Counts = field(default_factory=Counts)
    errors: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_ERRORS_SHOWN
    error_count: int = 0
    dry_run: bool = False
    written: bool = False
    warnings: list[str] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_SHOWN:
            self.errors.append((line, message))

    def document(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "written": self.written,
            "lines": self.lines,
            "users": vars(self.users),
            "keys": vars(self.keys),
            "errors": [{"line": line, "message": message} for line, message in self.errors],
            "error_count": self.error_count,
            "warnings": self.warnings,
        }


# ------------------------------------------------------------------------------ one line


def decode_line(line: bytes) -> str:
    """A line of the file as text; one that is not UTF-8 is reported as not JSON, by its number."""
    try:
        return line.decode()
    except UnicodeDecodeError:
        return "\x00"


# Dates from 1970 up to the end of 9999: what ISO 8601 can write (milliseconds since 1970 land
# far beyond, and are refused rather than taken for a date in the year 50000).
_LATEST = 253402300799.0


def _date(record: dict[str, Any], name: str) -> float | None:
    seconds = _any_date(record, name)
    if seconds is not None and not 0 <= seconds <= _LATEST:
        raise LineError(f"{name} is not between 1970 and 9999 (milliseconds instead of seconds?)")
    return seconds


def _any_date(record: dict[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise LineError(f"{name} must be an ISO 8601 date or Unix seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise LineError(f"{name} must be an ISO 8601 date or Unix seconds")
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise LineError(f"{name} {value!r} is not an ISO 8601 date") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.timestamp()
        except (OverflowError, OSError, ValueError):
            raise LineError(f"{name} {value!r} is not between 1970 and 9999") from None
    raise LineError(f"{name} must be an ISO 8601 date or Unix seconds")


# What a 64-bit counter column holds (both stores).
MAX_COUNT = 2**63 - 1


def _count(record: dict[str, Any], name: str) -> int:
    value = record.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise LineError(f"{name} must be a whole number from 0 to {MAX_COUNT}")
    return value


def _text(record: dict[str, Any], name: str, *, required: bool = False, longest: int = 255) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise LineError(f"{name} is missing")
        return None
    if not isinstance(value, str) or not value or len(value) > longest or not value.isprintable():
        raise LineError(f"{name} must be 1 to {longest} printable characters")
    return value


def parse_line(line: int, text: str, now: float, prefixes: Sequence[str] = ()) -> tuple[str, tuple[Any, ...]]:
    """("user" or "key", the staged row); LineError says what is wrong. ``prefixes``: those of
    keys, which a key's metadata must not hold."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise LineError("not a JSON object")
    kind = record.get("type")
    if kind not in ("user", "key"):
        raise LineError('"type" must be "user" or "key"')
    unknown = sorted(set(record) - (USER_FIELDS if kind == "user" else KEY_FIELDS))
    if unknown:
        raise LineError(f"unknown field {unknown[0]!r} for a {kind}")
    try:
        if kind == "user":
            user_id = check_user_id(_text(record, "id", required=True) or "")
            subscription = check_subscription(record.get("subscription") or "")
            limits = check_limits(record.get("rate_limits"))
            return "user", (line, user_id, subscription, _date(record, "created_at") or now, limits)
        key_hash = record.get("sha256")
        if not isinstance(key_hash, str) or len(key_hash) != 64 or not _HEX.issuperset(key_hash):
            raise LineError("sha256 must be 64 lowercase hexadecimal characters")
        user_id = check_user_id(_text(record, "user_id", required=True) or "")
        key_id = record.get("id")
        if key_id is None:
            key_id = key_id_for_hash(key_hash)
        elif not isinstance(key_id, str) or not KEY_ID_PATTERN.match(key_id):
            raise LineError("id must be 1 to 64 of A-Z a-z 0-9 _ . - (it is used in URLs and headers)")
        legacy = record.get("legacy", True)
        if not isinstance(legacy, bool):
            raise LineError("legacy must be true or false")
        metadata = check_metadata(record.get("metadata"))
        if metadata is not None and holds_a_key(metadata, prefixes):
            raise LineError("metadata must not hold a key")
        return "key", (
            line,
            key_id,
            user_id,
            key_hash,
            _text(record, "prefix", required=True, longest=64),
            check_name(record.get("name")),
            _date(record, "created_at") or now,
            _date(record, "expires_at"),
            _date(record, "revoked_at"),
            _date(record, "last_used_at"),
            _text(record, "replaced_by", longest=64),
            check_limits(record.get("rate_limits")),
            _count(record, "requests"),
            _count(record, "rate_limited"),
            _count(record, "credits"),
            legacy,
            metadata,
        )
    except InvalidField as exc:
        raise LineError(str(exc)) from None
    except TypeError:
        raise LineError("a field has the wrong type") from None


# ------------------------------------------------------------------------------ the file


async def run_import(
    session: ImportSession, lines: AsyncIterable[str], *, now: float, dry_run: bool, prefixes: Sequence[str]
) -> ImportReport:
    """Stage, check and (unless ``dry_run`` or any error) merge ``lines`` in ``session``.
    ``prefixes`` are those a key may start with (keys.prefix and keys.legacy_prefixes)."""
    report = ImportReport(dry_run=dry_run)
    users: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    uncovered = 0
    async for text in lines:
        report.lines += 1
        if not text.strip():
            continue
        try:
            kind, row = parse_line(report.lines, text, now, prefixes)
        except LineError as exc:
            report.error(report.lines, str(exc))
            continue
        if kind == "user":
            users.append(row)
        else:
            keys.append(row)
            if not str(row[4]).startswith(tuple(prefixes)):
                uncovered += 1
        if len(users) + len(keys) >= BATCH:
            await _stage(session, users, keys)
    await _stage(session, users, keys)
    if uncovered:
        report.warnings.append(
            f"{uncovered} keys have a prefix that is neither keys.prefix nor in keys.legacy_prefixes:"
            " they will not authenticate until keys.legacy_prefixes lists theirs"
        )
    await _index(session)
    if report.error_count:  # bad lines: no need to look further
        return report
    await session.begin_write()
    await _check(session, report)
    if report.error_count:
        return report
    await _count_changes(session, report)
    if not dry_run:
        await _merge(session, now)
        await session.commit()
        report.written = True
    return report


async def _stage(session: ImportSession, users: list[tuple[Any, ...]], keys: list[tuple[Any, ...]]) -> None:
    if users:
        await session.stage("import_users", STAGED_USER_COLUMNS, users)
        users.clear()
    if keys:
        await session.stage("import_keys", STAGED_KEY_COLUMNS, keys)
        keys.clear()


async def _index(session: ImportSession) -> None:
    for statement in (
        "CREATE INDEX import_users_id ON import_users (id)",
        "CREATE INDEX import_keys_hash ON import_keys (key_hash)",
        "CREATE INDEX import_keys_id ON import_keys (id)",
        "CREATE INDEX import_keys_user ON import_keys (user_id)",
    ):
        await session.execute(statement)


async def _check(session: ImportSession, report: ImportReport) -> None:
    """What only the whole file (and the store) can tell: each check lists its first lines, and
    counts them all."""
    # (rows, what to list of each, how to group them, the message). Joins on the store's ids and
    # hashes, which are unique, give one row per line; only duplicates need grouping.
    checks: list[tuple[str, str, str, str]] = [
        (
            f"{table} a JOIN {table} b ON a.{column} = b.{column} AND a.line < b.line",
            "b.line, min(a.line)",
            " GROUP BY b.line",
            f"duplicate: {what} is on line {{}} already",
        )
        for table, column, what in (
            ("import_users", "id", "the user"),
            ("import_keys", "key_hash", "a key with this sha256"),
            ("import_keys", "id", "a key with this id"),
        )
    ]
    checks += [
        (
            "import_keys b WHERE NOT EXISTS (SELECT 1 FROM import_users u WHERE u.id = b.user_id)"
            " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = b.user_id)",
            "b.line, b.user_id",
            "",
            "user {!r} is neither in the file nor in the store",
        ),
        (
            "import_keys b JOIN api_keys a ON a.id = b.id WHERE a.key_hash <> b.key_hash",
            "b.line, b.id",
            "",
            "key id {!r} belongs to another key in the store",
        ),
        (
            "import_keys b JOIN api_keys a ON a.key_hash = b.key_hash WHERE a.user_id <> b.user_id",
            "b.line, a.user_id",
            "",
            "this key belongs to user {!r} in the store; a key never changes owner",
        ),
    ]
    for source, columns, grouping, message in checks:
        rows = await session.fetch(f"SELECT {columns} FROM {source}{grouping} ORDER BY b.line LIMIT {MAX_ERRORS_SHOWN}")
        for line, detail in rows:
            report.error(int(line), message.format(detail))
        [(total,)] = await session.fetch(f"SELECT count(DISTINCT b.line) FROM {source}")
        report.error_count += int(total) - len(rows)
    report.errors.sort()
    del report.errors[MAX_ERRORS_SHOWN:]


def _user_changed(old: str, new: str, distinct: str) -> str:
    """A user line changes the stored user: its subscription, or limits it gives (none given: kept)."""
    return (
        f"{old}.subscription {distinct} {new}.subscription"
        f" OR {old}.rate_limits {distinct} coalesce({new}.rate_limits, {old}.rate_limits)"
    )


def _key_changed(old: str, new: str, distinct: str) -> str:
    return " OR ".join(
        f"{old}.{column} {distinct} ({expression.format(old=old, new=new)})" for column, expression in _KEY_UPDATES
    )


async def _count_changes(session: ImportSession, report: ImportReport) -> None:
    d = session.distinct
    [(users, users_new, users_changed)] = await session.fetch(
        "SELECT count(*), sum(CASE WHEN u.id IS NULL THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN u.id IS NOT NULL AND ({_user_changed('u', 'i', d)}) THEN 1 ELSE 0 END)"
        " FROM import_users i LEFT JOIN users u ON u.id = i.id"
    )
    created, updated = int(users_new or 0), int(users_changed or 0)
    report.users = Counts(created, updated, int(users) - created - updated)
    [(keys, keys_new, keys_changed)] = await session.fetch(
        "SELECT count(*), sum(CASE WHEN a.id IS NULL THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN a.id IS NOT NULL AND ({_key_changed('a', 'i', d)}) THEN 1 ELSE 0 END)"
        " FROM import_keys i LEFT JOIN api_keys a ON a.key_hash = i.key_hash"
    )
    created, updated = int(keys_new or 0), int(keys_changed or 0)
    report.keys = Counts(created, updated, int(keys) - created - updated)


async def _merge(session: ImportSession, now: float) -> None:
    d = session.distinct
    await session.execute(
        "INSERT INTO users (id, subscription, created_at, updated_at, rate_limits)"
        f" SELECT id, subscription, created_at, {now!r}, rate_limits FROM import_users WHERE true"
        " ON CONFLICT (id) DO UPDATE SET subscription = excluded.subscription,"
        " rate_limits = coalesce(excluded.rate_limits, users.rate_limits),"
        f" updated_at = excluded.updated_at WHERE {_user_changed('users', 'excluded', d)}"
    )
    columns = [c for c in STAGED_KEY_COLUMNS if c != "line"]
    updates = ", ".join(f"{c} = {e.format(old='api_keys', new='excluded')}" for c, e in _KEY_UPDATES)
    await session.execute(
        f"INSERT INTO api_keys ({', '.join(columns)}) SELECT {', '.join(columns)} FROM import_keys WHERE true"
        f" ON CONFLICT (key_hash) DO UPDATE SET {updates} WHERE {_key_changed('api_keys', 'excluded', d)}"
    )


# ------------------------------------------------------------------------------ export


def user_line(user: User) -> str:
    record = {
        "type": "user",
        "id": user.id,
        "subscription": user.subscription,
        "created_at": user.created_at,
        "rate_limits": user.rate_limits,
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def key_line(key: ApiKey) -> str:
    record = {
        "type": "key",
        "id": key.id,
        "user_id": key.user_id,
        "sha256": key.key_hash,
        "prefix": key.prefix,
        "name": key.name,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "requests": key.requests,
        "rate_limited": key.rate_limited,
        "credits": key.credits,
        "rate_limits": key.rate_limits,
        "replaced_by": key.replaced_by,
        "legacy": key.legacy,
        "metadata": None if key.metadata is None else json.loads(key.metadata),
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


async def export_lines(store: KeyStore) -> AsyncIterator[str]:
    """Every user, then every key, as import lines (hashes included: treat the output as a secret)."""
    async for user in store.iter_users():
        yield user_line(user)
    async for key in store.iter_keys():
        yield key_line(key)
