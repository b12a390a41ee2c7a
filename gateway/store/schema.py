"""The key store's schema, written once for both stores, SQLite and PostgreSQL, so the two cannot
drift: only the names of three column types differ between them.

Each entry of ``migrations()`` takes the schema from version i to i + 1. Append only; never edit a
released one.
"""

from __future__ import annotations

from gateway.store.base import NewerSchemaError

__all__ = ["SCHEMA_VERSION", "check_not_newer", "migrations"]


def migrations(*, real: str, big_integer: str, boolean: str) -> list[list[str]]:
    """The statements, with ``real``, ``big_integer`` and ``boolean`` as the store's names for
    those types."""
    return [
        [
            f"""CREATE TABLE users (
                id TEXT PRIMARY KEY,
                subscription TEXT NOT NULL CHECK (subscription IN ('active', 'inactive')),
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL
            )""",
            f"""CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id),
                name TEXT,
                prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                created_at {real} NOT NULL,
                expires_at {real},
                revoked_at {real},
                last_used_at {real},
                replaced_by TEXT
            )""",
            "CREATE INDEX api_keys_user_id ON api_keys (user_id)",
        ],
        [
            "ALTER TABLE api_keys ADD COLUMN rate_limits TEXT",
            f"ALTER TABLE api_keys ADD COLUMN requests {big_integer} NOT NULL DEFAULT 0",
            f"ALTER TABLE api_keys ADD COLUMN rate_limited {big_integer} NOT NULL DEFAULT 0",
            f"ALTER TABLE api_keys ADD COLUMN credits {big_integer} NOT NULL DEFAULT 0",
        ],
        [
            # Imported with a hash only: a key of an earlier system, without our checksum.
            f"ALTER TABLE api_keys ADD COLUMN legacy {boolean} NOT NULL DEFAULT FALSE",
        ],
        [
            # Rate-limit windows counted in a process's memory (no Redis), saved with the usage
            # flush so that a restart does not hand every key a fresh window.
            f"""CREATE TABLE rate_windows (
                scope TEXT NOT NULL,
                owner TEXT NOT NULL,
                spec TEXT NOT NULL,
                hits {big_integer} NOT NULL,
                ends_at {real} NOT NULL,
                PRIMARY KEY (scope, owner, spec)
            )""",
        ],
        [
            # A user's own limits over all their keys ("1000/minute;100000/day"), or NULL for
            # rate_limits.per_user.
            "ALTER TABLE users ADD COLUMN rate_limits TEXT",
        ],
        [
            # Usage per key and UTC day ('YYYY-MM-DD'), written with the lifetime counters in the
            # same transaction, so that a key's days add up to what it was counted here.
            f"""CREATE TABLE usage_daily (
                key_id TEXT NOT NULL,
                day TEXT NOT NULL,
                requests {big_integer} NOT NULL DEFAULT 0,
                rate_limited {big_integer} NOT NULL DEFAULT 0,
                credits {big_integer} NOT NULL DEFAULT 0,
                refused_credits {big_integer} NOT NULL DEFAULT 0,
                PRIMARY KEY (key_id, day)
            )""",
            "CREATE INDEX usage_daily_day ON usage_daily (day)",
        ],
        [
            # The credit wallet: each user's balance, and every change to it (credits.wallet).
            f"ALTER TABLE users ADD COLUMN credit_balance {big_integer} NOT NULL DEFAULT 0",
            # The refill period ('2026-12' for a month) last applied (credits.refill).
            "ALTER TABLE users ADD COLUMN credits_refilled TEXT",
            f"""CREATE TABLE credit_changes (
                user_id TEXT NOT NULL,
                at {real} NOT NULL,
                change {big_integer} NOT NULL,
                balance {big_integer} NOT NULL,
                reason TEXT NOT NULL
            )""",
            "CREATE INDEX credit_changes_user ON credit_changes (user_id, at)",
        ],
        [
            # When an operator last set the balance: credits spent before it are not taken off it.
            f"ALTER TABLE users ADD COLUMN credits_set_at {real}",
        ],
        [
            # The operator's notes on a key (a JSON object, as text): shown, never sent upstream.
            "ALTER TABLE api_keys ADD COLUMN metadata TEXT",
            # Every change to users and keys (store/base.py, AuditEvent); ids sort by time.
            f"""CREATE TABLE audit_events (
                id TEXT PRIMARY KEY,
                at {real} NOT NULL,
                actor TEXT NOT NULL,
                via TEXT NOT NULL,
                action TEXT NOT NULL,
                target_type TEXT NOT NULL,
                target TEXT NOT NULL,
                request_id TEXT,
                before TEXT,
                after TEXT
            )""",
            "CREATE INDEX audit_events_target ON audit_events (target, id)",
            "CREATE INDEX audit_events_at ON audit_events (at)",
        ],
        [
            # The self-service portal's one-time links (issue 16), by the SHA-256 of their token:
            # minted by the admin API or the CLI, opened by the portal listener, any process.
            f"""CREATE TABLE portal_links (
                digest TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                return_url TEXT,
                expires_at {real} NOT NULL
            )""",
        ],
    ]


SCHEMA_VERSION = len(migrations(real="", big_integer="", boolean=""))


def check_not_newer(version: int, where: str) -> None:
    """Refuse a store that a newer gateway has migrated past what this one knows."""
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"{where}: the store has schema version {version}, newer than this gateway's "
            f"{SCHEMA_VERSION}: upgrade the gateway to use it"
        )
