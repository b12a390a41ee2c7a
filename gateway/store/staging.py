"""The staging contract of ``gateway import``: the temporary tables an import fills on a store
connection, and the session each store opens for it. ``manage/transfer.py`` parses and checks
the file; each store implements the session in its own SQL dialect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["STAGED_KEY_COLUMNS", "STAGED_USER_COLUMNS", "ImportSession", "staging_tables"]

# The staging tables, column for column as the rows of parse_line, with their kinds of value.
_STAGED: dict[str, tuple[tuple[str, str], ...]] = {
    "import_users": (
        ("line", "integer"),
        ("id", "text"),
        ("subscription", "text"),
        ("created_at", "real"),
        ("rate_limits", "text"),
    ),
    "import_keys": (
        ("line", "integer"),
        ("id", "text"),
        ("user_id", "text"),
        ("key_hash", "text"),
        ("prefix", "text"),
        ("name", "text"),
        ("created_at", "real"),
        ("expires_at", "real"),
        ("revoked_at", "real"),
        ("last_used_at", "real"),
        ("replaced_by", "text"),
        ("rate_limits", "text"),
        ("requests", "big_integer"),
        ("rate_limited", "big_integer"),
        ("credits", "big_integer"),
        ("legacy", "boolean"),
        ("metadata", "text"),
    ),
}
STAGED_USER_COLUMNS = tuple(column for column, _ in _STAGED["import_users"])
STAGED_KEY_COLUMNS = tuple(column for column, _ in _STAGED["import_keys"])


def staging_tables(*, real: str, big_integer: str, boolean: str, suffix: str = "") -> list[str]:
    """The CREATE TEMP TABLE statements, with the store's names for the types (as for
    ``schema.migrations``) and ``suffix`` after each (PostgreSQL: ON COMMIT DROP)."""
    names = {"integer": "INTEGER", "text": "TEXT", "real": real, "big_integer": big_integer, "boolean": boolean}
    return [
        f"CREATE TEMP TABLE {table} ({', '.join(f'{column} {names[kind]}' for column, kind in columns)}){suffix}"
        for table, columns in _STAGED.items()
    ]


class ImportSession(Protocol):
    """Temporary tables ``import_users`` and ``import_keys`` (the STAGED_*_COLUMNS) on one store
    connection. ``begin_write`` starts the transaction that holds the store's write lock (SQLite:
    staging does not hold it, so a long import does not stall a running gateway's writes);
    anything not committed is rolled back. ``distinct`` is the dialect's null-safe inequality."""

    distinct: str

    async def stage(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None: ...

    async def begin_write(self) -> None: ...

    async def execute(self, sql: str) -> None: ...

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    async def commit(self) -> None: ...
